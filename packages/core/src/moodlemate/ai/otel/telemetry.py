"""The telemetry plugin: ``before_request`` opens the span, ``after_response`` ends it and
records the metrics. Nothing here may break a call: a failure to record is logged and
swallowed (a hook's exception would otherwise reach the caller or refuse the request)."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from moodlemate.ai._closed_early import closed_early
from moodlemate.ai._hookspecs import hookimpl
from moodlemate.ai._messages import AudioPart, ImagePart, Message, TextPart
from moodlemate.ai._retry import listen_to_retries, stop_listening
from moodlemate.ai._secrets import redact, redact_cut
from moodlemate.ai.errors import MoodlemateError, ProviderError
from opentelemetry import context, metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from contextvars import Token

    from moodlemate.ai._provider import ChatRequest, Completion, FailedEntry
    from moodlemate.ai._retry import RetryListener
    from moodlemate.ai._run import Run
    from moodlemate.ai._tool_calls import ToolResult

    _Open = tuple[int, trace.Span, Token[RetryListener | None]]

__all__ = ["CLOSED_EARLY", "DURATION_BUCKETS", "SCHEMA_URL", "TOKEN_BUCKETS", "GenAITelemetry"]

log = logging.getLogger("moodlemate.ai")

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
"""The conventions' version whose names this records (``gen_ai.provider.name``,
``gen_ai.input.messages``: 1.37.0 and later)."""
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
"""The buckets the conventions advise for ``gen_ai.client.token.usage``."""
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
"""The buckets the conventions advise for ``gen_ai.client.operation.duration`` (seconds)."""
MAX_OPEN_SPANS = 4096
"""Spans begun but not ended (a stream dropped unclosed reaches ``after_response`` only when
it is collected, if ever): beyond this many, the oldest is ended and forgotten, so memory
stays bounded."""
CLOSED_EARLY = "moodlemate.closed_early"
"""Set (true) on a call's or a run's span when the caller closed it early (a ``break``,
``close()``, a cancelled task): not an error, so its status stays unset and it has no
``error.type``; the conventions have no attribute of their own for it."""

OPERATION = "chat"
RUN_OPERATION = "invoke_agent"
"""The conventions' operation for a loop of model turns and tool executions."""
TOOL_OPERATION = "execute_tool"
_MAX_TOOL_NAME = 64
_MAX_CAPTURED = 100_000
_INSTRUCTION_ROLES = ("system", "developer")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class GenAITelemetry:
    """A call-hooks plugin recording spans and metrics (register it with
    :func:`moodlemate.ai.otel.instrument`)."""

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        capture_content: bool = False,
    ) -> None:
        from moodlemate.ai import __version__

        self.capture_content = capture_content
        self._tracer = trace.get_tracer(
            "moodlemate.ai", __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        meter = metrics.get_meter(
            "moodlemate.ai", __version__, meter_provider, schema_url=SCHEMA_URL
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._cost = meter.create_counter(
            "moodlemate.client.cost",
            unit="{USD}",
            description="Cost of the calls whose cost is known, in US dollars",
        )
        self._lock = threading.Lock()
        self._open: OrderedDict[int, _Open] = OrderedDict()
        self._by_request: dict[int, list[int]] = {}
        self._ids = itertools.count()
        self._runs: OrderedDict[str, trace.Span] = OrderedDict()
        self._current: dict[str, list[object]] = {}
        """Per run, the tokens of its span made current (attached and not yet detached)."""

    # -- the hooks -----------------------------------------------------------------------

    @hookimpl
    def before_request(self, request: ChatRequest, provider: str, endpoint: str) -> None:
        try:
            self._begin(request, provider, endpoint)
        except Exception:  # never refuse a call for want of telemetry
            log.debug("moodlemate.ai.otel: could not start a span", exc_info=True)

    @hookimpl
    def after_response(
        self,
        request: ChatRequest,
        provider: str,
        endpoint: str,
        completion: Completion | None,
        error: BaseException | None,
        attempts: int,
        elapsed: float,
    ) -> None:
        try:
            self._end(request, provider, endpoint, completion, error, attempts, elapsed)
        except Exception:
            log.debug("moodlemate.ai.otel: could not record a call", exc_info=True)

    @hookimpl
    def before_tool_run(
        self, run_id: str, request: ChatRequest, provider: str, endpoint: str
    ) -> None:
        try:
            self._begin_run(run_id, request, provider, endpoint)
        except Exception:
            log.debug("moodlemate.ai.otel: could not start a run span", exc_info=True)

    @hookimpl
    def after_tool_call(self, run_id: str, result: ToolResult, started: float) -> None:
        try:
            self._tool_span(run_id, result, started)
        except Exception:
            log.debug("moodlemate.ai.otel: could not record a tool call", exc_info=True)

    @hookimpl
    def after_tool_run(self, run_id: str, run: Run, error: BaseException | None) -> None:
        try:
            self._end_run(run_id, run, error)
        except Exception:
            log.debug("moodlemate.ai.otel: could not end a run span", exc_info=True)

    @hookimpl
    def resume_tool_run(self, run_id: str) -> None:
        try:
            self._enter_run(run_id)
        except Exception:
            log.debug("moodlemate.ai.otel: could not enter a run's context", exc_info=True)

    @hookimpl
    def pause_tool_run(self, run_id: str) -> None:
        self._leave_run(run_id)

    # -- spans ---------------------------------------------------------------------------

    def _begin_run(self, run_id: str, request: ChatRequest, provider: str, endpoint: str) -> None:
        """The run's span, made current so that each model turn's span is its child (a
        streamed run leaves it at each event and enters it again at the next step)."""
        attributes = _common(request, provider, endpoint)
        attributes["gen_ai.operation.name"] = RUN_OPERATION
        attributes["moodlemate.run.id"] = run_id
        span = self._tracer.start_span(
            f"{RUN_OPERATION} {request.model}", kind=SpanKind.INTERNAL, attributes=attributes
        )
        with self._lock:
            self._runs[run_id] = span
            while len(self._runs) > MAX_OPEN_SPANS:
                stale_id, stale = self._runs.popitem(last=False)
                self._current.pop(stale_id, None)
                stale.end()
        self._enter_run(run_id)

    def _enter_run(self, run_id: str) -> None:
        with self._lock:
            span = self._runs.get(run_id)
        if span is not None:
            token = context.attach(trace.set_span_in_context(span))
            with self._lock:
                self._current.setdefault(run_id, []).append(token)

    def _leave_run(self, run_id: str) -> None:
        """Detach what :meth:`_enter_run` attached for this run, newest first."""
        with self._lock:
            tokens = self._current.pop(run_id, [])
        for token in reversed(tokens):
            try:
                context.detach(token)  # type: ignore[arg-type]
            except Exception:  # another context (a generator closed elsewhere)
                log.debug("moodlemate.ai.otel: run context not detached", exc_info=True)

    def _tool_span(self, run_id: str, result: ToolResult, started: float) -> None:
        """An ``execute_tool`` span, child of the run's, timed as the tool ran."""
        with self._lock:
            opened = self._runs.get(run_id)
        parent = trace.set_span_in_context(opened) if opened is not None else None
        call = result.call
        name = redact_cut(call.name, _MAX_TOOL_NAME)  # the model's: a key may be echoed there
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": TOOL_OPERATION,
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": redact_cut(call.id, _MAX_TOOL_NAME),
            "gen_ai.tool.type": "function",
            "moodlemate.run.id": run_id,
        }
        if self.capture_content:
            attributes["gen_ai.tool.call.arguments"] = redact(call.arguments[:_MAX_CAPTURED])
            attributes["gen_ai.tool.call.result"] = result.output
        begin = int(started * 1e9)
        span = self._tracer.start_span(
            f"{TOOL_OPERATION} {name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=begin,
        )
        if result.error is not None:
            span.set_attribute("error.type", result.error)
            span.set_status(Status(StatusCode.ERROR, result.error))
        span.end(end_time=begin + int(result.seconds * 1e9))

    def _end_run(self, run_id: str, run: Run, error: BaseException | None) -> None:
        self._leave_run(run_id)
        with self._lock:
            span = self._runs.pop(run_id, None)
        if span is None:
            return
        span.set_attribute("moodlemate.run.turns", len(run.turns))
        usage = run.usage
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if run.cost is not None:
            span.set_attribute("moodlemate.cost", float(run.cost))
        _outcome(span, error)
        span.end()

    def _begin(self, request: ChatRequest, provider: str, endpoint: str) -> None:
        attributes: dict[str, Any] = {
            **_common(request, provider, endpoint),
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = float(request.temperature)
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        if self.capture_content:
            attributes.update(_input_content(request))
        span = self._tracer.start_span(
            f"{OPERATION} {request.model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        # Retries run in this context (thread or task) until after_response: each is an
        # event on this span, at the moment it is scheduled.
        token = listen_to_retries(
            lambda _label, attempt, exc, wait: _retried(span, attempt, exc, wait)
        )
        self._remember(id(request), span, token)

    def _end(
        self,
        request: ChatRequest,
        provider: str,
        endpoint: str,
        completion: Completion | None,
        error: BaseException | None,
        attempts: int,
        elapsed: float,
    ) -> None:
        opened = self._recall(id(request))
        span = None
        if opened is not None:
            span, token = opened
            stop_listening(token)
        common = _common(request, provider, endpoint)
        failed: Sequence[FailedEntry] = ()
        if completion is not None:
            failed = completion.failed_before
            common["gen_ai.provider.name"] = completion.provider  # a fallback may have served
            common["gen_ai.response.model"] = completion.model
        elif error is not None:
            failed = getattr(error, "failed_before", ())
            if not closed_early(error):
                common["error.type"] = type(error).__qualname__
        self._duration.record(elapsed, common)
        if completion is not None and completion.usage_reported:
            usage = completion.usage
            self._tokens.record(usage.prompt_tokens, {**common, "gen_ai.token.type": "input"})
            self._tokens.record(usage.completion_tokens, {**common, "gen_ai.token.type": "output"})
        if completion is not None and completion.cost is not None:
            self._cost.add(float(completion.cost), common)
        if span is None:
            return
        for entry in failed:
            span.add_event("moodlemate.fallback", _fallback_event(entry))
        span.set_attribute("moodlemate.attempts", attempts)
        if completion is not None:
            self._succeeded(span, completion)
        else:
            _outcome(span, error)
        span.end()

    def _succeeded(self, span: trace.Span, completion: Completion) -> None:
        span.set_attribute("gen_ai.provider.name", completion.provider)
        span.set_attribute("gen_ai.response.model", completion.model)
        if completion.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [completion.finish_reason])
        if completion.usage_reported:
            span.set_attribute("gen_ai.usage.input_tokens", completion.usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", completion.usage.completion_tokens)
        if completion.cost is not None:
            span.set_attribute("moodlemate.cost", float(completion.cost))
        if completion.served_by is not None:
            span.set_attribute("moodlemate.served_by", completion.served_by)
        if self.capture_content:
            span.set_attribute("gen_ai.output.messages", _output_content(completion))

    # -- which span belongs to which call ------------------------------------------------

    def _remember(
        self, request_id: int, span: trace.Span, listening: Token[RetryListener | None]
    ) -> None:
        with self._lock:
            token = next(self._ids)
            self._open[token] = (request_id, span, listening)
            self._by_request.setdefault(request_id, []).append(token)
            while len(self._open) > MAX_OPEN_SPANS:
                _, (stale_request, stale, _listening) = self._open.popitem(last=False)
                self._forget(stale_request, None)
                stale.end()

    def _recall(self, request_id: int) -> tuple[trace.Span, Token[RetryListener | None]] | None:
        """The newest open span of this request object (one object sent twice at once in
        the same thread nests, so the newest is the one ending)."""
        with self._lock:
            token = self._forget(request_id, -1)
            if token is None:
                return None
            _, span, listening = self._open.pop(token)
            return span, listening

    def _forget(self, request_id: int, index: int | None) -> int | None:
        tokens = self._by_request.get(request_id)
        if not tokens:
            return None
        token = tokens.pop(index if index is not None else 0)
        if not tokens:
            del self._by_request[request_id]
        return token


def _common(request: ChatRequest, provider: str, endpoint: str) -> dict[str, Any]:
    """The attributes span and metrics share: operation, provider, model, server."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request.model,
    }
    parts = urlsplit(endpoint)
    if parts.hostname:  # the host only: never the path, query or any userinfo
        attributes["server.address"] = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
        if port:
            attributes["server.port"] = port
    return attributes


def _outcome(span: trace.Span, error: BaseException | None) -> None:
    """Mark how a call or run ended: an error, or closed early (not an error)."""
    if error is None:
        return
    if closed_early(error):
        span.set_attribute(CLOSED_EARLY, True)
        return
    span.set_attribute("error.type", type(error).__qualname__)
    message = error.message if isinstance(error, MoodlemateError) else None
    span.set_status(Status(StatusCode.ERROR, message))


def _retried(span: trace.Span, attempt: int, exc: ProviderError, wait: float) -> None:
    event: dict[str, Any] = {
        "moodlemate.attempt": attempt,
        "error.type": type(exc).__qualname__,
        "moodlemate.retry.wait": wait,
    }
    if exc.status_code is not None:
        event["http.response.status_code"] = exc.status_code
    span.add_event("moodlemate.retry", event)


def _fallback_event(entry: FailedEntry) -> Mapping[str, Any]:
    event: dict[str, Any] = {
        "gen_ai.request.model": entry.model,
        "gen_ai.provider.name": entry.provider,
        "error.type": entry.error,
        "moodlemate.attempts": entry.attempts,
        "moodlemate.elapsed": entry.elapsed,
    }
    if entry.status_code is not None:
        event["http.response.status_code"] = entry.status_code
    return event


def _parts(message: Message) -> list[dict[str, Any]]:
    """A message's parts in the GenAI conventions' shape; an inline image, file or audio clip
    is named by its modality and type, its bytes never copied into a span."""
    content = message.content
    if isinstance(content, str) and not message.tool_calls and message.tool_call_id is None:
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    if message.tool_call_id is not None:
        parts.append(
            {"type": "tool_call_response", "id": message.tool_call_id, "response": message.text}
        )
    elif isinstance(content, str):
        if content:
            parts.append({"type": "text", "content": content})
    else:
        for part in content:
            if isinstance(part, TextPart):
                parts.append({"type": "text", "content": part.text})
            elif isinstance(part, ImagePart) and part.url is not None:
                parts.append({"type": "uri", "modality": "image", "uri": part.url})
            elif isinstance(part, ImagePart):
                parts.append({"type": "blob", "modality": "image", "mime_type": part.media_type})
            elif isinstance(part, AudioPart):
                parts.append({"type": "blob", "modality": "audio", "mime_type": part.format})
            else:
                parts.append(
                    {"type": "file", "mime_type": part.media_type, "file_id": part.file_id}
                )
    parts += [
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
        for c in message.tool_calls
    ]
    return parts


def _input_content(request: ChatRequest) -> dict[str, str]:
    """``gen_ai.system_instructions`` and ``gen_ai.input.messages`` as JSON strings (span
    attributes cannot hold structures)."""
    instructions = [
        {"type": "text", "content": m.text}
        for m in request.messages
        if m.role in _INSTRUCTION_ROLES
    ]
    messages = [
        {"role": m.role, "parts": _parts(m)}
        for m in request.messages
        if m.role not in _INSTRUCTION_ROLES
    ]
    content = {"gen_ai.input.messages": json.dumps(messages, ensure_ascii=False)}
    if instructions:
        content["gen_ai.system_instructions"] = json.dumps(instructions, ensure_ascii=False)
    return content


def _output_content(completion: Completion) -> str:
    parts: list[dict[str, Any]] = []
    if completion.text:
        parts.append({"type": "text", "content": completion.text})
    for call in completion.tool_calls:
        function = call.get("function") or {}
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments"),
            }
        )
    message: dict[str, Any] = {"role": "assistant", "parts": parts}
    if completion.finish_reason:
        message["finish_reason"] = completion.finish_reason
    return json.dumps([message], ensure_ascii=False)
