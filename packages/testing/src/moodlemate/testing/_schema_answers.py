"""An answer that follows the request's JSON schema, for unscripted typed-answer requests.

A real model asked for ``response_format: json_schema`` answers with JSON of that shape. The
test server, when nothing is scripted, builds the plainest value the schema admits (first enum
value, minimums, one item per array, every property), so ``moodlemate-ai serve`` can be tried
with typed answers and a test needs a script only for the replies it cares about.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["schema_answer"]

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
