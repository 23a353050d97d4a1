"""Replies at the edges of HTTP/1.1 framing, on both transports: a switch of protocols, bytes
that arrive in one read with the reply they follow, and the connections such replies leave.

What a server sends after a whole reply must not decide whether that reply is read: TCP may
deliver the two in one read or in two, and the answer cannot depend on which.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import socketserver
import subprocess
import sys
import threading
import time
import warnings
import zlib
from typing import Any

import pytest
from adversarial import AdversarialServer, completion_body
from moodlemate.ai import (
    GPT,
    APIConnectionError,
    MalformedResponseError,
    ProviderError,
    ResponseLimits,
    ResponseTooLargeError,
    RetryPolicy,
)
from support import TEST_KEY
from test_http1_wire import Replies


def _gpt(url: str, **options: Any) -> GPT:
    return GPT(
        "openai",
        endpoint=url,
        api_key=TEST_KEY,
        retry=RetryPolicy(attempts=1, attempt_timeout=5, deadline=10),
        **options,
    )


def _complete(gpt: GPT, style: str) -> str:
    if style == "sync":
        return gpt.chat_completion("gpt-4o-mini", "", "Hi")
    return asyncio.run(gpt.achat_completion("gpt-4o-mini", "", "Hi"))


def _reply(text: str) -> bytes:
    body = completion_body(text)
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return (head + "\r\n\r\n").encode() + body


@pytest.mark.usefixtures("each_transport")
@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_switch_of_protocols_is_a_connection_error(style: str) -> None:
    """A 101 nobody asked for: a typed connection error, not the parser's own exception."""

    def serve(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
        sock.sendall(b"Connection: Upgrade\r\n\r\n\x81\x05hello")
        sock.shutdown(socket.SHUT_WR)

    with (
        AdversarialServer({"/chat/completions": serve}) as server,
        pytest.raises(APIConnectionError) as caught,
    ):
        _complete(_gpt(server.url), style)
    assert caught.value.cause_kind == "closed"
    assert TEST_KEY not in str(caught.value)


@pytest.mark.usefixtures("each_transport")
@pytest.mark.parametrize("style", ["sync", "async"])
@pytest.mark.parametrize(
    "after", [b"\x00garbage\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n"]
)
def test_bytes_in_the_same_read_after_a_whole_reply_leave_the_reply_standing(
    after: bytes, style: str, each_transport: str
) -> None:
    """The reply and what follows it in one segment: the reply is the answer, and the
    connection is not used again (the lean transport opens a new one for the next call)."""
    connections = 0

    def serve(sock: socket.socket) -> None:
        nonlocal connections
        connections += 1
        sock.sendall(_reply(f"answer {connections}") + after)
        sock.recv(65536)  # the next request, if the client reuses this connection

    with AdversarialServer({"/chat/completions": serve}) as server:
        gpt = _gpt(server.url)
        assert _complete(gpt, style) == "answer 1"
        if each_transport == "lean":
            assert _complete(gpt, style) == "answer 2"
            assert connections == 2


FIRST_CALLS = r"""
import gc, sys, threading, warnings
from moodlemate.ai import GPT, RetryPolicy

warnings.simplefilter("always", ResourceWarning)
gpt = GPT("openai", endpoint=sys.argv[1], api_key=sys.argv[2], retry=RetryPolicy(attempts=1))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", ResourceWarning)
    for _ in range(2):
        barrier = threading.Barrier(8)
        def call():
            barrier.wait()
            gpt.chat_completion("gpt-4o-mini", "", "Hi")
        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    gc.collect()
gpt.provider.close()
print(sum(w.category is ResourceWarning for w in caught))
"""


@pytest.mark.usefixtures("each_transport")
def test_threads_making_the_first_call_at_once_share_one_pool() -> None:
    """Eight threads make a process's first calls together: one transport and one pool
    serve them, so their eight connections are all kept and serve the next eight calls (no
    pool of a losing thread dropped with its sockets open, to be closed by the GC with
    warnings). In a process of its own: the race is widest on the very first call."""
    replies = Replies(lambda n: _reply(f"reply {n}"))
    with AdversarialServer({"/chat/completions": replies.behaviour()}) as server:
        done = subprocess.run(
            [sys.executable, "-c", FIRST_CALLS, server.url, TEST_KEY],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0"], done.stderr[-2000:]
    assert replies.requests == 16
    assert replies.connections <= 8


# The lean transport's own bounds (the SDK's stack reads such bodies its own way).


@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_declared_length_over_the_body_cap_fails_before_the_body_is_waited_for(
    style: str,
) -> None:
    """100 MB declared against a 1 MiB cap, then nothing: refused at once as too large, not
    held to the attempt's timeout (and then retried as a timeout would be)."""

    def serve(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n{")
        sock.recv(1)  # until the client hangs up

    limits = ResponseLimits(max_body_bytes=1 << 20)
    with AdversarialServer({"/chat/completions": serve}) as server:
        gpt = GPT(
            "openai",
            endpoint=server.url,
            api_key=TEST_KEY,
            transport="lean",
            limits=limits,
            retry=RetryPolicy(attempts=3, attempt_timeout=2, wait_initial=0.5, wait_jitter=0),
        )
        started = time.monotonic()
        with pytest.raises(ResponseTooLargeError):
            _complete(gpt, style)
        assert time.monotonic() - started < 1.5
    assert len(server.hits) == 1


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize("style", ["sync", "async"])
@pytest.mark.parametrize("cut", ["mid-stream", "trailer"])
def test_a_compressed_body_cut_short_is_refused_not_read_short(cut: str, style: str) -> None:
    """gzip framed whole by HTTP but cut inside: mid-stream, or only its trailer (CRC and
    length) missing, where the JSON inside happens to be whole. Neither is an answer."""
    packed = _gzip(completion_body("whole?"))
    body = packed[: len(packed) // 2] if cut == "mid-stream" else packed[:-8]

    def serve(sock: socket.socket) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}"
        sock.sendall((head + "\r\nConnection: close\r\n\r\n").encode() + body)

    with AdversarialServer({"/chat/completions": serve}) as server:
        gpt = _gpt(server.url, transport="lean")
        with pytest.raises(MalformedResponseError, match="compressed body ended"):
            _complete(gpt, style)


@pytest.mark.usefixtures("each_transport")
@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_whole_compressed_body_still_reads(style: str) -> None:
    body = _gzip(completion_body("inflated"))

    def serve(sock: socket.socket) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}"
        sock.sendall((head + "\r\nConnection: close\r\n\r\n").encode() + body)

    with AdversarialServer({"/chat/completions": serve}) as server:
        assert _complete(_gpt(server.url), style) == "inflated"


@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_reply_refused_for_its_encoding_gives_its_connection_back(style: str) -> None:
    """A whole reply in an encoding not asked for (br) is refused before its body is read:
    its connection goes back to the pool (and serves the next calls), rather than holding
    one of the pool's slots for good and leaving its socket to the collector. Were slots so
    lost, a thousand such replies would leave the pool with none."""
    replies = Replies(lambda n: _reply_in(f"reply {n}", "br"))
    with AdversarialServer({"/chat/completions": replies.behaviour()}) as server:
        gpt = _gpt(server.url, transport="lean")

        async def three() -> None:
            for _ in range(3):
                with pytest.raises(MalformedResponseError, match="'br'"):
                    await gpt.achat_completion("gpt-4o-mini", "", "Hi")

        if style == "sync":
            for _ in range(3):
                with pytest.raises(MalformedResponseError, match="'br'"):
                    gpt.chat_completion("gpt-4o-mini", "", "Hi")
        else:
            asyncio.run(three())
    assert replies.requests >= 3
    assert replies.connections == 1


def _reply_in(text: str, encoding: str) -> bytes:
    body = completion_body(text)
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nContent-Length: {len(body)}"
    return (head + "\r\n\r\n").encode() + body


def test_idle_connections_close_with_their_event_loop() -> None:
    """``asyncio.run`` twice on one client, without ``aclose``: the first loop's idle
    connections are closed as it ends (while it still can), not found open by the collector
    once it has closed, and the second loop opens its own."""
    replies = Replies(lambda n: _reply(f"reply {n}"))
    with AdversarialServer({"/chat/completions": replies.behaviour()}) as server:
        gpt = _gpt(server.url, transport="lean")

        async def calls() -> list[str]:
            first = await gpt.achat_completion("gpt-4o-mini", "", "Hi")
            return [first, await gpt.achat_completion("gpt-4o-mini", "", "Hi")]

        gc.collect()  # what earlier tests left for the collector is not this test's
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            assert asyncio.run(calls()) == ["reply 0", "reply 1"]
            assert asyncio.run(calls()) == ["reply 0", "reply 1"]
            gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert replies.connections == 2


@pytest.mark.parametrize("style", ["sync", "async"])
def test_an_answer_sent_before_the_request_was_all_read_is_the_error(style: str) -> None:
    """A server that refuses a body by its head (413, as nginx's client_max_body_size does)
    answers and closes while a 4 MB request is still being written: the caller gets that
    answer (a status error, not retried as a network failure), as httpcore gave it."""
    error = b'{"error": {"message": "request entity too large", "type": "too_large"}}'
    head = f"HTTP/1.1 413 Payload Too Large\r\nContent-Length: {len(error)}\r\n\r\n"
    requests = []

    class Refuser(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data = b""
            while b"\r\n\r\n" not in data:
                data += self.request.recv(65536)
            requests.append(data)
            self.request.sendall(head.encode() + error)  # then close, the body unread

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Refuser)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    try:
        gpt = _gpt(f"http://127.0.0.1:{server.server_address[1]}/v1", transport="lean")
        with pytest.raises(ProviderError, match="entity too large") as caught:
            _complete_long(gpt, style, "x " * 2_000_000)
    finally:
        server.shutdown()
        server.server_close()
    assert caught.value.status_code == 413
    assert len(requests) == 1


def _complete_long(gpt: GPT, style: str, prompt: str) -> str:
    if style == "sync":
        return gpt.chat_completion("local-model", "", prompt)
    return asyncio.run(gpt.achat_completion("local-model", "", prompt))


@pytest.mark.parametrize("style", ["sync", "async"])
def test_the_head_bound_holds_to_the_byte_not_to_the_read(style: str) -> None:
    """120 KiB of status line and headers sent at once: over the 100 KiB bound, refused
    however the reads cut it (it was let through when its end came in the read that
    crossed the bound)."""
    body = completion_body("big head")
    lines = [f"X-Pad-{n}: {'p' * 1000}" for n in range(120)]
    head = "\r\n".join(["HTTP/1.1 200 OK", *lines, f"Content-Length: {len(body)}"])

    def serve(sock: socket.socket) -> None:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)

    with (
        AdversarialServer({"/chat/completions": serve}) as server,
        pytest.raises(APIConnectionError, match="exceed") as caught,
    ):
        _complete(_gpt(server.url, transport="lean"), style)
    assert caught.value.cause_kind == "closed"


@pytest.mark.usefixtures("each_transport")
@pytest.mark.parametrize("style", ["sync", "async"])
def test_lines_ended_by_a_bare_lf_are_read_as_h11_read_them(style: str) -> None:
    """A hand-made server that ends its status line and headers with LF alone: h11 (under
    httpcore and the SDK) read such replies, so the lean transport does too."""
    body = completion_body("bare lf")
    head = f"HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: {len(body)}\n\n"

    def serve(sock: socket.socket) -> None:
        sock.sendall(head.encode() + body)

    with AdversarialServer({"/chat/completions": serve}) as server:
        assert _complete(_gpt(server.url), style) == "bare lf"


@pytest.mark.parametrize(
    "lengths",
    [["{n}", "{n}"], ["{n}, {n}"], ["{n}", "{n}, {n}"]],
    ids=["twice", "comma-list", "both"],
)
@pytest.mark.parametrize("split", [False, True], ids=["one-read", "head-in-pieces"])
@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_content_length_repeated_with_the_same_value_is_read(
    lengths: list[str], split: bool, style: str
) -> None:
    """RFC 9110 8.6 lets a sender repeat one Content-Length (h11 read it; llhttp refuses
    it, so the head is read again with the length once), in one read or dripped."""
    body = completion_body("twice")
    given = "".join(f"Content-Length: {v.format(n=len(body))}\r\n" for v in lengths)
    head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + given + "\r\n").encode()

    def serve(sock: socket.socket) -> None:
        if split:
            for start in range(0, len(head), 7):
                sock.sendall(head[start : start + 7])
                time.sleep(0.002)
            sock.sendall(body)
        else:
            sock.sendall(head + body)

    with AdversarialServer({"/chat/completions": serve}) as server:
        assert _complete(_gpt(server.url, transport="lean"), style) == "twice"


@pytest.mark.parametrize("values", [("5", "6"), ("5, 6",), ("5", "x")], ids=["two", "list", "bad"])
def test_content_lengths_that_disagree_stay_an_error(values: tuple[str, ...]) -> None:
    given = "".join(f"Content-Length: {v}\r\n" for v in values)
    raw = f"HTTP/1.1 200 OK\r\n{given}\r\nhello!".encode()

    def serve(sock: socket.socket) -> None:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)

    with (
        AdversarialServer({"/chat/completions": serve}) as server,
        pytest.raises(APIConnectionError) as caught,
    ):
        _complete(_gpt(server.url, transport="lean"), "sync")
    assert caught.value.cause_kind == "closed"
