"""The request body of OpenAI's Responses API (``POST /v1/responses``) for a chat request.

The same conversation the chat API takes as ``messages`` goes as ``input`` items: text and
parts in role messages (``input_text``, ``input_image``, ``input_file``), an assistant's tool
calls as ``function_call`` items and their results as ``function_call_output`` items. Options
move to their Responses names: ``max_output_tokens``, ``text.format`` for a response format,
``reasoning.effort``, function tools without the ``function`` wrapper. A call is stateless
unless the user asks otherwise (``store: false``), so a conversation never depends on state
kept by the server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from moodlemate.ai.plugin import (
    AudioPart,
    ChatRequest,
    FilePart,
    ImagePart,
    Message,
    Part,
    TextPart,
    UnsupportedInputError,
    data_url,
)

__all__ = ["MIN_OUTPUT_TOKENS", "responses_body"]

log = logging.getLogger("moodlemate.ai")

MIN_OUTPUT_TOKENS = 16
"""The smallest ``max_output_tokens`` the Responses API takes."""

_noted: set[tuple[str, str]] = set()
_noted_lock = threading.Lock()


def responses_body(request: ChatRequest, reasoning: bool) -> dict[str, Any]:
    """The JSON body of /responses for ``request``; ``reasoning`` models take no temperature
    but 1."""
    body: dict[str, Any] = {"model": request.model, "input": _input(request.messages)}
    if request.temperature is not None:
        if not reasoning or request.temperature == 1:
            body["temperature"] = request.temperature
        else:
            _note_once(
                request.model,
                "temperature",
                f"reasoning model accepts only temperature 1; sending none instead of "
                f"{request.temperature:g}",
            )
    if request.max_tokens is not None:
        if request.max_tokens < MIN_OUTPUT_TOKENS:
            _note_once(
                request.model,
                "max_output_tokens",
                f"the Responses API takes max_output_tokens of at least {MIN_OUTPUT_TOKENS}; "
                f"sending {MIN_OUTPUT_TOKENS} for {request.max_tokens}",
            )
        body["max_output_tokens"] = max(request.max_tokens, MIN_OUTPUT_TOKENS)
    body.update(_options(request.options.named()))
    body.setdefault("store", False)
    if request.stream:
        body["stream"] = True
    if request.extra:
        body.update(_moved(dict(request.extra)))
    return body


def _input(messages: Iterable[Message]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id,
                    "output": message.text,
                }
            )
            continue
        if message.role == "assistant":
            if message.text:
                items.append({"role": "assistant", "content": message.text})
            items.extend(
                {
                    "type": "function_call",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
                for call in message.tool_calls
            )
            continue
        content = message.content
        if isinstance(content, str):
            items.append({"role": message.role, "content": content})
        else:
            items.append({"role": message.role, "content": [_part(p) for p in content]})
    return items


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, ImagePart):
        url = part.url or data_url(part.media_type or "", part.data or b"")
        return {"type": "input_image", "image_url": url, "detail": part.detail}
    if isinstance(part, FilePart):
        if part.file_id is not None:
            return {"type": "input_file", "file_id": part.file_id}
        return {
            "type": "input_file",
            "filename": part.filename or "document.pdf",
            "file_data": data_url(part.media_type or "application/pdf", part.data or b""),
        }
    if isinstance(part, AudioPart):
        raise UnsupportedInputError(
            "the Responses API takes no input audio parts; send audio to a chat-completions "
            "audio model (api='chat')"
        )
    raise UnsupportedInputError(f"cannot send a {type(part).__name__} to the Responses API")


def _options(named: Mapping[str, Any]) -> dict[str, Any]:
    """The named chat options under their Responses names."""
    out: dict[str, Any] = {}
    for key, value in named.items():
        if key == "tools":
            out["tools"] = [_tool(tool) for tool in value]
        elif key == "tool_choice":
            out["tool_choice"] = _tool_choice(value)
        elif key == "response_format":
            out["text"] = {"format": _text_format(value)}
        elif key == "reasoning_effort":
            out.setdefault("reasoning", {})["effort"] = value
        elif key == "reasoning_summary":
            out.setdefault("reasoning", {})["summary"] = value
        elif key == "api":
            continue  # which API, not a field of it
        elif key in ("stop", "seed", "logit_bias", "presence_penalty", "frequency_penalty"):
            raise UnsupportedInputError(
                f"the Responses API has no {key!r}; leave it out, or use api='chat'"
            )
        elif key in ("modalities", "audio"):
            raise UnsupportedInputError("the Responses API takes no audio output options")
        else:
            out[key] = value
    return out


def _moved(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` fields written for the chat API, moved to their Responses names."""
    if "response_format" in extra:
        extra.setdefault("text", {})["format"] = _text_format(extra.pop("response_format"))
    if "max_completion_tokens" in extra:
        extra["max_output_tokens"] = extra.pop("max_completion_tokens")
    if "reasoning_effort" in extra:
        extra.setdefault("reasoning", {})["effort"] = extra.pop("reasoning_effort")
    return extra


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, Mapping):
        return dict(tool)  # a built-in tool (web_search...) is already in Responses shape
    flat: dict[str, Any] = {"type": "function", "name": function.get("name")}
    for key in ("description", "parameters", "strict"):
        if key in function:
            flat[key] = function[key]
    return flat


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
        return {"type": "function", "name": name}
    return choice


def _text_format(response_format: Any) -> Any:
    if not isinstance(response_format, Mapping):
        return response_format
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        if isinstance(spec, Mapping):
            return {"type": "json_schema", **spec}
    return dict(response_format)


def _note_once(model: str, what: str, message: str) -> None:
    with _noted_lock:
        if (model, what) in _noted:
            return
        _noted.add((model, what))
    log.info("%s: %s", model, message)
