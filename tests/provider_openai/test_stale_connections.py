"""A pooled connection the server closed while idle costs no backoff and no warning.

llama-server closes the connection after a stream although its headers said keep-alive; the
next call on that pooled connection then meets a closed socket. The lean transport sends such
a request again at once on a new connection, and only when the server had closed the
connection before the request reached it (a reset after the server read it stays an error
for the retry policy: see test_async_and_streaming's reset faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import select
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from adversarial import AdversarialServer, Behaviour, _read_request, completion_body, sse_event
from moodlemate.ai import GPT, APIConnectionError, RetryPolicy
from support import TEST_KEY

CALLS = 20


class Closer:
    """Answers once per connection with keep-alive headers, then closes the connection:
    right away (``when="after"``), or only once the client sends its next request there
    (``"next"``: the close then always crosses a request, the case the rule is for)."""

    def __init__(self, when: str) -> None:
        self.when = when
        self.answered = 0
        self.crossed = 0  # connections closed with a request of the client's in flight
        self._lock = threading.Lock()

    def behaviour(self, *, stream: bool = False) -> Behaviour:
        def answer(sock: socket.socket) -> None:
            if stream:
                body = sse_event("hi") + _last_event() + b"data: [DONE]\n\n"
                kind = "text/event-stream"
            else:
                body, kind = completion_body("ok"), "application/json"
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
            with self._lock:
                self.answered += 1
            if self.when == "next":
                readable, _, _ = select.select([sock], [], [], 5.0)
                if readable:
                    with self._lock:
                        self.crossed += 1
            # returning closes the connection (FIN; an unread request then draws an RST)

        return answer


def _last_event() -> bytes:
    chunk = {
        "id": "chatcmpl-adv",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _gpt(server: AdversarialServer) -> GPT:
    # A policy whose waits would show: a second attempt would wait at least half a second.
    policy = RetryPolicy(attempts=3, wait_initial=0.5, wait_jitter=0)
    return GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=policy, transport="lean")


@pytest.mark.parametrize("when", ["next", "after"])
def test_twenty_calls_on_a_server_that_closes_each_connection_wait_for_nothing(
    when: str, caplog: pytest.LogCaptureFixture
) -> None:
    closer = Closer(when)
    caplog.set_level(logging.DEBUG)
    with AdversarialServer({"/chat/completions": closer.behaviour()}) as server:
        gpt = _gpt(server)
        completions = [gpt.complete("gpt-4o-mini", "", f"call {n}") for n in range(CALLS)]
    assert [c.text for c in completions] == ["ok"] * CALLS
    assert [c.attempts for c in completions] == [1] * CALLS  # no retry of the policy's
    assert closer.answered == CALLS
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []  # neither "attempt failed" nor stamina's retry_scheduled
    if when == "next":  # every call after the first met a connection closed under it
        assert closer.crossed >= CALLS - 1
    assert len(server.hits) == CALLS  # each connection served one request


def test_the_same_on_one_event_loop(caplog: pytest.LogCaptureFixture) -> None:
    closer = Closer("next")
    caplog.set_level(logging.DEBUG)

    async def calls(gpt: GPT) -> list[str]:
        return [await gpt.achat_completion("gpt-4o-mini", "", f"call {n}") for n in range(CALLS)]

    with AdversarialServer({"/chat/completions": closer.behaviour()}) as server:
        texts = asyncio.run(calls(_gpt(server)))
    assert texts == ["ok"] * CALLS
    assert closer.crossed >= CALLS - 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("when", ["next", "after"])
def test_eight_threads_and_sixty_four_tasks_on_a_closing_server(
    when: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Many callers at once on connections the server closes between reply and next request:
    every call answered at its first attempt, each request reaching the server once (its
    count matches ours), no warning and no backoff."""
    closer = Closer(when)
    caplog.set_level(logging.DEBUG)

    async def tasks(gpt: GPT) -> list[int]:
        done = await asyncio.gather(
            *(gpt.acomplete("gpt-4o-mini", "", f"task {n}") for n in range(64))
        )
        return [c.attempts for c in done]

    with AdversarialServer({"/chat/completions": closer.behaviour()}) as server:
        gpt = _gpt(server)
        with ThreadPoolExecutor(8) as pool:
            threaded = list(
                pool.map(lambda n: gpt.complete("gpt-4o-mini", "", f"call {n}").attempts, range(80))
            )
        tasked = asyncio.run(tasks(gpt)) + asyncio.run(tasks(gpt))
    assert threaded == [1] * 80
    assert tasked == [1] * 128
    assert closer.answered == 80 + 128
    assert len(server.hits) == 80 + 128  # no request lost, none sent twice
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_request_sent_again_goes_on_a_new_connection(
    style: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Five idle connections, each of which the server closes when the next request comes:
    the call meets one of them, then is sent again on a new connection, not on the next idle
    one (four closed ones in a row would use up the resends and fail the attempt)."""
    together = threading.Barrier(5, timeout=5)
    opened = itertools.count()

    def serve(sock: socket.socket) -> None:
        if next(opened) < 5:  # five connections open at once, so five go back to the pool
            with contextlib.suppress(threading.BrokenBarrierError):
                together.wait()
        Closer("next").behaviour()(sock)

    caplog.set_level(logging.DEBUG)
    with AdversarialServer({"/chat/completions": serve}) as server:
        gpt = _gpt(server)
        if style == "sync":
            with ThreadPoolExecutor(5) as pool:
                list(pool.map(lambda n: gpt.complete("gpt-4o-mini", "", f"{n}"), range(5)))
            completion = gpt.complete("gpt-4o-mini", "", "after")
        else:

            async def calls() -> Any:
                await asyncio.gather(*(gpt.acomplete("gpt-4o-mini", "", f"{n}") for n in range(5)))
                return await gpt.acomplete("gpt-4o-mini", "", "after")

            completion = asyncio.run(calls())
    assert completion.attempts == 1
    assert len(server.hits) == 6
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_call_right_after_a_stream_on_a_closing_server(caplog: pytest.LogCaptureFixture) -> None:
    streams = Closer("next")
    caplog.set_level(logging.DEBUG)
    with AdversarialServer({"/chat/completions": streams.behaviour(stream=True)}) as server:
        gpt = _gpt(server)
        texts = []
        for _ in range(CALLS // 2):
            with gpt.stream("gpt-4o-mini", "", "stream") as stream:
                texts.append("".join(stream))
    assert texts == ["hi"] * (CALLS // 2)
    assert streams.crossed >= CALLS // 2 - 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_reset_after_the_server_read_the_request_is_not_sent_again_silently() -> None:
    """The counterpart: the server read the request and reset the connection (no FIN
    first). That is a failed attempt the policy sees (and may retry, with its wait)."""
    hits = {"n": 0}

    def answer_then_reset(sock: socket.socket) -> None:
        hits["n"] += 1
        if hits["n"] == 1:
            body = completion_body("first")
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            sock.sendall(head + body)
            _read_request(sock)  # the server reads the whole second request...
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # ...and resets the connection without answering

    with AdversarialServer({"/chat/completions": answer_then_reset}) as server:
        gpt = GPT(
            "openai",
            endpoint=server.url,
            api_key=TEST_KEY,
            retry=RetryPolicy(attempts=1),
            transport="lean",
        )
        assert gpt.chat_completion("gpt-4o-mini", "", "one") == "first"
        with pytest.raises(APIConnectionError) as caught:
            gpt.chat_completion("gpt-4o-mini", "", "two")
    assert caught.value.cause_kind == "closed"
    assert hits["n"] == 1  # one connection: the second request was not sent elsewhere


def test_bytes_past_a_reply_retire_the_connection() -> None:
    """A lying server sends two replies for one request: the second must not be taken as
    the answer to the next request. (The lean transport only: httpx under the SDK keeps the
    extra reply and hands it to the next request, as httpcore did here before.)"""
    connections = {"n": 0}

    def two_replies(sock: socket.socket) -> None:
        connections["n"] += 1
        replies = b""
        for text in (f"answer on connection {connections['n']}", "stale"):
            body = completion_body(text)
            replies += f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        sock.sendall(replies)
        try:
            _read_request(sock)  # were the connection reused, the next request lands here
        except OSError:
            return
        body = completion_body("reused")
        sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    with AdversarialServer({"/chat/completions": two_replies}) as server:
        gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, transport="lean")
        assert gpt.chat_completion("gpt-4o-mini", "", "a") == "answer on connection 1"
        assert gpt.chat_completion("gpt-4o-mini", "", "b") == "answer on connection 2"
    assert connections["n"] == 2
