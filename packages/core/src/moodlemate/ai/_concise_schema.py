"""The one-line schema people type at a shell: ``'name, age int, bio: a short bio'``.

Fields are separated by commas, or by newlines when the text has any; each is a name, an
optional type (``str`` by default, ``int``, ``float``, ``bool``) and an optional description
after a colon. The same habit as the llm command line, so a schema typed for it works here.
"""

from __future__ import annotations

import re
from typing import Any

from moodlemate.ai.errors import ValidationError

__all__ = ["concise_schema", "multi_schema"]

_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_FIELD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)(?:\s+(\w+))?\s*(?::\s*(.*))?$", re.S)


def concise_schema(text: str) -> dict[str, Any]:
    """The JSON schema (an object, every field required) that ``text`` describes."""
    separator = "\n" if "\n" in text.strip() else ","
    properties: dict[str, Any] = {}
    for raw in text.split(separator):
        if not raw.strip():
            continue
        match = _FIELD.match(raw)
        if match is None:
            raise ValidationError(
                f"cannot read schema field {raw.strip()!r}: write 'name [type][: description]'"
            )
        name, kind, description = match.groups()
        if kind is not None and kind not in _TYPES:
            raise ValidationError(
                f"schema field {name!r}: unknown type {kind!r} (use {', '.join(_TYPES)})"
            )
        if name in properties:
            raise ValidationError(f"schema field {name!r} is given twice")
        field: dict[str, Any] = {"type": _TYPES[kind or "str"]}
        if description and description.strip():
            field["description"] = description.strip()
        properties[name] = field
    if not properties:
        raise ValidationError("the schema names no fields")
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def multi_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"items": [...]}`` of ``schema``: many answers in one reply (``--schema-multi``)."""
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": schema}},
        "required": ["items"],
        "additionalProperties": False,
    }
