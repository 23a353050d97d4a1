"""HTTP/1.1 as servers really speak it, and as hostile ones lie in it, on the direct route.

The lean transport reads replies with llhttp (httptools) on a pool of its own; these tests
hold it to what h11 under httpcore did before, and the openai SDK does: interim replies
skipped, a connection reused only when the server allowed it and nothing was left over,
close-delimited bodies read to the end, malformed framing refused, headers bounded.
"""

from __future__ import annotations

import socket
import threading
import tracemalloc

import pytest
from adversarial import AdversarialServer, Behaviour, _read_request, completion_body
from moodlemate.ai import GPT, APIConnectionError, RetryPolicy, ValidationError
from support import TEST_KEY

pytestmark = pytest.mark.usefixtures("each_transport")


def _gpt(url: str, attempts: int = 1) -> GPT:
    return GPT(
        "openai",
        endpoint=url,
        api_key=TEST_KEY,
        retry=RetryPolicy(attempts=attempts, attempt_timeout=5, deadline=10),
    )


def _reply(text: str, *extra: str, version: str = "1.1") -> bytes:
    body = completion_body(text)
    lines = [f"HTTP/{version} 200 OK", "Content-Type: application/json"]
    lines += [*extra, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Replies:
    """Answers each request on a connection with the next of ``script(n)`` (n: the request's
    number on that connection) while the client keeps sending; counts connections."""

    def __init__(self, script: object) -> None:
        self.script = script
        self.connections = 0
        self.requests = 0
        self._lock = threading.Lock()

    def behaviour(self) -> Behaviour:
        def serve(sock: socket.socket) -> None:
            with self._lock:
                self.connections += 1
            n = 0
            while True:
                with self._lock:
                    self.requests += 1
                reply = self.script(n)  # type: ignore[operator]
                if reply is None:
                    return
                sock.sendall(reply)
                n += 1
                try:
                    _read_request(sock)
                except OSError:
                    return

        return serve


def test_interim_replies_are_skipped() -> None:
    """100 Continue and 103 Early Hints before the reply: the reply is the answer."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    replies = Replies(lambda n: interim + _reply(f"after interim {n}"))
    with AdversarialServer({"/chat/completions": replies.behaviour()}) as server:
        gpt = _gpt(server.url)
        assert gpt.chat_completion("gpt-4o-mini", "", "a") == "after interim 0"
        assert gpt.chat_completion("gpt-4o-mini", "", "b") == "after interim 1"
    assert replies.connections == 1


def test_a_keep_alive_connection_is_reused() -> None:
    replies = Replies(lambda n: _reply(f"reply {n}"))
    with AdversarialServer({"/chat/completions": replies.behaviour()}) as server:
        gpt = _gpt(server.url)
        answers = [gpt.chat_completion("gpt-4o-mini", "", str(i)) for i in range(5)]
    assert answers == [f"reply {i}" for i in range(5)]
    assert replies.connections == 1


@pytest.mark.parametrize(
    ("extra", "version"),
    [(("Connection: close",), "1.1"), ((), "1.0"), (("Connection: keep-alive",), "1.0")],
    ids=["connection-close", "http-1.0", "http-1.0-keep-alive"],
)
def test_a_connection_the_server_did_not_keep_is_not_reused(
    extra: tuple[str, ...], version: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection: close, and HTTP/1.0 (keep-alive on request only): a new connection per
    call, and no failed try on the old one (no warning, no retry needed)."""
    replies = Replies(lambda n: _reply("fresh", *extra, version=version) if n == 0 else None)
    with AdversarialServer({"/chat/completions": replies.behaviour()}) as server:
        gpt = _gpt(server.url)
        assert [gpt.chat_completion("gpt-4o-mini", "", str(i)) for i in range(3)] == ["fresh"] * 3
    assert replies.connections == 3
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []


def test_a_body_delimited_by_the_close_is_read_to_the_end() -> None:
    body = completion_body("until close " + "z" * 100_000)

    def serve(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        for start in range(0, len(body), 7000):
            sock.sendall(body[start : start + 7000])
        sock.shutdown(socket.SHUT_WR)

    with AdversarialServer({"/chat/completions": serve}) as server:
        gpt = _gpt(server.url)
        assert gpt.chat_completion("gpt-4o-mini", "", "a") == "until close " + "z" * 100_000
        assert gpt.chat_completion("gpt-4o-mini", "", "b").startswith("until close")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n",
    ],
    ids=["two-lengths", "bad-chunk-size", "negative-length", "not-http", "bad-header"],
)
def test_malformed_framing_is_a_connection_error(raw: bytes) -> None:
    def serve(sock: socket.socket) -> None:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)

    with (
        AdversarialServer({"/chat/completions": serve}) as server,
        pytest.raises(APIConnectionError) as caught,
    ):
        _gpt(server.url).chat_completion("gpt-4o-mini", "", "a")
    assert caught.value.cause_kind == "closed"
    assert TEST_KEY not in str(caught.value)


def test_a_reply_cut_mid_body_is_an_error_not_a_short_answer() -> None:
    body = completion_body("cut")

    def serve(sock: socket.socket) -> None:
        sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        sock.sendall(body[:20])
        sock.shutdown(socket.SHUT_WR)

    with (
        AdversarialServer({"/chat/completions": serve}) as server,
        pytest.raises(APIConnectionError) as caught,
    ):
        _gpt(server.url).chat_completion("gpt-4o-mini", "", "a")
    assert caught.value.cause_kind == "closed"


def test_endless_headers_are_cut_with_bounded_memory() -> None:
    """A server that sends header lines forever: an error long before memory grows."""
    stop = threading.Event()

    def serve(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Flood: " + b"f" * 1000 + b"\r\n"
        try:
            while not stop.is_set():
                sock.sendall(line * 64)
        except OSError:
            return

    with AdversarialServer({"/chat/completions": serve}) as server:
        tracemalloc.start()
        try:
            with pytest.raises(APIConnectionError) as caught:
                _gpt(server.url).chat_completion("gpt-4o-mini", "", "a")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            stop.set()
    assert caught.value.cause_kind == "closed"
    assert peak < 8 * 1024 * 1024


def test_a_header_name_that_is_not_a_token_is_refused_before_sending() -> None:
    replies = Replies(lambda n: _reply("sent"))
    with (
        AdversarialServer({"/chat/completions": replies.behaviour()}) as server,
        pytest.raises(ValidationError, match="header name"),
    ):
        GPT(endpoint=server.url, api_key=TEST_KEY, headers={"X Bad: y": "1"})
    assert replies.requests == 0
