"""A typed answer's schema and its checking: what the model is asked for, and what it sent back.

The user names the answer's type (a pydantic model, a dataclass, a TypedDict, any other type
hint, or a JSON schema dict); :func:`answer_schema` turns it into the JSON schema to send (its
root an object, as strict modes require: anything else is wrapped in ``{"value": ...}``) and a
parser that turns the model's text into that type or into a list of problems, each a sentence a
model can act on when asked again.

The model's text is untrusted input: it is parsed with a bounded nesting depth, numbers keep
their exact decimal digits (``Decimal`` fields are never rounded through binary floats), and
validation is done by pydantic when the type is a pydantic model and by ``jsonschema`` otherwise;
each is imported only when an answer is checked, and a missing one is named with its extra.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from moodlemate.ai._json_schema import type_schema
from moodlemate.ai.errors import ConfigurationError

__all__ = ["AnswerProblems", "AnswerSchema", "answer_schema"]

T = TypeVar("T")
JSON = dict[str, Any]

MAX_PROBLEMS = 20
"""Problems reported per answer: enough for a model to fix its reply, short enough to resend."""
MAX_NESTING = 256
WRAPPER_KEY = "value"
_NAME = re.compile(r"[^A-Za-z0-9_-]")
_MISSING = re.compile(r"^'(.+)' is a required property$")


class AnswerProblems(Exception):
    """The model's text is not a valid answer; ``problems`` say why, one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class AnswerSchema(Generic[T]):
    """The schema to send for an answer of type ``T`` and the parser of the model's reply."""

    name: str
    """A name for the schema (``response_format.json_schema.name``: 1-64 of ``[A-Za-z0-9_-]``)."""
    schema: JSON
    """The JSON schema to send; its root is an object."""
    wrapped: bool
    """True when the answer's type is not an object and travels as ``{"value": ...}``."""
    convert: Callable[[Any], T] = dataclasses.field(repr=False)
    """From the decoded JSON (unwrapped) to ``T``; raises :class:`AnswerProblems`."""
    validate_json: Callable[[str], T] | None = dataclasses.field(default=None, repr=False)
    """A faster path from the text itself, when the validator has one (pydantic)."""

    def parse(self, text: str) -> T:
        """The model's ``text`` as a ``T``; :class:`AnswerProblems` when it is not one."""
        if self.validate_json is not None and not self.wrapped:
            return self.validate_json(text)
        data = _decode(_strip_fence(text))
        if self.wrapped:
            if not isinstance(data, dict) or WRAPPER_KEY not in data:
                raise AnswerProblems([f'the answer must be an object with a "{WRAPPER_KEY}" field'])
            data = data[WRAPPER_KEY]
        return self.convert(data)


def answer_schema(
    spec: Any, *, name: str | None = None, engine: Literal["auto", "jsonschema"] = "auto"
) -> AnswerSchema[Any]:
    """The :class:`AnswerSchema` for ``spec``: a pydantic model class, a dataclass, a TypedDict,
    a type hint such as ``list[Person]``, or a JSON schema dict (answers are then plain JSON).
    Types other than pydantic models are checked by pydantic when it is installed, else (or
    with ``engine="jsonschema"``) by jsonschema against the schema sent."""
    if isinstance(spec, Mapping):
        schema = dict(spec)
        title = str(schema.get("title") or "answer")
        return _from_json_schema(schema, name or title)
    label = name or getattr(spec, "__name__", None) or "answer"
    if isinstance(spec, type) and _is_pydantic_model(spec):
        return _from_pydantic(spec, label)
    schema = type_schema(spec)
    root, wrapped = _rooted(schema)
    adapter = _pydantic_adapter(spec) if engine == "auto" else None
    if adapter is not None:
        # pydantic validates and builds dataclasses, TypedDicts and hints in one compiled pass,
        # a hundred times faster than jsonschema plus building the value here.
        return AnswerSchema(
            name=_schema_name(label),
            schema=root,
            wrapped=wrapped,
            convert=_pydantic_call(adapter.validate_python),
            validate_json=_pydantic_call(adapter.validate_json, text=True),
        )
    checker = _jsonschema_checker(schema)
    return AnswerSchema(
        name=_schema_name(label),
        schema=root,
        wrapped=wrapped,
        convert=lambda data: _build(spec, _checked(checker, data)),
    )


def _pydantic_adapter(spec: Any) -> Any:
    """A pydantic ``TypeAdapter`` for ``spec`` when pydantic is installed, else None."""
    try:
        import pydantic
    except ImportError:
        return None
    try:
        return pydantic.TypeAdapter(spec)
    except pydantic.PydanticUserError:  # a type pydantic cannot take: jsonschema will
        return None


def _pydantic_call(validate: Callable[[Any], Any], *, text: bool = False) -> Callable[[Any], Any]:
    """``validate`` with pydantic's errors turned into :class:`AnswerProblems`."""

    def call(value: Any) -> Any:
        import pydantic

        try:
            return validate(_strip_fence(value) if text else value)
        except pydantic.ValidationError as exc:
            raise _pydantic_problems(exc) from None

    return call


def _pydantic_problems(exc: Any) -> AnswerProblems:
    found = [
        f"{_location(error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors(include_url=False)
    ]
    return AnswerProblems(_bounded(found))


def _from_json_schema(schema: JSON, label: str) -> AnswerSchema[Any]:
    root, wrapped = _rooted(schema)
    checker = _jsonschema_checker(schema)
    return AnswerSchema(
        name=_schema_name(label),
        schema=root,
        wrapped=wrapped,
        convert=lambda data: _plain(_checked(checker, data)),
    )


def _from_pydantic(model: type, label: str) -> AnswerSchema[Any]:
    schema = model.model_json_schema()  # type: ignore[attr-defined]
    root, wrapped = _rooted(schema)
    return AnswerSchema(
        name=_schema_name(label),
        schema=root,
        wrapped=wrapped,
        convert=_pydantic_call(model.model_validate),  # type: ignore[attr-defined]
        validate_json=_pydantic_call(model.model_validate_json, text=True),  # type: ignore[attr-defined]
    )


def _rooted(schema: JSON) -> tuple[JSON, bool]:
    """``schema`` with an object at its root, and whether the value was wrapped to get one.

    A class's schema is a ``$ref`` into ``$defs``: its definition becomes the root."""
    ref = schema.get("$ref")
    defs = schema.get("$defs", {})
    if isinstance(ref, str) and ref.startswith("#/$defs/") and len(schema) <= 2:
        target = defs.get(ref.removeprefix("#/$defs/"), {})
        if target.get("type") == "object":
            rest = {k: v for k, v in defs.items() if k != ref.removeprefix("#/$defs/")}
            inlined = {**target, **({"$defs": defs} if rest or _refers(target, ref) else {})}
            return inlined, False
    if schema.get("type") == "object" and "anyOf" not in schema:
        return schema, False
    inner = {k: v for k, v in schema.items() if k != "$defs"}
    wrapper: JSON = {
        "type": "object",
        "properties": {WRAPPER_KEY: inner},
        "required": [WRAPPER_KEY],
        "additionalProperties": False,
    }
    if defs:
        wrapper["$defs"] = defs
    return wrapper, True


def _refers(schema: Any, ref: str) -> bool:
    return ref in json.dumps(schema)


def _schema_name(label: str) -> str:
    return _NAME.sub("_", label)[:64] or "answer"


def _strip_fence(text: str) -> str:
    """Models without a JSON mode often wrap the answer in a Markdown code fence."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped


def _decode(text: str) -> Any:
    try:
        data = json.loads(text, parse_float=Decimal)
    except RecursionError:
        raise AnswerProblems(["the answer: nests too deeply"]) from None
    except json.JSONDecodeError as exc:
        raise AnswerProblems([f"the answer: not valid JSON ({exc.msg} at {exc.pos})"]) from None
    if _depth(data) > MAX_NESTING:
        raise AnswerProblems(["the answer: nests too deeply"])
    return data


def _depth(data: Any) -> int:
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_NESTING:
            return depth
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _jsonschema_checker(schema: JSON) -> Any:
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigurationError(
            "checking typed answers needs jsonschema: pip install 'moodlemate-ai[structured]'"
        ) from None
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def _checked(checker: Any, data: Any) -> Any:
    errors = sorted(checker.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise AnswerProblems(_bounded([_problem(e) for e in errors]))
    return data


def _problem(error: Any) -> str:
    """One jsonschema error as ``where: what``; a missing field is named where it belongs."""
    path = list(error.absolute_path)
    missing = _MISSING.match(error.message) if error.validator == "required" else None
    if missing:
        return f"{_location([*path, missing.group(1)])}: Field required"
    return f"{_location(path)}: {error.message}"


def _bounded(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more problems"]


def _location(path: Any) -> str:
    parts = list(path)
    if not parts:
        return "the answer"
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def _build(annotation: Any, data: Any) -> Any:
    """JSON already checked against ``annotation``'s schema, as a value of that type."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _build(get_args(annotation)[0], data)
    if origin in (typing.Required, typing.NotRequired):
        return _build(get_args(annotation)[0], data)
    if origin in (Union, types.UnionType):
        return _build_union(get_args(annotation), data)
    if annotation is Any:
        return _plain(data)
    if origin is Literal or data is None:
        return data
    if origin in (list, set, frozenset, tuple):
        args = get_args(annotation)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(_build(arg, item) for arg, item in zip(args, data, strict=True))
        item_type = args[0] if args else Any
        return origin(_build(item_type, item) for item in data)
    if origin in (dict, Mapping):
        args = get_args(annotation)
        value_type = args[1] if args else Any
        return {key: _build(value_type, value) for key, value in data.items()}
    if not isinstance(annotation, type):
        return data
    return _build_class(annotation, data)


def _plain(data: Any) -> Any:
    """JSON as ``json.loads`` gives it: exact decimals back to floats where no type asks."""
    if isinstance(data, Decimal):
        return float(data)
    if isinstance(data, list):
        return [_plain(item) for item in data]
    if isinstance(data, dict):
        return {key: _plain(value) for key, value in data.items()}
    return data


def _build_union(members: tuple[Any, ...], data: Any) -> Any:
    if data is None and type(None) in members:
        return None
    for member in members:
        if member is type(None):
            continue
        try:
            checker = _jsonschema_checker(type_schema(member))
            _checked(checker, data)
        except AnswerProblems:
            continue
        return _build(member, data)
    return data


_SCALARS: dict[type, Callable[[Any], Any]] = {
    float: float,
    int: int,
    Decimal: lambda v: Decimal(str(v)),
    datetime.datetime: lambda v: datetime.datetime.fromisoformat(v),
    datetime.date: lambda v: datetime.date.fromisoformat(v),
    datetime.time: lambda v: datetime.time.fromisoformat(v),
    uuid.UUID: uuid.UUID,
}


def _build_class(cls: type, data: Any) -> Any:
    if cls in _SCALARS:
        try:
            return _SCALARS[cls](data)
        except (ValueError, TypeError) as exc:
            raise AnswerProblems([f"the answer: {data!r} is not a valid {cls.__name__}"]) from exc
    if issubclass(cls, enum.Enum):
        return cls(data)
    if dataclasses.is_dataclass(cls):
        hints = _hints(cls)
        values = {
            field.name: _build(hints[field.name], data[field.name])
            for field in dataclasses.fields(cls)
            if field.init and field.name in data
        }
        return cls(**values)
    if typing.is_typeddict(cls):
        hints = _hints(cls)
        return {key: _build(hints.get(key, Any), value) for key, value in data.items()}
    if isinstance(data, Decimal) and cls is not Decimal:
        return float(data)
    return data


_HINTS: dict[Any, dict[str, Any]] = {}


def _hints(cls: Any) -> dict[str, Any]:
    """A class's evaluated type hints, worked out once (``get_type_hints`` is slow)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return hints


def _is_pydantic_model(cls: type) -> bool:
    return callable(getattr(cls, "model_json_schema", None)) and hasattr(cls, "model_fields")
