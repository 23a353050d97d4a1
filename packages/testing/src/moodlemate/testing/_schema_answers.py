"""Unscripted answers that play along with schemas: typed answers and tool calls.

A real model asked for ``response_format: json_schema`` answers with JSON of that shape, and one
given tools calls them. The test server, when nothing is scripted, does the plainest version of
both: the simplest value a schema admits (first enum value, minimums, one item per array, every
property), and a call of the first tool with such arguments when the conversation ends with a
user turn (and the tool results echoed once they come back). So ``moodlemate-ai serve`` can be
tried with typed answers and tool runs, and a test scripts only the replies it cares about.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["schema_answer", "tool_results_text", "unscripted_tool_calls"]

MAX_DEPTH = 12
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00",
    "duration": "P1D",
    "email": "someone@example.com",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def schema_answer(body: Mapping[str, Any]) -> str | None:
    """The JSON text answering ``body``'s ``response_format``; None when it asks for none."""
    response_format = body.get("response_format")
    if not isinstance(response_format, Mapping):
        return None
    if response_format.get("type") == "json_object":
        return "{}"
    spec = response_format.get("json_schema")
    if response_format.get("type") != "json_schema" or not isinstance(spec, Mapping):
        return None
    schema = spec.get("schema")
    if not isinstance(schema, Mapping):
        return "{}"
    return json.dumps(_example(schema, schema, 0), ensure_ascii=False)


def unscripted_tool_calls(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """A call of the request's first (or chosen) tool with the plainest arguments its schema
    admits, when the conversation ends with a user turn; None otherwise."""
    tools = body.get("tools")
    messages = body.get("messages")
    if not isinstance(tools, list) or not tools or not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "user":
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    chosen = tools[0]
    if isinstance(choice, Mapping):
        wanted = (choice.get("function") or {}).get("name")
        chosen = next(
            (
                t
                for t in tools
                if isinstance(t, Mapping) and (t.get("function") or {}).get("name") == wanted
            ),
            chosen,
        )
    function = chosen.get("function") if isinstance(chosen, Mapping) else None
    if not isinstance(function, Mapping):
        return None
    parameters = function.get("parameters")
    arguments = _example(parameters, parameters, 0) if isinstance(parameters, Mapping) else {}
    call_id = f"call_{len(messages)}_{str(function.get('name'))[:24]}"
    return [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": function.get("name"), "arguments": json.dumps(arguments)},
        }
    ]


def _tool_name(tool: Mapping[str, Any]) -> object:
    function = tool.get("function")
    return function.get("name") if isinstance(function, Mapping) else None


def tool_results_text(body: Mapping[str, Any]) -> str | None:
    """The tool results a conversation ends with, echoed; None when it ends otherwise."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    results: list[str] = []
    for message in reversed(messages):
        if not isinstance(message, Mapping) or message.get("role") != "tool":
            break
        content = message.get("content")
        results.append(content if isinstance(content, str) else json.dumps(content))
    if not results:
        return None
    return "Echo: tool results: " + "; ".join(reversed(results))


def _example(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    if depth > MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _example(_resolve(ref, root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return next((v for v in enum if v is not None), enum[0])
    for key in ("anyOf", "oneOf"):
        members = schema.get(key)
        if isinstance(members, list) and members:
            chosen = next((m for m in members if _not_null(m)), members[0])
            return _example(chosen, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {
            name: _example(sub, root, depth + 1)
            for name, sub in properties.items()
            if isinstance(sub, Mapping)
        }
    if kind == "array":
        items = schema.get("items")
        count = max(int(schema.get("minItems", 1)), 1)
        count = min(count, int(schema.get("maxItems", count)))
        return [_example(items, root, depth + 1) if isinstance(items, Mapping) else None] * count
    if kind == "string":
        return _FORMATS.get(str(schema.get("format")), "example")
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = low + 1 if "exclusiveMinimum" in schema else low
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    return None


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if ref == "#":
        return root
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _not_null(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") != "null"
