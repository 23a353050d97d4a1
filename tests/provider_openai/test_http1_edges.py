"""Replies at the edges of HTTP/1.1 framing, on both transports: a switch of protocols, bytes
that arrive in one read with the reply they follow, and the connections such replies leave.

What a server sends after a whole reply must not decide whether that reply is read: TCP may
deliver the two in one read or in two, and the answer cannot depend on which.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest
from adversarial import AdversarialServer, completion_body
from moodlemate.ai import GPT, APIConnectionError, RetryPolicy
from support import TEST_KEY
from test_http1_wire import Replies

pytestmark = pytest.mark.usefixtures("each_transport")


def _gpt(url: str) -> GPT:
    return GPT(
        "openai",
        endpoint=url,
        api_key=TEST_KEY,
        retry=RetryPolicy(attempts=1, attempt_timeout=5, deadline=10),
    )


def _complete(gpt: GPT, style: str) -> str:
    if style == "sync":
        return gpt.chat_completion("gpt-4o-mini", "", "Hi")
    return asyncio.run(gpt.achat_completion("gpt-4o-mini", "", "Hi"))


def _reply(text: str) -> bytes:
    body = completion_body(text)
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return (head + "\r\n\r\n").encode() + body


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
