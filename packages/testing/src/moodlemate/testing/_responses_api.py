"""OpenAI's Responses API (``POST /v1/responses``) on the test server, whole and streamed.

The server scripts one set of replies for both APIs: a Responses request is read as the chat
request it amounts to (its ``input`` items as messages, ``text.format`` as ``response_format``,
flat function tools as chat tools), so ``Reply`` defaults, responders, unscripted typed answers
and tool calls work the same, and the answer is written back in the Responses shape: ``output``
items (``reasoning`` when the Reply has ``reasoning``: its summary only when the request asks
for one with ``reasoning.summary``, as OpenAI answers, else an empty summary; ``message`` with
``output_text`` or ``refusal``, ``function_call``), ``status`` (``incomplete`` with
``max_output_tokens`` for a Reply whose ``finish_reason`` is ``length``) and the Responses usage
object. A stream is the event sequence the API sends, ending in ``response.completed``;
``Fault.response_failed`` ends it in ``response.failed`` instead (or answers a whole request
with a failed Response).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from moodlemate.providers.openai.models import routed_rules_for
from moodlemate.providers.openai.strict_schema import strict_violations

__all__ = [
    "chat_view",
    "failed_events",
    "failed_response",
    "problem",
    "response_events",
    "response_object",
]

JSONObject = dict[str, Any]
MIN_OUTPUT_TOKENS = 16


def problem(body: Any, had_body: bool, strict: bool) -> tuple[str, str | None, str | None] | None:
    """The API's 400 for a request it would refuse, as (message, param, code); None if fine."""
    if not isinstance(body, dict):
        if not had_body:
            return ("Missing required parameter: 'model'.", "model", "missing_required_parameter")
        return ("We could not parse the JSON body of your request.", None, None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return ("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    items = body.get("input")
    if not isinstance(items, str | list) or not items:
        return ("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < MIN_OUTPUT_TOKENS):
        return (
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{MIN_OUTPUT_TOKENS}, but got {json.dumps(limit)} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    for forbidden in ("messages", "max_tokens", "max_completion_tokens", "response_format"):
        if forbidden in body:
            return (f"Unsupported parameter: '{forbidden}'.", forbidden, "unsupported_parameter")
    if not strict:
        return None
    temperature = body.get("temperature")
    if routed_rules_for(model).reasoning and temperature not in (None, 1):
        return (
            "Unsupported parameter: 'temperature' is not supported with this model.",
            "temperature",
            "unsupported_parameter",
        )
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and fmt.get("strict") is True:
        found = strict_violations(fmt.get("schema") or {})
        if found:
            return (
                f"Invalid schema for response_format '{fmt.get('name')}': {found[0]}",
                "text.format.schema",
                "invalid_json_schema",
            )
    return None


def chat_view(body: Mapping[str, Any]) -> JSONObject:
    """The chat request a Responses request amounts to (for scripting and defaults)."""
    items = body.get("input")
    messages: list[JSONObject] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")}
            )
        elif kind == "function_call":
            messages.append(
                {"role": "assistant", "content": None, "tool_calls": [_chat_call(item)]}
            )
        elif "role" in item:
            messages.append({"role": item["role"], "content": _chat_content(item.get("content"))})
    view: JSONObject = {"model": body.get("model"), "messages": messages}
    if isinstance(body.get("service_tier"), str):
        view["service_tier"] = body["service_tier"]
    tools = body.get("tools")
    if isinstance(tools, list):
        view["tools"] = [_chat_tool(t) for t in tools if isinstance(t, dict)]
    if body.get("tool_choice") is not None:
        view["tool_choice"] = body["tool_choice"]
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            spec = {k: v for k, v in fmt.items() if k != "type"}
            view["response_format"] = {"type": "json_schema", "json_schema": spec}
        else:
            view["response_format"] = dict(fmt)
    return view


def response_object(done: Any, body: Mapping[str, Any], reasoning: str | None) -> JSONObject:
    """The Response for a resolved reply (``_Completion``) to ``body``."""
    incomplete = done.finish_reason == "length"
    return {
        "id": done.id.replace("chatcmpl-", "resp_"),
        "object": "response",
        "created_at": done.created,
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "error": None,
        "model": done.model,
        "output": _output(done, reasoning if summary_asked(body) else None, bool(reasoning)),
        "usage": _usage(done.usage),
        "store": body.get("store", True),
        "previous_response_id": body.get("previous_response_id"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "text": body.get("text") or {"format": {"type": "text"}},
        "reasoning": body.get("reasoning"),
        "max_output_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "metadata": body.get("metadata") or {},
        "instructions": body.get("instructions"),
        **({"user": body["user"]} if isinstance(body.get("user"), str) else {}),
        **({"service_tier": done.service_tier} if done.service_tier is not None else {}),
    }


def response_events(done: Any, body: Mapping[str, Any], reasoning: str | None) -> list[bytes]:
    """The event stream for a resolved reply, ending in ``response.completed`` (or
    ``response.incomplete``)."""
    final = response_object(done, body, reasoning)
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[JSONObject] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    for index, item in enumerate(final["output"]):
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        if item["type"] == "reasoning":
            for part in item["summary"]:
                for piece in _pieces(part["text"]):
                    events.append(
                        {
                            "type": "response.reasoning_summary_text.delta",
                            "item_id": item["id"],
                            "output_index": index,
                            "summary_index": 0,
                            "delta": piece,
                        }
                    )
                events.append(
                    {
                        "type": "response.reasoning_summary_part.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "summary_index": 0,
                        "part": part,
                    }
                )
        elif item["type"] == "message":
            for content_index, part in enumerate(item["content"]):
                kind = (
                    "response.output_text.delta"
                    if part["type"] == "output_text"
                    else ("response.refusal.delta")
                )
                text = part.get("text", part.get("refusal", ""))
                pieces = done.chunks if part["type"] == "output_text" else _pieces(text)
                for piece in pieces:
                    events.append(
                        {
                            "type": kind,
                            "item_id": item["id"],
                            "output_index": index,
                            "content_index": content_index,
                            "delta": piece,
                        }
                    )
        elif item["type"] == "function_call":
            for piece in _pieces(item["arguments"]):
                events.append(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "delta": piece,
                    }
                )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    ending = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append({"type": ending, "response": final})
    return [_sse(event, number) for number, event in enumerate(events)]


def failed_response(body: Mapping[str, Any], code: str, message: str) -> JSONObject:
    """A whole Response that failed (HTTP 200, ``status: failed``)."""
    return {
        "id": f"resp_failed{int(time.time() * 1000)}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "failed",
        "error": {"code": code, "message": message},
        "incomplete_details": None,
        "model": body.get("model"),
        "output": [],
        "usage": None,
    }


def failed_events(
    body: Mapping[str, Any], code: str, message: str, *, as_error: bool
) -> list[bytes]:
    """A stream that starts and then fails: ``response.failed`` (or a bare ``error`` event)."""
    failed = failed_response(body, code, message)
    started = {**failed, "status": "in_progress", "error": None}
    ending: JSONObject = (
        {"type": "error", "code": code, "message": message, "param": None}
        if as_error
        else {"type": "response.failed", "response": failed}
    )
    events = [{"type": "response.created", "response": started}, ending]
    return [_sse(event, number) for number, event in enumerate(events)]


def summary_asked(body: Mapping[str, Any]) -> bool:
    """Whether the request asks for a reasoning summary (``reasoning.summary`` set): OpenAI
    sends summary text only then."""
    reasoning = body.get("reasoning")
    return isinstance(reasoning, dict) and reasoning.get("summary") is not None


def _output(done: Any, summary: str | None, reasoned: bool) -> list[JSONObject]:
    output: list[JSONObject] = []
    stem = done.id.removeprefix("chatcmpl-")[:24]
    if reasoned:
        # A reasoning model's output always opens with its reasoning item; the summary is
        # empty unless one was asked for.
        parts = [{"type": "summary_text", "text": summary}] if summary else []
        output.append({"type": "reasoning", "id": f"rs_{stem}", "summary": parts})
    if done.text or done.refusal or not done.tool_calls:
        content: list[JSONObject] = []
        if done.text or not done.refusal:
            content.append(
                {"type": "output_text", "text": done.text, "annotations": [], "logprobs": []}
            )
        if done.refusal:
            content.append({"type": "refusal", "refusal": done.refusal})
        output.append(
            {
                "type": "message",
                "id": f"msg_{stem}",
                "status": "completed",
                "role": "assistant",
                "content": content,
            }
        )
    for number, call in enumerate(done.tool_calls):
        function = call.get("function") or {}
        output.append(
            {
                "type": "function_call",
                "id": f"fc_{stem}_{number}",
                "call_id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments", ""),
                "status": "completed",
            }
        )
    return output


def _usage(chat: Mapping[str, Any] | None) -> JSONObject | None:
    if chat is None:
        return None
    prompt_details = chat.get("prompt_tokens_details") or {}
    completion_details = chat.get("completion_tokens_details") or {}
    input_details: JSONObject = {
        "cached_tokens": prompt_details.get("cached_tokens", 0),
        "cache_write_tokens": prompt_details.get("cache_write_tokens", 0),
    }
    output_details: JSONObject = {"reasoning_tokens": completion_details.get("reasoning_tokens", 0)}
    # Audio and image counts only where the reply has them (the text models' usage has none).
    for details, source, key in (
        (input_details, prompt_details, "audio_tokens"),
        (input_details, prompt_details, "image_tokens"),
        (output_details, completion_details, "audio_tokens"),
    ):
        if source.get(key):
            details[key] = source[key]
    usage: JSONObject = {
        "input_tokens": chat.get("prompt_tokens", 0),
        "input_tokens_details": input_details,
        "output_tokens": chat.get("completion_tokens", 0),
        "output_tokens_details": output_details,
        "total_tokens": chat.get("total_tokens", 0),
    }
    if "cost" in chat:
        usage["cost"] = chat["cost"]
    return usage


def _chat_call(item: Mapping[str, Any]) -> JSONObject:
    return {
        "id": item.get("call_id"),
        "type": "function",
        "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
    }


def _chat_tool(tool: Mapping[str, Any]) -> JSONObject:
    if tool.get("type") != "function":
        return dict(tool)
    function = {k: v for k, v in tool.items() if k != "type"}
    return {"type": "function", "function": function}


def _chat_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text"):
            parts.append({"type": "text", "text": part.get("text", "")})
    return parts


def _pieces(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _sse(event: JSONObject, number: int) -> bytes:
    payload = json.dumps({**event, "sequence_number": number}, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {payload}\n\n".encode()
