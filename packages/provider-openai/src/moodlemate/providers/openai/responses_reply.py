"""Replies of OpenAI's Responses API, whole or streamed, as the core's Completion.

A Response lists ``output`` items: ``message`` (its ``output_text`` parts are the answer, a
``refusal`` part a refusal), ``function_call`` (a tool call, turned into the chat shape every
other layer reads), ``reasoning`` (its ``summary`` texts are the reasoning, kept apart from the
answer). ``status`` says how it ended: ``incomplete`` for ``max_output_tokens`` reads as the
chat API's ``finish_reason: "length"``, ``failed`` raises the error it carries. Usage comes
from ``input_tokens`` (with ``cached_tokens``) and ``output_tokens`` (with ``reasoning_tokens``).

A stream is a sequence of typed events (``response.output_text.delta``,
``response.reasoning_summary_text.delta``, ``response.function_call_arguments.delta``, ...)
ending in ``response.completed`` (or ``response.incomplete``), which carries the whole Response;
``response.failed`` and ``error`` events raise typed errors. The SSE framing and its size bounds
are the chat stream's (:class:`~.streaming.ChunkReader`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from moodlemate.ai.plugin import (
    Completion,
    MalformedResponseError,
    Usage,
    bounds,
    json_loads,
    rate_limits_from_headers,
)
from moodlemate.providers.openai.responses import (
    RESPONSES_USAGE_KEYS,
    decimal_or_none,
    error_in_body,
    text_or,
    tier_of,
    usage_from,
)
from moodlemate.providers.openai.streaming import ChunkReader

__all__ = ["ResponsesEventReader", "parse_response", "usage_of"]


def parse_response(
    content: bytes, headers: Mapping[str, str], *, provider: str, model: str
) -> Completion:
    """A whole Response body as a Completion (or the typed error it carries)."""
    request_id = headers.get("x-request-id")
    try:
        data = json_loads(content)
    except (ValueError, RecursionError):
        raise MalformedResponseError(
            f"response body is not valid JSON ({len(content)} bytes)",
            provider=provider,
            model=model,
            request_id=request_id,
        ) from None
    if not isinstance(data, dict):
        raise MalformedResponseError(
            "response body is not a JSON object",
            provider=provider,
            model=model,
            request_id=request_id,
        )
    return completion_of(data, headers, provider=provider, model=model)


def completion_of(
    data: Mapping[str, Any], headers: Mapping[str, str], *, provider: str, model: str
) -> Completion:
    request_id = headers.get("x-request-id")
    error = data.get("error")
    status = data.get("status")
    if error and (status == "failed" or not data.get("output")):
        raise error_in_body(error, headers, provider=provider, model=model)
    output = data.get("output")
    if not isinstance(output, list):
        raise MalformedResponseError(
            "response has no output list", provider=provider, model=model, request_id=request_id
        )
    texts: list[str] = []
    refusals: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in output:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    refusals.append(part["refusal"])
        elif kind == "function_call":
            calls.append(_chat_call(item))
        elif kind == "reasoning":
            reasoning.extend(_summary_texts(item))
    usage = data.get("usage")
    return Completion(
        text="".join(texts),
        model=text_or(data.get("model"), model),
        provider=provider,
        finish_reason=_finish_reason(data, bool(calls)),
        usage=usage_of(usage),
        request_id=request_id or text_or(data.get("id"), "") or None,
        reported_cost=decimal_or_none(_dict(usage).get("cost")),
        usage_reported=isinstance(usage, dict),
        refusal="".join(refusals) or None,
        tool_calls=tuple(calls),
        rate_limits=rate_limits_from_headers(headers),
        reasoning="\n\n".join(reasoning) or None,
        response_id=text_or(data.get("id"), "") or None,
        service_tier=tier_of(data.get("service_tier")),
    )


def usage_of(raw: Any) -> Usage:
    """The Responses usage object in the core's terms, read as a chat one is."""
    return usage_from(raw, RESPONSES_USAGE_KEYS)


def _finish_reason(data: Mapping[str, Any], called: bool) -> str | None:
    status = data.get("status")
    if status == "incomplete":
        reason = _dict(data.get("incomplete_details")).get("reason")
        return "length" if reason == "max_output_tokens" else text_or(reason, "incomplete")
    if status == "completed":
        return "tool_calls" if called else "stop"
    return text_or(status, "") or None


def _chat_call(item: Mapping[str, Any]) -> dict[str, Any]:
    """A ``function_call`` item in the chat API's tool-call shape."""
    return {
        "id": text_or(item.get("call_id"), "") or text_or(item.get("id"), ""),
        "type": "function",
        "function": {
            "name": text_or(item.get("name"), ""),
            "arguments": text_or(item.get("arguments"), ""),
        },
    }


def _summary_texts(item: Mapping[str, Any]) -> list[str]:
    found = []
    for part in item.get("summary") or ():
        if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
            found.append(part["text"])
    return found


class ResponsesEventReader(ChunkReader):
    """The Responses event stream: text deltas out, reasoning and tool calls collected, the
    final Response (from ``response.completed``) as the Completion, its text the text that was
    streamed; events after it are ignored."""

    __slots__ = ("_final", "_reasoning_parts")

    def __init__(
        self,
        headers: Any,
        *,
        provider: str,
        model: str,
        max_event_bytes: int = bounds.DEFAULT_LIMITS.max_event_bytes,
    ) -> None:
        super().__init__(headers, provider=provider, model=model, max_event_bytes=max_event_bytes)
        self._final: Completion | None = None
        self._reasoning_parts: list[str] = []

    def _chunk(self, data: str) -> str | None:
        if self._final is not None:  # the Response is whole: what follows is not part of it
            return None
        try:
            event = json_loads(data)
        except (ValueError, RecursionError):
            event = None
        if not isinstance(event, dict):
            raise MalformedResponseError(
                f"stream event is not a JSON object ({len(data)} characters)",
                provider=self._provider,
                model=self._requested_model,
                request_id=self._id,
            )
        kind = event.get("type")
        if kind == "response.output_text.delta":
            delta = event.get("delta")
            if isinstance(delta, str) and delta:
                self._parts.append(delta)
                return delta
            return None
        if kind == "response.reasoning_summary_text.delta":
            delta = event.get("delta")
            if isinstance(delta, str):
                self._reasoning_parts.append(delta)
            return None
        if kind == "response.reasoning_summary_part.done" and self._reasoning_parts:
            self._reasoning_parts.append("\n\n")
            return None
        if kind == "response.refusal.delta":
            delta = event.get("delta")
            if isinstance(delta, str):
                self._refusal.append(delta)
            return None
        if kind in ("response.completed", "response.incomplete"):
            response = event.get("response")
            if not isinstance(response, dict):
                raise self._malformed(f"{kind} event without its response")
            self._final = completion_of(
                response, self._headers, provider=self._provider, model=self._requested_model
            )
            self._done = True
            return None
        if kind == "response.failed":
            response = _dict(event.get("response"))
            error = response.get("error") or {"message": "the response failed"}
            raise error_in_body(
                error, self._headers, provider=self._provider, model=self._requested_model
            )
        if kind == "error":
            error = event.get("error") if isinstance(event.get("error"), dict) else event
            raise error_in_body(
                error, self._headers, provider=self._provider, model=self._requested_model
            )
        return None

    def completion(self) -> Completion:
        if self._final is None:
            raise self._malformed("stream ended before the response did (no response.completed)")
        final = self._final
        streamed = "".join(self._parts)
        if streamed and streamed != final.text:
            # What the user was shown is the answer (and what the stream's bounds checked),
            # whatever the closing event restates.
            final = replace(final, text=streamed)
        streamed_reasoning = "".join(self._reasoning_parts).strip()
        if final.reasoning is None and streamed_reasoning:
            final = replace(final, reasoning=streamed_reasoning)
        return final

    def _malformed(self, message: str) -> MalformedResponseError:
        return MalformedResponseError(
            message, provider=self._provider, model=self._requested_model, request_id=self._id
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
