"""The chat-completions request body's messages and options, as OpenAI's API takes them.

``models.chat_body`` calls this for what goes beyond a plain-text request: content parts
(``text``, ``image_url``, ``input_audio``, ``file``), tool and assistant turns, and the named
options. The dict built here is what goes on the wire, unchanged.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from moodlemate.ai.plugin import (
    AudioPart,
    FilePart,
    ImagePart,
    Message,
    Options,
    Part,
    TextPart,
    data_url,
)

__all__ = ["message", "messages", "options"]


def messages(values: Iterable[Message]) -> list[dict[str, Any]]:
    return [message(m) for m in values]


def message(m: Message) -> dict[str, Any]:
    content = m.content
    if type(content) is str and not m.tool_calls and m.name is None and m.tool_call_id is None:
        return {"role": m.role, "content": content}
    out: dict[str, Any] = {"role": m.role}
    if isinstance(content, str):
        # An assistant turn that only calls tools has no content (null, as the API sends it).
        out["content"] = None if not content and m.tool_calls else content
    else:
        out["content"] = [part(p) for p in content]
    if m.name is not None:
        out["name"] = m.name
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.refusal is not None:
        out["refusal"] = m.refusal
    return out


def part(p: Part) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    if isinstance(p, ImagePart):
        url = p.url or data_url(p.media_type or "", p.data or b"")
        return {"type": "image_url", "image_url": {"url": url, "detail": p.detail}}
    if isinstance(p, FilePart):
        if p.file_id is not None:
            return {"type": "file", "file": {"file_id": p.file_id}}
        file_data = data_url(p.media_type or "", p.data or b"")
        return {"type": "file", "file": {"filename": p.filename, "file_data": file_data}}
    assert isinstance(p, AudioPart)
    encoded = base64.b64encode(p.data).decode("ascii")
    return {"type": "input_audio", "input_audio": {"data": encoded, "format": p.format}}


def options(given: Options) -> dict[str, Any]:
    """The named options that are set, in wire form (tuples as lists, mappings as dicts)."""
    return {name: _plain(value) for name, value in given.named().items() if name != "api"}


def _plain(value: Any) -> Any:
    """Mappings (a MappingProxyType, a frozen view) as dicts, so JSON encoding takes them."""
    if hasattr(value, "keys"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
