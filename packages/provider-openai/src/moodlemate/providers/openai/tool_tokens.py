"""What tool definitions and tool calls add to a chat request's prompt tokens.

OpenAI renders the ``tools`` of a request into the prompt in a format it does not publish; its
cookbook ("How to count tokens with tiktoken") gives the rule that reproduces the API's
``prompt_tokens``: per function a fixed opening plus ``name:description``, per top-level
parameter ``name:type:description`` and its enum values, and a fixed closing. The figures of
that rule are used as they are (101 prompt tokens for the cookbook's weather example on
gpt-4o, 105 on gpt-4). Parameter schemas nested deeper than the cookbook covers are counted by
their JSON text, an over-estimate rather than a miss, since budgets reserve by these counts.

Assistant turns that carry tool calls, and the arguments in them, are counted as their name and
JSON arguments plus a small frame: an estimate, the API documents none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moodlemate.providers.openai import tokens

__all__ = ["TOOL_CALL_FRAME", "tool_call_tokens", "tool_definition_tokens"]


@dataclass(frozen=True, slots=True)
class _Frame:
    function: int
    properties: int = 3
    property: int = 3
    enum: int = -3
    enum_item: int = 3
    end: int = 12


_O200K = _Frame(function=7)
"""gpt-4o, gpt-4o-mini and the later models on o200k_base."""
_CL100K = _Frame(function=10)
"""gpt-3.5-turbo and gpt-4 (cl100k_base)."""

TOOL_CALL_FRAME = 3
"""Tokens assumed around each tool call of an assistant turn (an estimate)."""

_DESCRIBED = frozenset({"type", "description", "enum"})


def tool_definition_tokens(model: str, tools: Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens the ``tools`` of a request add (OpenAI's ``{"type": "function",
    "function": {...}}`` shape); 0 for none."""
    if not tools:
        return 0
    encoding = tokens.encoding_for(model)
    frame = _O200K if encoding.name == "o200k_base" else _CL100K
    encode = encoding.encode_ordinary

    def count(text: str) -> int:
        return len(encode(text))

    total = frame.end
    for tool in tools:
        function = _mapping(tool.get("function", tool))
        total += frame.function
        name = str(function.get("name", ""))
        total += count(f"{name}:{_trim(function.get('description'))}")
        properties = _mapping(_mapping(function.get("parameters")).get("properties"))
        if properties:
            total += frame.properties
            for key, schema in properties.items():
                total += frame.property + _property_tokens(str(key), _mapping(schema), frame, count)
    return total


def _property_tokens(
    name: str, schema: Mapping[str, Any], frame: _Frame, count: Callable[[str], int]
) -> int:
    total = 0
    enum = schema.get("enum")
    if isinstance(enum, list):
        total += frame.enum
        for item in enum:
            total += frame.enum_item + count(item if isinstance(item, str) else json.dumps(item))
    kind = schema.get("type", "")
    kind_text = kind if isinstance(kind, str) else json.dumps(kind)
    total += count(f"{name}:{kind_text}:{_trim(schema.get('description'))}")
    rest = {k: v for k, v in schema.items() if k not in _DESCRIBED}
    if rest:  # nested objects, items, anyOf...: beyond the cookbook's rule
        total += count(json.dumps(rest, separators=(",", ":"), ensure_ascii=False))
    return total


def tool_call_tokens(model: str, calls: Sequence[Mapping[str, Any]]) -> int:
    """Estimated prompt tokens of the tool calls an assistant turn carries back into a
    history (OpenAI's wire shape: ``{"id", "type", "function": {"name", "arguments"}}``)."""
    if not calls:
        return 0
    encode = tokens.encoding_for(model).encode_ordinary
    total = 0
    for call in calls:
        function = _mapping(call.get("function"))
        total += TOOL_CALL_FRAME
        total += len(encode(str(function.get("name", ""))))
        total += len(encode(str(function.get("arguments", ""))))
    return total


def _trim(description: object) -> str:
    """The cookbook drops one trailing full stop from descriptions."""
    text = description if isinstance(description, str) else ""
    return text[:-1] if text.endswith(".") else text


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
