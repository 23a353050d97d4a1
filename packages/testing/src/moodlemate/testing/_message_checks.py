"""The checks the real API makes on a chat request's messages and options, with its 400s.

Shapes (roles, content parts and where each may appear, tool-call ids answered in order) are
checked always, as OpenAI always checks them; the per-model rules (images, audio, tools,
the options reasoning models refuse) only in strict mode, from the provider's own
:mod:`moodlemate.providers.openai.models`, so the server and the client cannot drift apart.
Each problem is ``(message, param, code)``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from moodlemate.providers.openai.models import REASONING_REJECTS, ModelRules

__all__ = ["message_problem", "model_problem"]

Problem = tuple[str, str | None, str | None]
_ROLES = ("system", "developer", "user", "assistant", "tool")
_PARTS_BY_ROLE = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
}
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def message_problem(messages: list[Any]) -> Problem | None:
    pending: dict[str, int] = {}
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return (
                f"Invalid type for 'messages[{i}]': expected an object.",
                f"messages[{i}]",
                "invalid_type",
            )
        role = message.get("role")
        if role not in _ROLES:
            return (
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"messages[{i}].role",
                "invalid_value",
            )
        if pending and role != "tool":
            return _unanswered(pending)
        content = message.get("content")
        if content is None and not (
            role == "assistant" and (message.get("tool_calls") or message.get("refusal"))
        ):
            return (
                "Invalid value for 'content': expected a string, got null.",
                f"messages.[{i}].content",
                None,
            )
        if isinstance(content, list):
            problem = _parts_problem(i, role, content)
            if problem is not None:
                return problem
        elif content is not None and not isinstance(content, str):
            return (
                f"Invalid type for 'messages[{i}].content': expected one of a string or an "
                "array of objects.",
                f"messages[{i}].content",
                "invalid_type",
            )
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                return (
                    "Missing parameter 'tool_call_id': messages with role 'tool' must have a "
                    "'tool_call_id'.",
                    f"messages.[{i}].tool_call_id",
                    None,
                )
            if call_id not in pending:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                    None,
                )
            del pending[call_id]
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant" or not isinstance(calls, list):
                return (f"Invalid 'messages[{i}].tool_calls'.", f"messages[{i}].tool_calls", None)
            for call in calls:
                call_id = call.get("id") if isinstance(call, dict) else None
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(call_id, str) or not isinstance(function, dict):
                    return (
                        f"Invalid 'messages[{i}].tool_calls'.",
                        f"messages[{i}].tool_calls",
                        None,
                    )
                pending[call_id] = i
    if pending:
        return _unanswered(pending)
    return None


def _unanswered(pending: dict[str, int]) -> Problem:
    first = min(pending.values())
    ids = ", ".join(k for k, v in pending.items() if v == first)
    return (
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        f"to each 'tool_call_id'. The following tool_call_ids did not have response "
        f"messages: {ids}",
        f"messages.[{first}].role",
        None,
    )


def _parts_problem(i: int, role: str, parts: list[Any]) -> Problem | None:
    allowed = _PARTS_BY_ROLE[role]
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"messages[{i}].content[{j}]"
        if kind == "image_url" and role != "user":
            return (
                f"Invalid 'messages[{i}]'. Image URLs are only allowed for messages with role "
                f"'user', but this message with role '{role}' contains an image URL.",
                f"messages[{i}]",
                "invalid_value",
            )
        if kind not in allowed:
            supported = ", ".join(f"'{a}'" for a in allowed)
            return (
                f"Invalid value: '{kind}'. Supported values are: {supported}.",
                f"{where}.type",
                "invalid_value",
            )
        problem = _PART_CHECKS[kind](part.get(kind), part)
        if problem is not None:
            return (problem, f"{where}.{kind}", "invalid_value")
    return None


def _text_problem(_: object, part: dict[str, Any]) -> str | None:
    return None if isinstance(part.get("text"), str) else "Missing required parameter: 'text'."


def _image_problem(body: object, _: dict[str, Any]) -> str | None:
    if not isinstance(body, dict):
        body = {}
    url = body.get("url")
    if not isinstance(url, str) or not _image_url_ok(url):
        return (
            "Invalid image URL: the URL must be http(s) or a base64 data: URL of a PNG, JPEG, "
            "GIF or WEBP image."
        )
    if body.get("detail", "auto") not in ("auto", "low", "high"):
        return "Invalid value for 'detail': expected one of 'auto', 'low' or 'high'."
    return None


def _audio_problem(body: object, _: dict[str, Any]) -> str | None:
    if (
        isinstance(body, dict)
        and body.get("format") in ("wav", "mp3")
        and _base64(body.get("data"))
    ):
        return None
    return "Invalid input audio: give base64 data and format 'wav' or 'mp3'."


def _file_problem(body: object, _: dict[str, Any]) -> str | None:
    if isinstance(body, dict) and (body.get("file_id") or body.get("file_data")):
        return None
    return "Missing required parameter: 'file.file_data' or 'file.file_id'."


def _refusal_problem(_: object, part: dict[str, Any]) -> str | None:
    return None if isinstance(part.get("refusal"), str) else "Missing 'refusal'."


_PART_CHECKS = {
    "text": _text_problem,
    "image_url": _image_problem,
    "input_audio": _audio_problem,
    "file": _file_problem,
    "refusal": _refusal_problem,
}


def _image_url_ok(url: str) -> bool:
    if url.startswith(("https://", "http://")):
        return True
    head, comma, payload = url.partition(",")
    if not comma or not head.startswith("data:") or not head.endswith(";base64"):
        return False
    return head[5:-7] in _IMAGE_TYPES and _base64(payload)


def _base64(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def model_problem(body: dict[str, Any], rules: ModelRules) -> Problem | None:
    """What the model named in ``body`` refuses, by the provider's rules."""
    for i, message in enumerate(body["messages"]):
        content = message.get("content")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            kind = part.get("type")
            if kind in ("image_url", "file") and not rules.images:
                return (
                    f"Invalid content type. {kind} is only supported by certain models.",
                    f"messages.[{i}].content.[{j}].type",
                    "invalid_value",
                )
            if kind == "input_audio" and not rules.audio:
                return (
                    "Invalid content type. input_audio is only supported by certain models.",
                    f"messages.[{i}].content.[{j}].type",
                    "invalid_value",
                )
    rejected: tuple[str, ...] = REASONING_REJECTS if rules.reasoning else ()
    if rules.known and not rules.reasoning:
        rejected += ("reasoning_effort",)
    if not rules.tools:
        rejected += ("tools", "tool_choice", "parallel_tool_calls", "response_format")
    for name in rejected:
        if body.get(name) is not None:
            return (
                f"Unsupported parameter: '{name}' is not supported with this model.",
                name,
                "unsupported_parameter",
            )
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities and not rules.audio:
        return (
            "This model does not support the audio modality.",
            "modalities",
            "unsupported_value",
        )
    return None
