"""Messages as OpenAI-shaped dicts: read from what users copy out of the documentation, and
written for saved conversations and batch files.

Reading accepts the chat-completions shapes (``text``, ``image_url``, ``input_audio`` and
``file`` parts; ``tool`` turns with ``tool_call_id``; assistant turns with ``tool_calls``)
and turns them into the same :mod:`moodlemate.ai._messages` values a user builds by hand, so
both are checked the same way. Writing can keep a part read from a local file as a
reference (``image_path``, ``file_path``, ``audio_path``: this library's own part types)
instead of inlining its bytes; reading such a reference reads and checks the file again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from moodlemate.ai import _media
from moodlemate.ai._error_base import ValidationError
from moodlemate.ai._messages import (
    AudioPart,
    FilePart,
    ImagePart,
    Message,
    Part,
    TextPart,
    ToolCall,
)

__all__ = ["message_from", "message_record", "message_to_dict", "messages_from", "part_from"]

_ROLES = ("system", "developer", "user", "assistant", "tool")
_IGNORED = frozenset({"annotations", "audio", "function_call", "reasoning_content"})
"""Keys an assistant message copied from a reply may carry that a request does not need."""


def messages_from(values: object, what: str = "messages") -> tuple[Message, ...]:
    """A sequence of Message values or OpenAI-shaped dicts as Message values."""
    items: Iterable[Any]
    if type(values) is list or type(values) is tuple:
        items = values  # skips the two abstract-class checks below: a microsecond a call
    elif isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise ValidationError(f"{what} must be a list of messages, not {type(values).__name__}")
    else:
        items = values
    return tuple(
        value
        if type(value) is Message and not isinstance(value.content, list)
        else message_from(value, f"{what}[{i}]")
        for i, value in enumerate(items)
    )


def message_from(value: object, what: str = "message") -> Message:
    if isinstance(value, Message):
        if isinstance(value.content, list):  # built by hand with a list: keep it frozen
            return Message(
                value.role,
                tuple(part_from(p, f"{what}.content[{i}]") for i, p in enumerate(value.content)),
                value.name,
                value.tool_call_id,
                tuple(value.tool_calls),
                value.refusal,
            )
        return value
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{what} must be a Message or a dict with role and content, not {type(value).__name__}"
        )
    unknown = [k for k in value if k not in _FIELDS and not (k in _IGNORED or value[k] is None)]
    if unknown:
        raise ValidationError(f"{what} has unknown field {unknown[0]!r}")
    role = value.get("role")
    if role not in _ROLES:
        raise ValidationError(f"{what}.role must be one of {', '.join(_ROLES)}, not {role!r}")
    raw = value.get("content")
    tool_calls = _tool_calls(value.get("tool_calls"), what)
    if raw is None and (tool_calls or value.get("refusal") is not None):
        content: str | tuple[Part, ...] = ""
    elif isinstance(raw, str):
        content = raw
    elif isinstance(raw, list | tuple):
        content = tuple(part_from(p, f"{what}.content[{i}]") for i, p in enumerate(raw))
    else:
        raise ValidationError(
            f"{what}.content must be a string or a list of parts, not {type(raw).__name__}"
        )
    return Message(
        role,
        content,
        name=_optional_text(value.get("name"), f"{what}.name"),
        tool_call_id=_optional_text(value.get("tool_call_id"), f"{what}.tool_call_id"),
        tool_calls=tool_calls,
        refusal=_optional_text(value.get("refusal"), f"{what}.refusal"),
    )


_FIELDS = frozenset({"role", "content", "name", "tool_call_id", "tool_calls", "refusal"})


def part_from(value: object, what: str) -> Part:
    if isinstance(value, TextPart | ImagePart | FilePart | AudioPart):
        return value
    if isinstance(value, str):
        return TextPart(value)
    if not isinstance(value, Mapping):
        raise ValidationError(f"{what} must be a part or a dict, not {type(value).__name__}")
    kind = value.get("type")
    if kind == "text":
        return TextPart(_text(value.get("text"), f"{what}.text"))
    if kind == "image_url":
        image = value.get("image_url")
        if isinstance(image, str):
            image = {"url": image}
        if not isinstance(image, Mapping):
            raise ValidationError(f"{what}.image_url must be an object with url")
        return ImagePart(_text(image.get("url"), f"{what}.image_url.url"), _detail(image, what))
    if kind == "input_audio":
        audio = value.get("input_audio")
        if not isinstance(audio, Mapping):
            raise ValidationError(f"{what}.input_audio must be an object with data and format")
        data = _media.decode_base64(_text(audio.get("data"), f"{what}.input_audio.data"), what)
        part = AudioPart(data)
        declared = audio.get("format")
        if declared not in ("wav", "mp3"):
            raise ValidationError(f"{what}.input_audio.format must be wav or mp3, not {declared!r}")
        if declared != part.format:
            raise ValidationError(f"{what}: input_audio says {declared} but holds {part.format}")
        return part
    if kind == "file":
        file = value.get("file")
        if not isinstance(file, Mapping):
            raise ValidationError(f"{what}.file must be an object with file_data or file_id")
        filename = _optional_text(file.get("filename"), f"{what}.file.filename")
        file_id = _optional_text(file.get("file_id"), f"{what}.file.file_id")
        encoded = _optional_text(file.get("file_data"), f"{what}.file.file_data")
        if file_id is not None and encoded is not None:
            raise ValidationError(f"{what}.file takes file_data or file_id, not both")
        if file_id is not None:
            return FilePart(file_id=file_id, filename=filename)
        if encoded is None:
            raise ValidationError(f"{what}.file needs file_data or file_id")
        if encoded.startswith("data:"):
            return FilePart(encoded, filename=filename)
        return FilePart(_media.decode_base64(encoded, what), filename=filename)
    if kind == "image_path":
        return ImagePart(_text(value.get("path"), f"{what}.path"), _detail(value, what))
    if kind == "file_path":
        path = _text(value.get("path"), f"{what}.path")
        return FilePart(path, filename=_optional_text(value.get("filename"), f"{what}.filename"))
    if kind == "audio_path":
        return AudioPart(_text(value.get("path"), f"{what}.path"))
    raise ValidationError(f"{what}.type must be text, image_url, input_audio or file, not {kind!r}")


def message_to_dict(message: Message, *, inline: bool = True) -> dict[str, Any]:
    """``message`` as an OpenAI-shaped dict; with ``inline=False`` a part read from a local
    file is written as a reference to that file instead of its bytes."""
    out: dict[str, Any] = {"role": message.role}
    content = message.content
    if isinstance(content, str):
        out["content"] = None if not content and message.tool_calls else content
    else:
        out["content"] = [_part_dict(part, inline) for part in content]
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.refusal is not None:
        out["refusal"] = message.refusal
    return out


def message_record(message: Message) -> dict[str, Any]:
    """``message`` for a log row or a span: as :func:`message_to_dict`, but an inline image,
    file or audio clip is described (type and size), never copied."""
    if isinstance(message.content, str):
        return message_to_dict(message)
    out = message_to_dict(replace(message, content=()))
    out["content"] = [_part_record(part) for part in message.content]
    return out


def _part_record(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart) and part.url is not None:
        return {"type": "image_url", "image_url": {"url": part.url, "detail": part.detail}}
    if isinstance(part, FilePart) and part.file_id is not None:
        return {"type": "file", "file": {"file_id": part.file_id}}
    kind = {ImagePart: "image", FilePart: "file", AudioPart: "audio"}[type(part)]
    media_type = part.media_type if isinstance(part, ImagePart | FilePart) else part.format
    return {"type": kind, "media_type": media_type, "bytes": len(part.data or b"")}


def _part_dict(part: Part, inline: bool) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        if not inline and part.path is not None:
            return {"type": "image_path", "path": part.path, "detail": part.detail}
        url = part.url or _media.data_url(part.media_type or "", part.data or b"")
        return {"type": "image_url", "image_url": {"url": url, "detail": part.detail}}
    if isinstance(part, FilePart):
        if not inline and part.path is not None:
            return {"type": "file_path", "path": part.path, "filename": part.filename}
        if part.file_id is not None:
            return {"type": "file", "file": {"file_id": part.file_id}}
        encoded = _media.data_url(part.media_type or "", part.data or b"")
        return {"type": "file", "file": {"filename": part.filename, "file_data": encoded}}
    if not inline and part.path is not None:
        return {"type": "audio_path", "path": part.path}
    from base64 import b64encode

    data = b64encode(part.data).decode("ascii")
    return {"type": "input_audio", "input_audio": {"data": data, "format": part.format}}


def _tool_calls(raw: object, what: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ValidationError(f"{what}.tool_calls must be a list")
    calls: list[ToolCall] = []
    for i, call in enumerate(raw):
        where = f"{what}.tool_calls[{i}]"
        if isinstance(call, ToolCall):
            calls.append(call)
            continue
        if not isinstance(call, Mapping) or call.get("type", "function") != "function":
            raise ValidationError(f"{where} must be a function call object")
        function = call.get("function")
        if not isinstance(function, Mapping):
            raise ValidationError(f"{where}.function must be an object with name and arguments")
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, Mapping):  # written as an object by hand
            import json

            arguments = json.dumps(arguments)
        calls.append(
            ToolCall(
                _text(call.get("id"), f"{where}.id"),
                _text(function.get("name"), f"{where}.function.name"),
                _text(arguments, f"{where}.function.arguments"),
            )
        )
    return tuple(calls)


def _detail(value: Mapping[str, Any], what: str) -> Any:
    detail = value.get("detail", "auto")
    if detail not in ("auto", "low", "high"):
        raise ValidationError(f"{what}: image detail must be auto, low or high, not {detail!r}")
    return detail


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    return value


def _optional_text(value: object, what: str) -> str | None:
    return None if value is None else _text(value, what)
