"""OpenTelemetry GenAI telemetry, recorded into the real OpenTelemetry SDK's in-memory span
exporter and metric reader, against a loopback server: the conventions' attribute names,
content off by default, keys never, and telemetry that cannot break a call."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from moodlemate.ai import GPT, BadRequestError, MaxTurnsError
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.otel import instrument, telemetry, uninstrument
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support import FAST_RETRY, TEST_KEY

SYSTEM = "You are terse."
PROMPT = "the secret prompt 7c1e"


class Recorded:
    """A GPT instrumented into in-memory exporters, and what they received."""

    def __init__(self, server: LoopbackServer, *, capture_content: bool | None = None) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.plugins = PluginRegistry()
        self.telemetry = instrument(
            tracer_provider=tracer_provider,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
            capture_content=capture_content,
            plugins=self.plugins,
        )
        self.server = server

    def gpt(self, **kwargs: Any) -> GPT:
        kwargs.setdefault("retry", FAST_RETRY)
        return GPT(
            "openai", endpoint=self.server.url, api_key=TEST_KEY, plugins=self.plugins, **kwargs
        )

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            metric.name: metric
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def everything(self) -> str:
        """Every span and metric, serialized: what an exporter would send anywhere."""
        data = self.reader.get_metrics_data()
        return "\n".join(
            [span.to_json() for span in self.finished()] + [data.to_json() if data else ""]
        )


@pytest.fixture
def recorded(server: LoopbackServer) -> Iterator[Recorded]:
    recorded = Recorded(server)
    yield recorded
    uninstrument(recorded.plugins)


def points(metric: Any) -> dict[str, Any]:
    return {p.attributes.get("gen_ai.token.type", ""): p for p in metric.data.data_points}


def test_one_call_is_one_client_span_with_the_conventions_attributes(
    recorded: Recorded,
) -> None:
    recorded.server.enqueue(Reply(text="Hi.", prompt_tokens=12, completion_tokens=3))
    completion = recorded.gpt().complete("gpt-4o-mini", SYSTEM, PROMPT, 0.2, 50)

    [span] = recorded.finished()
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.schema_url == telemetry.SCHEMA_URL
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 50,
        "server.address": "127.0.0.1",
        "server.port": recorded.server.port,
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
        "moodlemate.attempts": 1,
        "moodlemate.cost": float(completion.cost or 0),
    }


def test_the_metrics_are_the_conventions_histograms_and_a_cost_counter(
    recorded: Recorded,
) -> None:
    recorded.server.enqueue(
        Reply(prompt_tokens=12, completion_tokens=3), Reply(prompt_tokens=30, completion_tokens=7)
    )
    gpt = recorded.gpt()
    gpt.complete("gpt-4o-mini", "", "one")
    gpt.complete("gpt-4o-mini", "", "two")

    found = recorded.metrics()
    assert set(found) == {
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "moodlemate.client.cost",
    }
    tokens = found["gen_ai.client.token.usage"]
    assert tokens.unit == "{token}"
    by_type = points(tokens)
    assert (by_type["input"].sum, by_type["input"].count) == (42, 2)
    assert (by_type["output"].sum, by_type["output"].count) == (10, 2)
    assert tuple(by_type["input"].explicit_bounds) == telemetry.TOKEN_BUCKETS
    assert dict(by_type["input"].attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
        "server.port": recorded.server.port,
        "gen_ai.token.type": "input",
    }
    duration = found["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    [point] = duration.data.data_points
    assert point.count == 2
    assert 0 < point.sum < 10
    assert tuple(point.explicit_bounds) == telemetry.DURATION_BUCKETS
    [cost] = found["moodlemate.client.cost"].data.data_points
    assert cost.value == pytest.approx(float(gpt.ledger.cost))
    assert gpt.ledger.cost > Decimal(0)


def test_content_is_off_by_default_and_keys_never_appear(recorded: Recorded) -> None:
    recorded.server.enqueue(Reply(text="the secret reply 9d2f"))
    recorded.gpt().complete("gpt-4o-mini", SYSTEM, PROMPT)
    sent = recorded.everything()
    assert recorded.finished()
    for secret in (PROMPT, SYSTEM, "the secret reply 9d2f", TEST_KEY, TEST_KEY[-8:]):
        assert secret not in sent
    assert "gen_ai.input.messages" not in sent


def test_content_is_recorded_when_opted_in(server: LoopbackServer) -> None:
    recorded = Recorded(server, capture_content=True)
    server.enqueue(Reply(text="Hello there."))
    recorded.gpt().complete("gpt-4o-mini", SYSTEM, PROMPT)
    [span] = recorded.finished()
    attributes = span.attributes or {}
    assert json.loads(str(attributes["gen_ai.system_instructions"])) == [
        {"type": "text", "content": SYSTEM}
    ]
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hello there."}],
            "finish_reason": "stop",
        }
    ]
    assert TEST_KEY not in recorded.everything()


def test_the_environment_variable_opts_in_too(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    assert Recorded(server).telemetry.capture_content is True


def test_a_failed_call_sets_error_type_and_status_and_no_token_usage(
    recorded: Recorded,
) -> None:
    recorded.server.enqueue(Fault.status(400, message="bad temperature"))
    with pytest.raises(BadRequestError):
        recorded.gpt().complete("gpt-4o-mini", "", "hi")
    [span] = recorded.finished()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is not None
    assert "bad temperature" in span.status.description
    assert (span.attributes or {})["error.type"] == "BadRequestError"
    found = recorded.metrics()
    assert "gen_ai.client.token.usage" not in found
    [point] = found["gen_ai.client.operation.duration"].data.data_points
    assert point.attributes["error.type"] == "BadRequestError"


def test_retries_and_fallbacks_are_events_on_the_one_span(recorded: Recorded) -> None:
    recorded.server.enqueue(*[Fault.status(503)] * FAST_RETRY.attempts, Fault.status(502), Reply())
    completion = recorded.gpt(fallbacks=["gpt-4o"]).complete("gpt-4o-mini", "", "hi")
    assert completion.served_by == "gpt-4o"
    [span] = recorded.finished()
    attributes = span.attributes or {}
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.response.model"] == "gpt-4o"
    assert attributes["moodlemate.served_by"] == "gpt-4o"
    assert attributes["moodlemate.attempts"] == 2  # the serving entry's: one retry
    *retries, event = span.events
    # Each retry as it was scheduled: three for gpt-4o-mini, one for gpt-4o (its 502).
    assert [(r.name, (r.attributes or {})["moodlemate.attempt"]) for r in retries] == [
        ("moodlemate.retry", 1),
        ("moodlemate.retry", 2),
        ("moodlemate.retry", 3),
        ("moodlemate.retry", 1),
    ]
    assert [(r.attributes or {})["http.response.status_code"] for r in retries] == [
        503,
        503,
        503,
        502,
    ]
    assert {(r.attributes or {})["error.type"] for r in retries} == {"ServerError"}
    assert all(r.timestamp < event.timestamp for r in retries)
    assert event.name == "moodlemate.fallback"
    assert dict(event.attributes or {}) == {
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai",
        "error.type": "ServerError",
        "http.response.status_code": 503,
        "moodlemate.attempts": FAST_RETRY.attempts,
        "moodlemate.elapsed": pytest.approx(completion.failed_before[0].elapsed),
    }


def test_retry_events_stay_with_their_own_call_across_threads(recorded: Recorded) -> None:
    """Eight threads share the first eight failures however they race: each span holds
    exactly the retry events of its own call (attempts - 1), never another thread's."""
    from concurrent.futures import ThreadPoolExecutor

    gpt = recorded.gpt()
    recorded.server.enqueue(*[Fault.status(503)] * 8)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: gpt.complete("gpt-4o-mini", "", f"q{i}"), range(8)))
    spans = recorded.finished()
    assert len(spans) == 8
    for span in spans:
        attempts = (span.attributes or {})["moodlemate.attempts"]
        assert isinstance(attempts, int)
        assert len(span.events) == attempts - 1
    assert sum(len(s.events) for s in spans) == 8
    assert recorded.telemetry._open == {}


def test_a_stream_is_one_span_ended_with_its_usage(recorded: Recorded) -> None:
    recorded.server.enqueue(Reply(chunks=["a", "b", "c"], prompt_tokens=5, completion_tokens=3))
    with recorded.gpt().stream("gpt-4o-mini", "", "hi") as stream:
        assert recorded.finished() == []  # not sent before the first next()
        assert "".join(stream) == "abc"
    [span] = recorded.finished()
    assert (span.attributes or {})["gen_ai.usage.output_tokens"] == 3


def test_concurrent_async_calls_each_get_their_own_span(recorded: Recorded) -> None:
    gpt = recorded.gpt()
    models = ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini"]
    for index in range(len(models)):
        recorded.server.enqueue(Reply(delay=0.05 * (len(models) - index), completion_tokens=index))

    async def main() -> None:
        await asyncio.gather(*(gpt.acomplete(m, "", f"q{i}") for i, m in enumerate(models)))
        await gpt.aclose()

    asyncio.run(main())
    spans = recorded.finished()
    assert sorted(s.name for s in spans) == sorted(f"chat {m}" for m in models)
    for span in spans:
        attributes = span.attributes or {}
        assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"]
    assert recorded.telemetry._open == {}


def test_streams_left_open_leave_a_bounded_number_of_open_spans(
    recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "MAX_OPEN_SPANS", 3)
    gpt = recorded.gpt()
    streams = []
    for _ in range(6):
        recorded.server.enqueue(Reply(chunks=["a", "b"]))
        stream = gpt.stream("gpt-4o-mini", "", "hi")
        assert next(stream) == "a"
        streams.append(stream)  # begun, never read on nor closed: no after_response yet
    assert len(recorded.telemetry._open) == 3
    assert len(recorded.finished()) == 3  # the oldest, ended when pushed out
    for stream in streams:
        stream.close()  # the call ends closed early; the pushed-out ones are simply forgotten
    assert recorded.telemetry._open == {}
    assert len(recorded.finished()) == 6


class BrokenTracerProvider:
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("exporter down")


def test_broken_telemetry_never_breaks_a_call(server: LoopbackServer) -> None:
    plugins = PluginRegistry()
    instrument(tracer_provider=BrokenTracerProvider(), plugins=plugins)
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, plugins=plugins)
    assert gpt.chat_completion("gpt-4o-mini", "", "hi") == "Echo: hi"
    assert uninstrument(plugins) is True
    assert uninstrument(plugins) is False
    assert plugins.call_hooks() is None  # uninstrumented calls pay nothing again


def test_importing_the_library_imports_no_opentelemetry() -> None:
    code = (
        "import sys, moodlemate.ai, moodlemate.ai.otel; from moodlemate.ai import GPT; GPT(); "
        "print([m for m in sys.modules if m.startswith(('opentelemetry', 'openai', 'tiktoken'))])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_opentelemetry_instrument_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from moodlemate.ai.otel import instrument\n"
        "try:\n    instrument()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("ConfigurationError")
    assert "pip install 'moodlemate-ai[otel]'" in done.stdout


# -- tool runs: a span for the run, its turns and tool executions as children ---------------


def _weather(city: str) -> str:
    """Current temperature in a city."""
    return f"4C in {city}"


def _tool_turn(*names: str) -> Reply:
    calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps({"city": "Oslo"})},
        }
        for i, name in enumerate(names)
    ]
    return Reply(tool_calls=calls, finish_reason="tool_calls")


def _run_spans(recorded: Recorded) -> tuple[ReadableSpan, list[ReadableSpan], list[ReadableSpan]]:
    spans = recorded.finished()
    (run,) = [s for s in spans if s.attributes["gen_ai.operation.name"] == "invoke_agent"]
    turns = [s for s in spans if s.attributes["gen_ai.operation.name"] == "chat"]
    tools = [s for s in spans if s.attributes["gen_ai.operation.name"] == "execute_tool"]
    return run, turns, tools


def test_a_tool_run_is_a_span_with_its_turns_and_tool_executions_as_children(
    recorded: Recorded,
) -> None:
    recorded.server.enqueue(_tool_turn("_weather", "nowhere"), Reply(text="4C."))
    gpt = recorded.gpt()
    result = gpt.run("gpt-4o-mini", PROMPT, tools=[_weather])
    run, turns, tools = _run_spans(recorded)
    assert run.name == "invoke_agent gpt-4o-mini"
    assert run.attributes["moodlemate.run.id"] == result.id
    assert run.attributes["moodlemate.run.turns"] == 2
    assert run.attributes["moodlemate.cost"] == float(result.cost or 0)
    assert run.status.status_code is not StatusCode.ERROR
    assert len(turns) == 2
    assert all(t.parent is not None and t.parent.span_id == run.context.span_id for t in turns)
    ok, unknown = sorted(tools, key=lambda s: s.attributes["gen_ai.tool.call.id"])
    for span in (ok, unknown):
        assert span.parent is not None
        assert span.parent.span_id == run.context.span_id
        assert span.context.trace_id == run.context.trace_id
    assert ok.name == "execute_tool _weather"
    assert ok.attributes["gen_ai.tool.name"] == "_weather"
    assert ok.attributes["gen_ai.tool.call.id"] == "call_0"
    assert ok.status.status_code is not StatusCode.ERROR
    assert unknown.attributes["error.type"] == "unknown_tool"
    assert unknown.status.status_code is StatusCode.ERROR
    # Content is off by default: no arguments, no results, no prompt.
    assert "gen_ai.tool.call.arguments" not in ok.attributes
    assert "gen_ai.tool.call.result" not in ok.attributes
    assert PROMPT not in recorded.everything()
    assert TEST_KEY not in recorded.everything()


def test_a_streamed_run_nests_its_streamed_turns_and_tools_the_same_way(
    recorded: Recorded,
) -> None:
    recorded.server.enqueue(_tool_turn("_weather"), Reply(text="4C."))
    stream = recorded.gpt().run_stream("gpt-4o-mini", PROMPT, tools=[_weather])
    for _ in stream:
        pass
    run, turns, tools = _run_spans(recorded)
    assert stream.run is not None
    assert run.attributes["moodlemate.run.id"] == stream.run.id
    assert run.attributes["moodlemate.run.turns"] == 2
    assert len(turns) == 2
    assert all(t.parent is not None and t.parent.span_id == run.context.span_id for t in turns)
    (tool,) = tools
    assert tool.parent is not None
    assert tool.parent.span_id == run.context.span_id
    assert PROMPT not in recorded.everything()


def test_tool_arguments_and_results_are_recorded_when_opted_in(server: LoopbackServer) -> None:
    recorded = Recorded(server, capture_content=True)
    try:
        server.enqueue(_tool_turn("_weather"), Reply(text="4C."))
        recorded.gpt().run("gpt-4o-mini", PROMPT, tools=[_weather])
        _, _, (tool,) = _run_spans(recorded)
        assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"city": "Oslo"}
        assert tool.attributes["gen_ai.tool.call.result"] == "4C in Oslo"
        assert TEST_KEY not in recorded.everything()
    finally:
        uninstrument(recorded.plugins)


def test_a_run_stopped_by_a_limit_ends_its_span_with_the_error(recorded: Recorded) -> None:
    recorded.server.responder = lambda body: _tool_turn("_weather")
    with pytest.raises(MaxTurnsError):
        recorded.gpt().run("gpt-4o-mini", PROMPT, tools=[_weather], max_turns=2)
    run, turns, tools = _run_spans(recorded)
    assert run.attributes["error.type"] == "MaxTurnsError"
    assert run.status.status_code is StatusCode.ERROR
    assert len(turns) == 2
    assert len(tools) == 1  # the last turn's calls were not run
    # The run's context was left: a call after it is a root span of its own.
    recorded.server.responder = None
    recorded.server.enqueue(Reply(text="plain"))
    recorded.gpt().chat_completion("gpt-4o-mini", "", "plain")
    assert recorded.finished()[-1].parent is None


def test_an_async_run_nests_the_same_way(recorded: Recorded) -> None:
    async def forecast(city: str) -> str:
        """Tomorrow's weather."""
        return "sun"

    recorded.server.enqueue(_tool_turn("forecast"), Reply(text="Sun."))
    asyncio.run(recorded.gpt().arun("gpt-4o-mini", PROMPT, tools=[forecast]))
    run, turns, (tool,) = _run_spans(recorded)
    assert all(t.parent is not None and t.parent.span_id == run.context.span_id for t in turns)
    assert tool.parent is not None
    assert tool.parent.span_id == run.context.span_id
    assert tool.end_time is not None
    assert tool.start_time is not None
    assert tool.end_time >= tool.start_time


def test_a_key_in_a_tool_name_or_call_id_never_reaches_a_span(recorded: Recorded) -> None:
    """The name and id of a tool call are the model's (untrusted): a key the model echoes
    there, whole or straddling the 64-character cut, is redacted like any server string."""
    straddling = "lookup_" + "n" * 46 + TEST_KEY  # the key starts before the cut, ends after
    recorded.server.enqueue(
        Reply(
            tool_calls=[
                {
                    "id": f"call_{TEST_KEY}",
                    "type": "function",
                    "function": {"name": f"tool_{TEST_KEY}", "arguments": "{}"},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": straddling, "arguments": "{}"},
                },
            ],
            finish_reason="tool_calls",
        ),
        Reply(text="4C."),
    )
    recorded.gpt().run("gpt-4o-mini", PROMPT, tools=[_weather])
    _, _, tools = _run_spans(recorded)
    assert len(tools) == 2
    everything = recorded.everything()
    assert TEST_KEY not in everything
    assert TEST_KEY[:11] not in everything  # no prefix of it either


def _broken(city: str) -> str:
    """Fails."""
    time.sleep(0.05)
    raise RuntimeError("disk on fire")


def _slow(city: str) -> str:
    """Answers late."""
    time.sleep(0.3)
    return "4C"


async def _abroken(city: str) -> str:
    """Fails."""
    await asyncio.sleep(0.05)
    raise RuntimeError("disk on fire")


async def _along(city: str) -> str:
    """Never done in time."""
    await asyncio.sleep(30)
    return "never"


@pytest.mark.parametrize("how", ["run", "run_stream", "arun", "arun_stream"])
def test_a_run_ended_by_a_tool_error_has_a_span_for_each_call_that_ended(
    recorded: Recorded, how: str
) -> None:
    """Under ``raise_tool_errors`` the calls of the failing turn get their ``execute_tool``
    spans, with their true outcome, as the calls of a turn that ended do."""
    from moodlemate.ai import ToolExecutionError

    gpt = recorded.gpt()
    asynchronous = how.startswith("a")
    tools: list[Any] = [_abroken, _slow, _along] if asynchronous else [_broken, _slow]
    names = [tool.__name__ for tool in tools]
    recorded.server.enqueue(_tool_turn(*names))

    async def drain_async() -> None:
        if how == "arun":
            await gpt.arun("gpt-4o-mini", PROMPT, tools=tools, raise_tool_errors=True)
            return
        async for _ in gpt.arun_stream("gpt-4o-mini", PROMPT, tools=tools, raise_tool_errors=True):
            pass

    def drain() -> None:
        if how == "run":
            gpt.run("gpt-4o-mini", PROMPT, tools=tools, raise_tool_errors=True)
        elif how == "run_stream":
            list(gpt.run_stream("gpt-4o-mini", PROMPT, tools=tools, raise_tool_errors=True))
        else:
            asyncio.run(drain_async())

    with pytest.raises(ToolExecutionError, match="disk on fire"):
        drain()
    run, _, tools_spans = _run_spans(recorded)
    assert run.attributes["error.type"] == "ToolExecutionError"
    outcomes = {
        s.attributes["gen_ai.tool.name"]: s.attributes.get("error.type") for s in tools_spans
    }
    expected: dict[str, Any] = {names[0]: "raised", "_slow": None}
    if asynchronous:
        expected["_along"] = "cancelled"
    assert outcomes == expected
    assert all(
        s.parent is not None and s.parent.span_id == run.context.span_id for s in tools_spans
    )
    (slow,) = [s for s in tools_spans if s.attributes["gen_ai.tool.name"] == "_slow"]
    assert slow.end_time is not None
    assert slow.start_time is not None
    assert slow.end_time - slow.start_time >= 250_000_000  # timed as it ran, waited for
