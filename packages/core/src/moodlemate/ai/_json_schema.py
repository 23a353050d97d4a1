"""JSON schemas from Python types and functions: what tools and structured answers are described by.

A tool is a plain function and a structured answer a plain class; the model needs each as a JSON
schema. The schema comes from the type hints (``Literal``, ``Enum``, optional values, lists,
tuples, mappings, nested dataclasses and TypedDicts, dates, ``Decimal``; pydantic models through
their own ``model_json_schema`` when pydantic is installed) and the docstring (the summary, and
``Args:`` or ``:param x:`` lines for the parameters). Named classes go to ``$defs`` and are
referenced, so recursive types work. The result is plain JSON Schema; the provider rewrites it
into its vendor's strict form where the model supports one.

Vendor-neutral, and imported only when a schema is asked for (``typing`` introspection is not
free, and ``GPT()`` never needs it).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import inspect
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

from moodlemate.ai.errors import ValidationError

__all__ = ["SchemaError", "function_schema", "type_schema"]

JSON = dict[str, Any]

_SIMPLE: dict[type, JSON] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.time: {"type": "string", "format": "time"},
    datetime.timedelta: {"type": "string", "format": "duration"},
    uuid.UUID: {"type": "string", "format": "uuid"},
    # A decimal travels as a JSON number; validation converts it without binary rounding.
    Decimal: {"type": "number"},
    bytes: {"type": "string", "contentEncoding": "base64"},
}

_PARAM_LINE = re.compile(r"^\s*:param\s+(?:[^:]+\s)?(\w+)\s*:\s*(.*)$")
_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")


class SchemaError(ValidationError):
    """A type or function that cannot be described as JSON Schema (say which and why)."""


def type_schema(annotation: Any) -> JSON:
    """The JSON schema of ``annotation``; named classes are in ``$defs``."""
    builder = _Builder()
    schema = builder.schema(annotation, "the type")
    return builder.finish(schema)


def function_schema(function: Callable[..., Any], *, name: str | None = None) -> JSON:
    """``{"name", "description", "parameters"}`` for a tool, from ``function``'s signature, type
    hints and docstring. Parameters without a default are required; ``*args``/``**kwargs`` and a
    parameter without a type hint are refused (the model cannot be told what to send)."""
    tool_name = str(name or getattr(function, "__name__", ""))
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tool_name):
        raise SchemaError(
            f"tool name {tool_name!r} must be 1-64 letters, digits, underscores or dashes"
        )
    try:
        signature = inspect.signature(function)
        hints = typing.get_type_hints(function, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise SchemaError(f"cannot read the signature of {tool_name}: {exc}") from exc
    summary, documented = _docstring(inspect.getdoc(function) or "")
    builder = _Builder()
    properties: JSON = {}
    required: list[str] = []
    for parameter in signature.parameters.values():
        where = f"parameter {parameter.name!r} of {tool_name}"
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise SchemaError(f"{where}: *args and **kwargs cannot be described to a model")
        if parameter.name not in hints:
            raise SchemaError(f"{where} has no type hint")
        schema = builder.schema(hints[parameter.name], where)
        if parameter.name in documented:
            schema = {**schema, "description": documented[parameter.name]}
        if parameter.default is parameter.empty:
            required.append(parameter.name)
        elif _json_value(parameter.default):
            schema = {**schema, "default": parameter.default}
        properties[parameter.name] = schema
    parameters = builder.finish(
        {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
    )
    result: JSON = {"name": tool_name, "parameters": parameters}
    if summary:
        result["description"] = summary
    return result


class _Builder:
    """Walks a type once, collecting named classes into ``$defs`` (by name, checked unique)."""

    def __init__(self) -> None:
        self.defs: dict[str, JSON] = {}
        self.owners: dict[str, Any] = {}

    def finish(self, schema: JSON) -> JSON:
        if self.defs:
            return {**schema, "$defs": dict(self.defs)}
        return schema

    def schema(self, annotation: Any, where: str) -> JSON:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            base, *metadata = get_args(annotation)
            described = self.schema(base, where)
            texts = [m for m in metadata if isinstance(m, str)]
            return {**described, "description": texts[0]} if texts else described
        if origin in (Required, NotRequired):
            return self.schema(get_args(annotation)[0], where)
        if annotation is Any:
            return {}
        if isinstance(annotation, type) and annotation in _SIMPLE:
            return dict(_SIMPLE[annotation])
        if origin is Literal:
            values = list(get_args(annotation))
            if not all(_json_value(v) for v in values):
                raise SchemaError(f"{where}: Literal values must be str, int, float, bool or None")
            return _enum_schema(values)
        if origin in (Union, types.UnionType):
            members = [self.schema(arg, where) for arg in get_args(annotation)]
            return {"anyOf": members}
        if origin in (list, set, frozenset, Sequence) or annotation in (list, set, frozenset):
            args = get_args(annotation)
            schema: JSON = {"type": "array"}
            if args:
                schema["items"] = self.schema(args[0], where)
            return schema
        if origin is tuple:
            args = get_args(annotation)
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.schema(args[0], where)}
            items = [self.schema(arg, where) for arg in args]
            return {
                "type": "array",
                "prefixItems": items,
                "minItems": len(items),
                "maxItems": len(items),
            }
        if origin in (dict, Mapping) or annotation is dict:
            args = get_args(annotation)
            if args and args[0] is not str:
                raise SchemaError(f"{where}: JSON object keys are strings, not {args[0]!r}")
            value_schema = self.schema(args[1], where) if args else {}
            return {"type": "object", "additionalProperties": value_schema}
        if isinstance(annotation, type):
            return self._class(annotation, where)
        raise SchemaError(f"{where}: {annotation!r} cannot be described as JSON Schema")

    def _class(self, cls: type, where: str) -> JSON:
        if issubclass(cls, enum.Enum):
            values = [member.value for member in cls]
            if not all(_json_value(v) for v in values):
                raise SchemaError(f"{where}: the values of enum {cls.__name__} must be JSON values")
            return self._named(cls, lambda: _enum_schema(values))
        if dataclasses.is_dataclass(cls):
            return self._named(cls, lambda: self._dataclass(cls, where))
        if typing.is_typeddict(cls):
            return self._named(cls, lambda: self._typeddict(cls, where))
        if _is_pydantic_model(cls):
            return self._pydantic(cls)
        raise SchemaError(
            f"{where}: {cls.__name__} is not a JSON type, an Enum, a dataclass, a TypedDict "
            f"or a pydantic model"
        )

    def _named(self, cls: type, build: Callable[[], JSON]) -> JSON:
        name = cls.__name__
        owner = self.owners.get(name)
        if owner is not None and owner is not cls:
            raise SchemaError(f"two different types are both named {name}; rename one")
        if owner is None:
            self.owners[name] = cls
            self.defs[name] = {}  # placeholder: a recursive reference finds the name taken
            schema = build()
            doc = inspect.getdoc(cls)
            if doc and not _generated_doc(cls, doc) and "description" not in schema:
                schema = {**schema, "description": doc.split("\n\n", 1)[0].strip()}
            self.defs[name] = schema
        return {"$ref": f"#/$defs/{name}"}

    def _dataclass(self, cls: type, where: str) -> JSON:
        hints = typing.get_type_hints(cls, include_extras=True)
        properties: JSON = {}
        required: list[str] = []
        for field in dataclasses.fields(cls):
            if not field.init:
                continue
            properties[field.name] = self.schema(hints[field.name], f"{where} ({cls.__name__})")
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                required.append(field.name)
        return _object(properties, required)

    def _typeddict(self, cls: type, where: str) -> JSON:
        hints = typing.get_type_hints(cls, include_extras=True)
        required_keys: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
        properties = {
            key: self.schema(hint, f"{where} ({cls.__name__})") for key, hint in hints.items()
        }
        # Under postponed annotations the class cannot see NotRequired/Required itself; the
        # evaluated hints can.
        required = [
            key
            for key, hint in hints.items()
            if get_origin(hint) is Required
            or (key in required_keys and get_origin(hint) is not NotRequired)
        ]
        return _object(properties, required)

    def _pydantic(self, cls: type) -> JSON:
        """pydantic describes its own models; their ``$defs`` join ours."""
        schema: JSON = cls.model_json_schema(ref_template="#/$defs/{model}")  # type: ignore[attr-defined]
        nested = schema.pop("$defs", {})
        for name, definition in nested.items():
            self.defs.setdefault(name, definition)
        name = cls.__name__
        self.defs.setdefault(name, schema)
        self.owners.setdefault(name, cls)
        return {"$ref": f"#/$defs/{name}"}


def _object(properties: JSON, required: list[str]) -> JSON:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _enum_schema(values: list[Any]) -> JSON:
    kinds = {_json_type(v) for v in values}
    schema: JSON = {"enum": values}
    if len(kinds) == 1:
        schema = {"type": kinds.pop(), **schema}
    return schema


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _json_value(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_pydantic_model(cls: type) -> bool:
    return callable(getattr(cls, "model_json_schema", None)) and hasattr(cls, "model_fields")


def _generated_doc(cls: type, doc: str) -> bool:
    """dataclasses write ``Name(field: type, ...)`` as a class's doc when it has none."""
    return doc.startswith(f"{cls.__name__}(")


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before any section) and per-parameter descriptions (Google-style
    ``Args:`` blocks or Sphinx ``:param name:`` lines)."""
    summary: list[str] = []
    params: dict[str, str] = {}
    in_args = False
    current: str | None = None
    in_sections = False
    for line in doc.splitlines():
        match = _PARAM_LINE.match(line)
        if match:
            in_sections = True
            current = match.group(1)
            params[current] = match.group(2).strip()
            continue
        if _ARGS_HEADER.match(line):
            in_sections = in_args = True
            current = None
            continue
        if _SECTION.match(line):
            in_sections = True
            in_args = False
            current = None
            continue
        if in_args:
            arg = _ARG_LINE.match(line)
            if arg and len(line) - len(line.lstrip()) <= 4:
                current = arg.group(1)
                params[current] = arg.group(2).strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
            continue
        if current and line.strip() and line.startswith((" ", "\t")):
            params[current] = f"{params[current]} {line.strip()}".strip()
            continue
        if not in_sections:
            summary.append(line)
    text = "\n".join(summary).strip()
    return re.sub(r"\s*\n\s*", " ", text), params
