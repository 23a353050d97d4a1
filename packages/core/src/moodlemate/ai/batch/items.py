"""Reading a batch input file: one chat request per JSON line, all validated before any is sent.

A batch that fails on line 4,000 after paying for 3,999 calls is the failure this module
exists to prevent, so every line is checked first (JSON, fields, types, value ranges, unique
ids) and every problem is reported with its line number in one error.

A line's ``schema`` (a JSON schema object), or the batch-wide one given to
:func:`parse_items`, asks for a typed answer: checked like :meth:`GPT.parse` checks it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from moodlemate.ai._call_types import ChatRequest, Message
from moodlemate.ai._message_dicts import messages_from
from moodlemate.ai._options import NO_OPTIONS, Options, options_from
from moodlemate.ai._validation import (
    build_request,
    check_max_tokens,
    check_model,
    check_temperature,
)
from moodlemate.ai.errors import ValidationError

__all__ = [
    "FIELDS",
    "BatchInputError",
    "BatchItem",
    "ItemId",
    "check_schema",
    "parse_items",
    "read_items",
]

ItemId = str | int
FIELDS = (
    "id",
    "system",
    "user",
    "messages",
    "model",
    "temperature",
    "max_tokens",
    "options",
    "schema",
)
REQUIRED = ("id",)
DEFAULT_TEMPERATURE = 0.7  # GPT.chat_completion's default, so a batch line means the same call
_MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One validated input line: the arguments of a ``GPT.complete`` call, and its id."""

    id: ItemId
    model: str
    system: str
    user: str | None
    temperature: float
    max_tokens: int | None
    line: int
    messages: tuple[Message, ...] = ()
    """Turns between the system message and ``user`` (OpenAI-shaped on the line)."""
    options: Options = NO_OPTIONS
    schema: Mapping[str, Any] | None = None
    """The JSON schema the answer must follow (the line's own, else the batch's), or None."""

    def request(self, model: str | None = None) -> ChatRequest:
        """The checked request this line stands for (to ``model``, else its own)."""
        return build_request(
            self.model if model is None else model,
            self.system,
            self.user,
            self.temperature,
            self.max_tokens,
            messages=self.messages or None,
            options=None if self.options is NO_OPTIONS else self.options,
        )


class BatchInputError(ValidationError):
    """The input has problems; ``problems`` lists every one as ``(line, message)``."""

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        self.source = source
        self.problems = problems
        listed = [f"  {source}:{line}: {message}" for line, message in problems[:_MAX_LISTED]]
        if len(problems) > _MAX_LISTED:
            listed.append(f"  ... and {len(problems) - _MAX_LISTED} more")
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{source}: {count}, nothing was sent:\n" + "\n".join(listed))


def read_items(
    path: str | os.PathLike[str],
    *,
    default_model: str,
    schema: Mapping[str, Any] | None = None,
) -> list[BatchItem]:
    """Read and validate a JSONL file; lines without a ``model`` use ``default_model``, and
    lines without a ``schema`` use ``schema`` (None: a text answer).

    Raises :class:`BatchInputError` listing every bad line, or ``OSError`` if the file
    cannot be read.
    """
    with open(path, "rb") as file:
        return parse_items(file, default_model=default_model, source=os.fspath(path), schema=schema)


def parse_items(
    lines: Iterable[bytes | str],
    *,
    default_model: str,
    source: str = "<input>",
    schema: Mapping[str, Any] | None = None,
) -> list[BatchItem]:
    """Validate JSONL lines (bytes are decoded as UTF-8); blank lines are skipped."""
    if schema is not None:
        schema = check_schema(schema, "the batch's schema")
    items: list[BatchItem] = []
    problems: list[tuple[int, str]] = []
    first_line: dict[ItemId, int] = {}
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            problems.append((number, f"not UTF-8 text (byte {exc.start + 1})"))
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            item = _item(text, number, default_model, schema)
        except ValidationError as exc:
            problems.append((number, exc.message))
            continue
        seen = first_line.get(item.id)
        if seen is not None:
            problems.append((number, f"duplicate id {item.id!r} (first on line {seen})"))
            continue
        first_line[item.id] = number
        items.append(item)
    if problems:
        raise BatchInputError(source, problems)
    return items


def _item(
    text: str, number: int, default_model: str, default_schema: Mapping[str, Any] | None
) -> BatchItem:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise ValidationError("JSON nested too deeply to read") from None
    if not isinstance(data, dict):
        raise ValidationError(f"expected a JSON object, got {_json_kind(data)}")
    unknown = [name for name in data if name not in FIELDS]
    if unknown:
        raise ValidationError(
            f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})"
            if len(unknown) == 1
            else f"unknown fields {', '.join(map(repr, unknown))} (fields: {', '.join(FIELDS)})"
        )
    missing = [name for name in REQUIRED if data.get(name) is None]
    if data.get("user") is None and data.get("messages") is None:
        missing.append("user")
    if missing:
        raise ValidationError(f"missing {' and '.join(map(repr, missing))}")
    item_id = data["id"]
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        raise ValidationError(f"'id' must be a string or an integer, not {_json_kind(item_id)}")
    if item_id == "":
        raise ValidationError("'id' must not be empty")
    for name in ("system", "user"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{name!r} must be a string, not {_json_kind(value)}")
    model = data.get("model")
    temperature = data.get("temperature")
    item = BatchItem(
        id=item_id,
        model=check_model(default_model if model is None else model),
        system=data.get("system") or "",
        user=data.get("user"),
        temperature=check_temperature(DEFAULT_TEMPERATURE if temperature is None else temperature),
        max_tokens=check_max_tokens(data.get("max_tokens")),
        line=number,
        messages=messages_from(data["messages"], "'messages'") if "messages" in data else (),
        options=options_from(data.get("options")),
        schema=default_schema if data.get("schema") is None else check_schema(data["schema"]),
    )
    item.request()  # the whole request checked now: tool turns answered, sizes, options
    return item


def check_schema(value: Any, name: str = "'schema'") -> dict[str, Any]:
    """``value`` if it is a JSON schema object that jsonschema accepts (checked before any
    line is sent, so a typo in a schema costs nothing)."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"{name} must be a JSON schema object, not {_json_kind(value)}")
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:
        raise ValidationError(
            "checking typed answers needs jsonschema: pip install 'moodlemate-ai[structured]'"
        ) from None
    schema = dict(value)
    try:
        jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator).check_schema(
            schema
        )
    except jsonschema.SchemaError as exc:
        raise ValidationError(f"{name} is not a valid JSON schema: {exc.message}") from None
    return schema


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
