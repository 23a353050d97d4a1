"""Async calls and streaming, end to end over loopback HTTP."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import TypeVar

import pytest
from moodlemate.ai import (
    GPT,
    BadRequestError,
    ChatRequest,
    Completion,
    Connection,
    Provider,
    ServerError,
    StreamInterruptedError,
    UnsupportedFeatureError,
    ValidationError,
)
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

T = TypeVar("T")


def _run_async(gpt: GPT, coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine in a fresh loop and close the loop's pooled clients before it ends."""

    async def main() -> T:
        try:
            return await coro_factory()
        finally:
            await gpt.aclose()

    return asyncio.run(main())


# -- async ----------------------------------------------------------------------------------


def test_500_concurrent_async_calls_all_succeed_with_exact_ledger(
    gpt: GPT, server: LoopbackServer
) -> None:
    # attempt_timeout is wall-clock time from sending to the last byte: 500 calls queued on a
    # busy 2-core machine can take longer than FAST_RETRY's 5 s, and would then be retried.
    gpt.retry = replace(gpt.retry, attempt_timeout=60.0, deadline=120.0)
    server.responder = lambda body: Reply(
        text=f"re {body['messages'][-1]['content']}", prompt_tokens=10, completion_tokens=2
    )

    async def calls() -> list[str]:
        return await asyncio.gather(
            *(gpt.achat_completion("gpt-4o-mini", "Be brief.", f"q{i}") for i in range(500))
        )

    texts = _run_async(gpt, calls)
    assert texts == [f"re q{i}" for i in range(500)]
    assert gpt.ledger.calls == 500
    assert gpt.ledger.usage.prompt_tokens == 5000
    assert gpt.ledger.usage.completion_tokens == 1000
    # gpt-4o-mini: $0.15 in / $0.60 out per million tokens, exactly.
    assert gpt.ledger.cost == Decimal("0.15") * 5000 / 10**6 + Decimal("0.60") * 1000 / 10**6
    assert len(server.chat_requests) == 500


def test_async_calls_share_the_retry_policy(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Fault.status(503), Fault.status(429, retry_after=0), Reply(text="ok"))

    async def call() -> Completion:
        return await gpt.acomplete("gpt-4o-mini", "", "hi")

    result = _run_async(gpt, call)
    assert result.text == "ok"
    assert result.attempts == 3
    assert len(server.chat_requests) == 3
    assert gpt.ledger.calls == 1


def test_async_errors_and_validation_match_sync(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(*[Fault.status(500)] * FAST_RETRY.attempts)
    with pytest.raises(ServerError) as info:
        _run_async(gpt, lambda: gpt.achat_completion("gpt-4o-mini", "", "hi"))
    assert info.value.attempts == FAST_RETRY.attempts
    with pytest.raises(ValidationError):
        _run_async(gpt, lambda: gpt.achat_completion("gpt-4o-mini", "", "hi", temperature=5))
    assert len(server.chat_requests) == FAST_RETRY.attempts


def test_async_token_count_matches_sync(gpt: GPT) -> None:
    text = "How many tokens is this?"
    assert _run_async(gpt, lambda: gpt.acount_tokens(text)) == gpt.count_tokens(text)


def test_async_clients_are_pooled_per_event_loop(gpt: GPT, server: LoopbackServer) -> None:
    # A client bound to a finished loop must not be reused: the second run works.
    for _ in range(2):
        assert asyncio.run(gpt.achat_completion("gpt-4o-mini", "", "x")) == "Echo: x"
    assert _run_async(gpt, lambda: gpt.achat_completion("gpt-4o-mini", "", "y")) == "Echo: y"


def test_a_new_event_loop_drops_the_old_loops_clients_quietly(
    gpt: GPT, caplog: pytest.LogCaptureFixture
) -> None:
    # Closing a dropped client on the new loop fails ('Event loop is closed'), and asyncio
    # logs that as an unretrieved task exception: dropping must not start such a close.
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for prompt in ("one", "two", "three"):
            assert asyncio.run(gpt.achat_completion("gpt-4o-mini", "", prompt)) == f"Echo: {prompt}"
            gc.collect()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


# -- streaming ------------------------------------------------------------------------------


def test_stream_yields_deltas_in_order_and_records_usage(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Reply(chunks=["Once", " upon", " a", " time."], prompt_tokens=7))
    with gpt.stream("gpt-4o-mini", "Tell a story.", "Go") as stream:
        deltas = list(stream)
    assert deltas == ["Once", " upon", " a", " time."]
    [request] = server.chat_requests
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    result = stream.completion
    assert result is not None
    assert result.text == "Once upon a time." == stream.text
    assert result.usage.prompt_tokens == 7
    assert result.usage.completion_tokens == 4
    assert result.cost == (Decimal("0.15") * 7 + Decimal("0.60") * 4) / 10**6
    assert gpt.last_result == result
    assert gpt.ledger.calls == 1
    assert gpt.ledger.cost == result.cost


def test_stream_sends_nothing_until_iterated(gpt: GPT, server: LoopbackServer) -> None:
    stream = gpt.stream("gpt-4o-mini", "", "hi")
    assert server.chat_requests == []
    assert stream.completion is None
    assert "".join(stream) == "Echo: hi"


def test_stream_validates_before_sending(gpt: GPT, server: LoopbackServer) -> None:
    with pytest.raises(ValidationError):
        gpt.stream("gpt-4o-mini", "", "hi", max_tokens=0)
    assert server.requests == []


def test_failure_before_the_first_delta_is_retried(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(
        Fault.status(503), Fault.reset(), Fault.malformed(), Reply(chunks=["fine", " now"])
    )
    stream = gpt.stream("gpt-4o-mini", "", "hi")
    assert list(stream) == ["fine", " now"]
    assert len(server.chat_requests) == 4
    assert stream.completion is not None
    assert stream.completion.attempts == 4
    assert gpt.ledger.calls == 1


def test_stream_cut_before_any_text_is_retried(gpt: GPT, server: LoopbackServer) -> None:
    # One event (the role chunk, no text) and then a reset: nothing reached the caller.
    server.enqueue(Fault.stream_break(after=1), Reply(chunks=["whole"]))
    assert list(gpt.stream("gpt-4o-mini", "", "hi")) == ["whole"]
    assert len(server.chat_requests) == 2


def test_failure_after_the_first_delta_raises_without_duplicated_text(
    gpt: GPT, server: LoopbackServer
) -> None:
    # Role chunk + two text chunks, then the connection is reset.
    server.enqueue(Fault.stream_break(after=3), Reply(text="never sent"))
    received: list[str] = []
    stream = gpt.stream("gpt-4o-mini", "", "one two three four five six seven eight")

    def consume() -> None:
        for delta in stream:
            received.append(delta)

    with pytest.raises(StreamInterruptedError) as info:
        consume()
    assert received == ["Echo: one two ", "three four five "]
    assert info.value.partial_text == "".join(received) == stream.text
    assert info.value.retryable is False
    assert len(server.chat_requests) == 1  # not retried
    assert server.pending == 1
    assert stream.completion is None
    assert gpt.ledger.calls == 0


def test_error_event_before_text_is_retried(gpt: GPT, server: LoopbackServer) -> None:
    # A 200 stream whose second event is {"error": {...}} (OpenRouter does this).
    server.enqueue(Fault.error_in_200(502), Reply(chunks=["ok"]))
    assert list(gpt.stream("gpt-4o-mini", "", "hi")) == ["ok"]
    assert len(server.chat_requests) == 2
    server.enqueue(Fault.error_in_200(400, "bad request"))
    with pytest.raises(BadRequestError, match="bad request"):
        list(gpt.stream("gpt-4o-mini", "", "hi"))
    assert len(server.chat_requests) == 3


def test_stream_rejected_by_the_model_falls_back_to_one_delta(
    gpt: GPT, server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.reject_stream_models.add("o1")
    server.enqueue(Reply(text="thought hard", completion_tokens=50, reasoning_tokens=40))
    with caplog.at_level("WARNING", logger="moodlemate.ai"):
        stream = gpt.stream("o1", "Be brief.", "Why?")
        assert list(stream) == ["thought hard"]
        assert list(gpt.stream("o1", "Be brief.", "Again?")) == ["Echo: Again?"]
    bodies = [r.body for r in server.chat_requests]
    assert [b.get("stream") for b in bodies] == [True, None, None]  # refused once, remembered
    assert stream.completion is not None
    assert stream.completion.usage.reasoning_tokens == 40
    assert gpt.ledger.calls == 2
    refusals = [r for r in caplog.records if "refuses to stream" in r.getMessage()]
    assert len(refusals) == 1


def test_sync_streams_from_8_threads(gpt: GPT, server: LoopbackServer) -> None:
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                with gpt.stream("gpt-4o-mini", "", f"thread {n} call {i} a b c d e") as s:
                    results[n * 10 + i] = list(s)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(results) == 40
    for key, deltas in results.items():
        assert "".join(deltas) == f"Echo: thread {key // 10} call {key % 10} a b c d e"
        assert len(deltas) > 1
    assert gpt.ledger.calls == 40


def test_closing_a_stream_early_releases_it(gpt: GPT, server: LoopbackServer) -> None:
    with gpt.stream("gpt-4o-mini", "", "one two three four five six seven eight") as stream:
        first = next(stream)
    assert first == "Echo: one two "
    assert stream.completion is None
    assert gpt.chat_completion("gpt-4o-mini", "", "after") == "Echo: after"


# -- async streaming ------------------------------------------------------------------------


def test_async_stream_deltas_usage_and_retry(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Fault.status(503), Reply(chunks=["a", "b", "c"], prompt_tokens=3))

    async def consume() -> tuple[list[str], Completion | None]:
        async with gpt.astream("gpt-4o-mini", "", "hi") as stream:
            deltas = [d async for d in stream]
        return deltas, stream.completion

    deltas, result = _run_async(gpt, consume)
    assert deltas == ["a", "b", "c"]
    assert result is not None
    assert result.usage.prompt_tokens == 3
    assert result.attempts == 2
    assert gpt.ledger.calls == 1


def test_async_stream_interrupted_and_fallback(gpt: GPT, server: LoopbackServer) -> None:
    server.reject_stream_models.add("o1-mini")
    server.enqueue(Fault.stream_break(after=2), Reply(text="whole answer"))

    async def consume() -> tuple[list[str], StreamInterruptedError, list[str]]:
        received: list[str] = []
        try:
            async for delta in gpt.astream("gpt-4o-mini", "", "one two three four five six"):
                received.append(delta)
        except StreamInterruptedError as exc:
            error = exc
        fallback = [d async for d in gpt.astream("o1-mini", "sys", "q")]
        return received, error, fallback

    received, error, fallback = _run_async(gpt, consume)
    assert received == ["Echo: one "]
    assert error.partial_text == "Echo: one "
    assert fallback == ["whole answer"]
    assert gpt.ledger.calls == 1


# -- providers without async or streaming ---------------------------------------------------


class _SyncOnly(Provider):
    name = "sync-only-test"
    default_endpoint = "http://127.0.0.1:9/v1"
    requires_key = False

    def execute(self, connection: Connection, request: ChatRequest) -> Completion:
        return Completion(
            text=f"sync:{request.messages[-1].content}", model=request.model, provider=self.name
        )

    def count_tokens(self, text: str, model: str) -> int:
        return len(text.split())


@pytest.mark.all_plugins  # a registry of its own: no pin applies
def test_provider_without_async_or_streaming() -> None:
    from moodlemate.ai._plugins import PluginRegistry

    plugins = PluginRegistry(group="moodlemate.ai.none")
    plugins.register_provider(_SyncOnly())
    gpt = GPT("sync-only-test", plugins=plugins, retry=FAST_RETRY)
    # acomplete falls back to the sync call in a worker thread...
    assert asyncio.run(gpt.achat_completion("m", "", "hi")) == "sync:hi"
    # ...but streaming is a clear, typed refusal.
    with pytest.raises(UnsupportedFeatureError, match="does not support streaming"):
        list(gpt.stream("m", "", "hi"))

    async def consume() -> list[str]:
        return [d async for d in gpt.astream("m", "", "hi")]

    with pytest.raises(UnsupportedFeatureError, match="does not support async streaming"):
        asyncio.run(consume())


def test_stream_never_sends_the_key_elsewhere(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    assert "".join(gpt.stream("gpt-4o-mini", "", "k")) == "Echo: k"
    assert server.chat_requests[0].headers["authorization"] == f"Bearer {TEST_KEY}"
