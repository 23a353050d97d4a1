"""A stream or a streamed tool run closed early by its caller (a ``break``, ``close()``,
leaving a ``with`` block, a cancelled task) is an early close, not a failure, everywhere the
outcome is reported: the spend log's ``cancelled`` row, the ``after_response`` and
``after_tool_run`` hooks, and the OpenTelemetry spans (recorded by the real SDK), whose
context never leaks into the caller's code between events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT, BadRequestError, Completion, hookimpl
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai._run_events import TextDelta, ToolCallRequested
from moodlemate.ai._spend_log import SpendLog
from moodlemate.ai.otel import instrument, uninstrument
from moodlemate.ai.otel.telemetry import CLOSED_EARLY
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from support import FAST_RETRY, TEST_KEY


def weather(city: str) -> str:
    """The weather in a city."""
    return f"4C in {city}"


def _asks_weather() -> Reply:
    call = {
        "id": "call_0",
        "type": "function",
        "function": {"name": "weather", "arguments": json.dumps({"city": "Oslo"})},
    }
    return Reply(tool_calls=[call], finish_reason="tool_calls")


class Ends:
    """A plugin keeping how each call and run ended."""

    def __init__(self) -> None:
        self.calls: list[tuple[Completion | None, BaseException | None]] = []
        self.runs: list[BaseException | None] = []

    @hookimpl
    def after_response(self, completion: Completion | None, error: BaseException | None) -> None:
        self.calls.append((completion, error))

    @hookimpl
    def after_tool_run(self, error: BaseException | None) -> None:
        self.runs.append(error)


class Traced:
    """A GPT instrumented into the real SDK's in-memory exporter, plus a tracer the caller
    uses for spans of its own."""

    def __init__(self, server: LoopbackServer, tmp_path: Path) -> None:
        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracer = provider.get_tracer("caller")
        self.plugins = PluginRegistry()
        instrument(tracer_provider=provider, plugins=self.plugins)
        self.ends = Ends()
        self.plugins.register(self.ends, "ends")
        self.log = tmp_path / "spend.sqlite"
        self.gpt = GPT(
            "openai",
            endpoint=server.url,
            api_key=TEST_KEY,
            retry=FAST_RETRY,
            plugins=self.plugins,
            log=self.log,
        )

    def named(self, operation: str) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans.get_finished_spans()
            if (s.attributes or {}).get("gen_ai.operation.name") == operation
        ]

    def outcomes(self) -> list[str]:
        return [row.outcome for row in SpendLog(self.log).recent(10)]


@pytest.fixture
def traced(server: LoopbackServer, tmp_path: Path) -> Iterator[Traced]:
    traced = Traced(server, tmp_path)
    yield traced
    uninstrument(traced.plugins)


def _child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return span.parent is not None and span.parent.span_id == parent.context.span_id


def _closed_early(span: ReadableSpan) -> None:
    attributes = span.attributes or {}
    assert attributes.get(CLOSED_EARLY) is True
    assert "error.type" not in attributes
    assert span.status.status_code is StatusCode.UNSET


# -- plain streams --------------------------------------------------------------------------------


def test_a_stream_closed_early_ends_its_call_hooks_and_span_as_closed_early(
    server: LoopbackServer, traced: Traced
) -> None:
    server.enqueue(Reply(chunks=["a", "b", "c"]), Reply(chunks=["a", "b", "c"]))
    with traced.gpt.stream("gpt-4o-mini", "", "hi") as stream:
        for _delta in stream:
            break
    stream = traced.gpt.stream("gpt-4o-mini", "", "hi")
    assert next(stream) == "a"
    stream.close()
    for completion, error in traced.ends.calls:
        assert completion is None
        assert isinstance(error, GeneratorExit)
    assert len(traced.ends.calls) == 2
    assert traced.outcomes() == ["cancelled", "cancelled"]
    spans = traced.named("chat")
    assert len(spans) == 2
    for span in spans:
        _closed_early(span)


def test_an_async_stream_closed_or_cancelled_early_ends_its_hooks_the_same_way(
    server: LoopbackServer, traced: Traced
) -> None:
    server.enqueue(Reply(chunks=["a", "b", "c"]), Reply(chunks=["x"] * 50, chunk_delay=0.05))

    async def main() -> None:
        async with traced.gpt.astream("gpt-4o-mini", "", "hi") as stream:
            async for _delta in stream:
                break

        async def read() -> None:
            async for _delta in traced.gpt.astream("gpt-4o-mini", "", "hi"):
                pass

        task = asyncio.create_task(read())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await traced.gpt.aclose()

    asyncio.run(main())
    [(_, closed), (_, cancelled)] = traced.ends.calls
    assert isinstance(closed, GeneratorExit)
    assert isinstance(cancelled, asyncio.CancelledError)
    assert traced.outcomes() == ["cancelled", "cancelled"]
    for span in traced.named("chat"):
        _closed_early(span)


def test_a_stream_that_fails_still_ends_as_an_error(server: LoopbackServer, traced: Traced) -> None:
    server.enqueue(Fault.status(400))
    with pytest.raises(BadRequestError):
        list(traced.gpt.stream("gpt-4o-mini", "", "hi"))
    [(_, error)] = traced.ends.calls
    assert isinstance(error, BadRequestError)
    (span,) = traced.named("chat")
    assert span.status.status_code is StatusCode.ERROR
    assert CLOSED_EARLY not in (span.attributes or {})


# -- streamed tool runs ---------------------------------------------------------------------------


def test_a_streamed_run_left_with_break_is_closed_early_not_failed(
    server: LoopbackServer, traced: Traced
) -> None:
    server.enqueue(Reply(chunks=["word "] * 20))
    for event in traced.gpt.run_stream("gpt-4o-mini", "go", tools=[weather]):
        if isinstance(event, TextDelta):
            break
    [error] = traced.ends.runs
    assert isinstance(error, GeneratorExit)
    (run,) = traced.named("invoke_agent")
    _closed_early(run)
    (turn,) = traced.named("chat")
    _closed_early(turn)
    assert _child_of(turn, run)
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_streamed_run_that_fails_still_marks_its_span_an_error(
    server: LoopbackServer, traced: Traced
) -> None:
    server.enqueue(Fault.status(400))
    with pytest.raises(BadRequestError):
        list(traced.gpt.run_stream("gpt-4o-mini", "go", tools=[weather]))
    (run,) = traced.named("invoke_agent")
    assert run.status.status_code is StatusCode.ERROR
    assert (run.attributes or {})["error.type"] == "BadRequestError"
    assert CLOSED_EARLY not in (run.attributes or {})


def test_the_run_span_is_never_current_in_the_callers_code_between_events(
    server: LoopbackServer, traced: Traced
) -> None:
    server.enqueue(_asks_weather(), Reply(chunks=["4C", " in Oslo."]))
    mine: list[str] = []
    with traced.tracer.start_as_current_span("request handler") as outer:
        for event in traced.gpt.run_stream("gpt-4o-mini", "go", tools=[weather]):
            assert trace.get_current_span() is outer
            with traced.tracer.start_as_current_span(f"handle {type(event).__name__}"):
                mine.append(type(event).__name__)
    assert {"ToolCallRequested", "TextDelta"} <= set(mine)
    spans = list(traced.spans.get_finished_spans())
    (run,) = traced.named("invoke_agent")
    (handler,) = [s for s in spans if s.name == "request handler"]
    handled = [s for s in spans if s.name.startswith("handle ")]
    assert len(handled) == len(mine)
    assert all(_child_of(s, handler) for s in handled)
    assert _child_of(run, handler)
    turns, (tool,) = traced.named("chat"), traced.named("execute_tool")
    assert len(turns) == 2
    for child in (*turns, tool):
        assert _child_of(child, run)
    assert run.status.status_code is StatusCode.UNSET
    assert CLOSED_EARLY not in (run.attributes or {})
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_an_async_streamed_run_keeps_its_context_to_itself_and_closes_early(
    server: LoopbackServer, traced: Traced
) -> None:
    server.enqueue(_asks_weather(), Reply(chunks=["4C", " in Oslo."]))
    seen: list[Any] = []

    async def main() -> None:
        with traced.tracer.start_as_current_span("request handler") as outer:
            async with traced.gpt.arun_stream("gpt-4o-mini", "go", tools=[weather]) as stream:
                async for event in stream:
                    seen.append(trace.get_current_span())
                    with traced.tracer.start_as_current_span("handle"):
                        pass
                    if isinstance(event, ToolCallRequested):
                        break
            assert all(span is outer for span in seen)
        await traced.gpt.aclose()

    asyncio.run(main())
    [error] = traced.ends.runs
    assert isinstance(error, GeneratorExit)
    (run,) = traced.named("invoke_agent")
    _closed_early(run)
    spans = list(traced.spans.get_finished_spans())
    (handler,) = [s for s in spans if s.name == "request handler"]
    for span in [s for s in spans if s.name == "handle"]:
        assert _child_of(span, handler)
    (turn,) = traced.named("chat")
    assert _child_of(turn, run)


def test_a_fallback_stream_closed_early_ends_its_hooks_once(
    server: LoopbackServer, tmp_path: Path
) -> None:
    traced = Traced(server, tmp_path)
    try:
        gpt = GPT(
            "openai",
            endpoint=server.url,
            api_key=TEST_KEY,
            retry=FAST_RETRY,
            plugins=traced.plugins,
            fallbacks=["gpt-4o"],
        )
        server.enqueue(*[Fault.status(503)] * FAST_RETRY.attempts, Reply(chunks=["a", "b", "c"]))
        with gpt.stream("gpt-4o-mini", "", "hi") as stream:
            assert next(stream) == "a"
        [(completion, error)] = traced.ends.calls
        assert completion is None
        assert isinstance(error, GeneratorExit)
        (span,) = traced.named("chat")
        _closed_early(span)
        assert gpt.ledger.reserved == 0
    finally:
        uninstrument(traced.plugins)
