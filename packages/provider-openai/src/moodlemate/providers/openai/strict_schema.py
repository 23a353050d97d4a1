"""OpenAI's strict mode for JSON schemas (Structured Outputs, strict function tools).

With ``strict: true`` the model's output is constrained to the schema, but only a subset of JSON
Schema is accepted, and the API answers 400 for the rest. The rules, from OpenAI's Structured
Outputs guide ("Supported schemas"), as this module enforces them:

1. The root is an object, not ``anyOf``.
2. Every object sets ``additionalProperties: false`` and lists every property in ``required``;
   an optional field is a required one that may be ``null``.
3. Supported keywords: ``type``, ``description``, ``title``, ``enum``, ``const``, ``anyOf``,
   ``$ref``, ``$defs``/``definitions``; for objects ``properties``, ``required``,
   ``additionalProperties``; for arrays ``items``, ``minItems``, ``maxItems``; for strings
   ``pattern`` and ``format`` (date-time, time, date, duration, email, hostname, ipv4, ipv6,
   uuid); for numbers ``multipleOf``, ``minimum``, ``maximum``, ``exclusiveMinimum``,
   ``exclusiveMaximum``.
4. At most 5,000 object properties in all, 10 levels of nesting, 1,000 enum values in all, and
   120,000 characters over all property names, definition names, enum and const values (15,000
   over the values of one enum of more than 250 strings).

:func:`to_strict` rewrites a schema to follow rules 1-2 and drops what only narrows values
(``minLength``, ``default``, an unsupported ``format``...), noting each, since the reply is
validated against the original schema anyway. What changes the shape in a way strict mode
cannot express (free-form maps, ``allOf``, ``not``, conditionals, a non-object root, the size
limits) is refused, with the path and the reason, and the caller sends the schema non-strict.
:func:`strict_violations` checks a schema against the rules as written, for tests and callers
that build strict schemas themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["StrictSchema", "strict_violations", "to_strict"]

JSON = dict[str, Any]

MAX_PROPERTIES = 5000
MAX_DEPTH = 10
MAX_ENUM_VALUES = 1000
MAX_TOTAL_STRING = 120_000
MAX_LARGE_ENUM_STRING = 15_000
LARGE_ENUM = 250

STRING_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
_COMMON = frozenset(
    {"type", "description", "title", "enum", "const", "anyOf", "$ref", "$defs", "definitions"}
)
_BY_TYPE: dict[str, frozenset[str]] = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
    "string": frozenset({"pattern", "format"}),
    "number": frozenset(
        {"multipleOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
    ),
    "integer": frozenset(
        {"multipleOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
    ),
    "boolean": frozenset(),
    "null": frozenset(),
}
_SUPPORTED = _COMMON.union(*_BY_TYPE.values())
_SHAPE_CHANGING = {
    "allOf": "allOf (an intersection) cannot be expressed",
    "not": "not (a negation) cannot be expressed",
    "if": "conditional schemas (if/then/else) cannot be expressed",
    "then": "conditional schemas (if/then/else) cannot be expressed",
    "else": "conditional schemas (if/then/else) cannot be expressed",
    "dependentRequired": "dependentRequired cannot be expressed",
    "dependentSchemas": "dependentSchemas cannot be expressed",
    "patternProperties": "objects with free-form keys (patternProperties) cannot be expressed",
    "unevaluatedProperties": "unevaluatedProperties cannot be expressed",
    "unevaluatedItems": "unevaluatedItems cannot be expressed",
    "propertyNames": "propertyNames cannot be expressed",
    "oneOf": "oneOf cannot be expressed (anyOf can)",
}
_SUBSCHEMA_KEYS = ("items",)
_SUBSCHEMA_LISTS = ("anyOf",)


@dataclass(frozen=True, slots=True)
class StrictSchema:
    """A schema rewritten for strict mode, or why it cannot be."""

    schema: JSON
    """The schema to send: strict when ``refusals`` is empty, else the original."""
    notes: tuple[str, ...] = ()
    """What was dropped or rewritten (checked locally instead), as ``path: what``."""
    refusals: tuple[str, ...] = ()
    """Why strict mode cannot carry this schema, as ``path: why``."""

    @property
    def strict(self) -> bool:
        return not self.refusals


def to_strict(schema: Mapping[str, Any]) -> StrictSchema:
    """``schema`` in OpenAI's strict form (see the module's rules)."""
    original = copy.deepcopy(dict(schema))
    rewriter = _Rewriter()
    rewritten = rewriter.node(copy.deepcopy(dict(schema)), "#", depth=0)
    if rewritten.get("type") != "object" or "anyOf" in rewritten:
        rewriter.refuse("#", "the root must be an object (wrap the value in one)")
    rewriter.refusals.extend(_limit_problems(rewritten))
    if rewriter.refusals:
        return StrictSchema(original, tuple(rewriter.notes), tuple(rewriter.refusals))
    return StrictSchema(rewritten, tuple(rewriter.notes))


def strict_violations(schema: Mapping[str, Any]) -> list[str]:
    """Every way ``schema`` breaks the strict-mode rules, as ``path: rule``; empty when it
    follows them all."""
    problems: list[str] = []
    if schema.get("type") != "object" or "anyOf" in schema:
        problems.append("#: the root must be an object, not anyOf")
    for path, node, _ in _walk(schema, "#", 0):
        for key in node:
            if key not in _SUPPORTED:
                problems.append(f"{path}: keyword {key!r} is not supported")
        kind = node.get("type")
        if kind == "object" or (isinstance(kind, list) and "object" in kind):
            if node.get("additionalProperties") is not False:
                problems.append(f"{path}: additionalProperties must be false")
            properties = node.get("properties", {})
            missing = [k for k in properties if k not in node.get("required", [])]
            if missing:
                problems.append(f"{path}: every property must be required ({missing})")
        fmt = node.get("format")
        if fmt is not None and fmt not in STRING_FORMATS:
            problems.append(f"{path}: format {fmt!r} is not supported")
    problems.extend(_limit_problems(schema))
    return problems


class _Rewriter:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.refusals: list[str] = []

    def note(self, path: str, what: str) -> None:
        self.notes.append(f"{path}: {what}")

    def refuse(self, path: str, why: str) -> None:
        self.refusals.append(f"{path}: {why}")

    def node(self, node: JSON, path: str, depth: int) -> JSON:
        for key, why in _SHAPE_CHANGING.items():
            if key in node:
                if key == "allOf" and isinstance(node[key], list) and len(node[key]) == 1:
                    continue  # a lone allOf is how some generators attach a description
                self.refuse(path, why)
        if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
            inner = node.pop("allOf")[0]
            node = {**inner, **node} if isinstance(inner, dict) else node
        for defs_key in ("$defs", "definitions"):
            defs = node.get(defs_key)
            if isinstance(defs, dict):
                node[defs_key] = {
                    name: self.node(dict(sub), f"{path}/{defs_key}/{name}", depth)
                    for name, sub in defs.items()
                    if isinstance(sub, dict)
                }
        if "prefixItems" in node:
            items = node.pop("prefixItems")
            node["items"] = {"anyOf": list(items)} if len(items) > 1 else items[0]
            self.note(path, "tuple positions are checked locally (strict mode has no prefixItems)")
        if "default" in node:
            node.pop("default")
            self.note(path, "default dropped (not supported in strict mode)")
        fmt = node.get("format")
        if fmt is not None and fmt not in STRING_FORMATS:
            node.pop("format")
            self.note(path, f"format {fmt!r} is checked locally (not supported in strict mode)")
        for key in [k for k in node if k not in _SUPPORTED and k not in _SHAPE_CHANGING]:
            node.pop(key)
            self.note(path, f"{key} is checked locally (not supported in strict mode)")
        if _is_object(node):
            node = self._object(node, path, depth)
        for key in _SUBSCHEMA_KEYS:
            if isinstance(node.get(key), dict):
                node[key] = self.node(node[key], f"{path}/{key}", depth + 1)
        for key in _SUBSCHEMA_LISTS:
            if isinstance(node.get(key), list):
                node[key] = [
                    self.node(sub, f"{path}/{key}/{i}", depth) if isinstance(sub, dict) else sub
                    for i, sub in enumerate(node[key])
                ]
        return node

    def _object(self, node: JSON, path: str, depth: int) -> JSON:
        extra = node.get("additionalProperties")
        properties = node.get("properties")
        if isinstance(extra, dict) or extra is True:
            self.refuse(path, "objects with free-form keys (additionalProperties) cannot be strict")
        elif extra is None and properties is None:
            self.refuse(path, "an object without properties (a free-form map) cannot be strict")
        node["additionalProperties"] = False
        properties = dict(properties or {})
        required = set(node.get("required", []))
        for name, sub in properties.items():
            sub_path = f"{path}/properties/{name}"
            rewritten = self.node(dict(sub), sub_path, depth + 1) if isinstance(sub, dict) else sub
            if name not in required:
                rewritten = _nullable(rewritten)
                self.note(sub_path, "optional, sent as required and nullable")
            properties[name] = rewritten
        node["properties"] = properties
        node["required"] = list(properties)
        return node


def _is_object(node: Mapping[str, Any]) -> bool:
    kind = node.get("type")
    return (
        kind == "object"
        or (isinstance(kind, list) and "object" in kind)
        or ("properties" in node and "type" not in node)
    )


def _nullable(schema: JSON) -> JSON:
    """``schema`` or null, in the form strict mode accepts."""
    kind = schema.get("type")
    if "enum" in schema:
        if None in schema["enum"]:
            return schema
        if isinstance(kind, str) and "$ref" not in schema:
            return {**schema, "type": [kind, "null"], "enum": [*schema["enum"], None]}
        return {"anyOf": [schema, {"type": "null"}]}
    if isinstance(kind, str) and kind != "null" and "anyOf" not in schema and "$ref" not in schema:
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, list):
        return schema if "null" in kind else {**schema, "type": [*kind, "null"]}
    if "anyOf" in schema and "$ref" not in schema:
        members = schema["anyOf"]
        if any(isinstance(m, dict) and m.get("type") == "null" for m in members):
            return schema
        return {**schema, "anyOf": [*members, {"type": "null"}]}
    return {"anyOf": [schema, {"type": "null"}]}


def _walk(node: Any, path: str, depth: int) -> Iterator[tuple[str, Mapping[str, Any], int]]:
    if not isinstance(node, Mapping):
        return
    yield path, node, depth
    for defs_key in ("$defs", "definitions"):
        defs = node.get(defs_key)
        if isinstance(defs, Mapping):
            for name, sub in defs.items():
                yield from _walk(sub, f"{path}/{defs_key}/{name}", depth)
    properties = node.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            yield from _walk(sub, f"{path}/properties/{name}", depth + 1)
    if isinstance(node.get("items"), Mapping):
        yield from _walk(node["items"], f"{path}/items", depth + 1)
    for key in ("anyOf",):
        members = node.get(key)
        if isinstance(members, list):
            for i, sub in enumerate(members):
                yield from _walk(sub, f"{path}/{key}/{i}", depth)


def _limit_problems(schema: Mapping[str, Any]) -> list[str]:
    properties = 0
    enum_values = 0
    characters = 0
    deepest = 0
    problems: list[str] = []
    for path, node, depth in _walk(schema, "#", 0):
        deepest = max(deepest, depth)
        names = node.get("properties")
        if isinstance(names, Mapping):
            properties += len(names)
            characters += sum(len(str(n)) for n in names)
        for defs_key in ("$defs", "definitions"):
            if isinstance(node.get(defs_key), Mapping):
                characters += sum(len(str(n)) for n in node[defs_key])
        values = node.get("enum")
        if isinstance(values, list):
            enum_values += len(values)
            strings = sum(len(v) for v in values if isinstance(v, str))
            characters += strings
            if len(values) > LARGE_ENUM and strings > MAX_LARGE_ENUM_STRING:
                problems.append(
                    f"{path}: an enum of more than {LARGE_ENUM} values may hold at most "
                    f"{MAX_LARGE_ENUM_STRING:,} characters ({strings:,})"
                )
        if isinstance(node.get("const"), str):
            characters += len(node["const"])
    if properties > MAX_PROPERTIES:
        problems.append(f"#: at most {MAX_PROPERTIES:,} object properties ({properties:,})")
    if deepest > MAX_DEPTH:
        problems.append(f"#: at most {MAX_DEPTH} levels of nesting ({deepest})")
    if enum_values > MAX_ENUM_VALUES:
        problems.append(f"#: at most {MAX_ENUM_VALUES:,} enum values in all ({enum_values:,})")
    if characters > MAX_TOTAL_STRING:
        problems.append(
            f"#: at most {MAX_TOTAL_STRING:,} characters of names and values ({characters:,})"
        )
    return problems
