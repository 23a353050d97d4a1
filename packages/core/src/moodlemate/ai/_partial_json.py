"""The complete part of a JSON text that is still arriving: what a streamed typed answer shows.

A model streaming a JSON object sends it a few characters at a time. Parsing each prefix with a
normal JSON parser fails until the last byte; this parser returns, for any prefix, the values
that are already complete: an object holds the fields whose values have ended, an array the
items that have ended, and a string or number cut short is left out (a number may still grow,
and a half string would be shown as if it were the answer). Containers still open are returned
as far as they go, so a caller sees fields appear one by one.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MISSING", "complete_prefix"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What :func:`complete_prefix` returns when no value has begun, or the first is incomplete."""

_WHITESPACE = " \t\r\n"
_LITERALS = {"true": True, "false": False, "null": None}
_NUMBER_CHARS = frozenset("0123456789+-.eE")
MAX_DEPTH = 128
"""Nesting beyond this is not followed (the finished answer is parsed normally anyway)."""


class _Incomplete(Exception):
    """The text ended inside the value being read."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.depth = 0

    def skip(self) -> None:
        text, i = self.text, self.i
        while i < len(text) and text[i] in _WHITESPACE:
            i += 1
        self.i = i

    def value(self) -> Any:
        self.skip()
        if self.i >= len(self.text):
            raise _Incomplete
        char = self.text[self.i]
        if char == "{":
            return self.container(self.members, {})
        if char == "[":
            return self.container(self.items, [])
        if char == '"':
            return self.string()
        for word, value in _LITERALS.items():
            if self.text.startswith(word, self.i):
                self.i += len(word)
                return value
            if word.startswith(self.text[self.i :]):
                raise _Incomplete
        return self.number()

    def container(self, fill: Any, partial: Any) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Incomplete
        self.i += 1
        try:
            fill(partial)
        finally:
            self.depth -= 1
        return partial

    def members(self, into: dict[str, Any]) -> None:
        while True:
            self.skip()
            if self.i >= len(self.text):
                raise _Stop(into)
            if self.text[self.i] == "}":
                self.i += 1
                return
            if self.text[self.i] == ",":
                self.i += 1
                continue
            try:
                key = self.string()
                self.skip()
                if self.i >= len(self.text):
                    raise _Incomplete
                if self.text[self.i] != ":":
                    raise ValueError("expected ':'")
                self.i += 1
                into[key] = self.value()
            except _Incomplete:
                raise _Stop(into) from None
            except _Stop as inner:
                into[key] = inner.partial
                raise _Stop(into) from None

    def items(self, into: list[Any]) -> None:
        while True:
            self.skip()
            if self.i >= len(self.text):
                raise _Stop(into)
            if self.text[self.i] == "]":
                self.i += 1
                return
            if self.text[self.i] == ",":
                self.i += 1
                continue
            try:
                into.append(self.value())
            except _Incomplete:
                raise _Stop(into) from None
            except _Stop as inner:
                into.append(inner.partial)
                raise _Stop(into) from None

    def string(self) -> str:
        if self.text[self.i] != '"':
            raise ValueError("expected a string")
        start = self.i
        i = start + 1
        text = self.text
        while i < len(text):
            char = text[i]
            if char == "\\":
                i += 2
                continue
            if char == '"':
                self.i = i + 1
                result: str = json.loads(text[start : i + 1])
                return result
            i += 1
        raise _Incomplete

    def number(self) -> Any:
        start = i = self.i
        text = self.text
        while i < len(text) and text[i] in _NUMBER_CHARS:
            i += 1
        if i == start:
            raise ValueError(f"unexpected {text[i]!r}")
        if i == len(text):
            raise _Incomplete  # the number may go on in the next chunk
        self.i = i
        return json.loads(text[start:i])


class _Stop(Exception):
    """The text ended inside a container: ``partial`` holds what it had so far."""

    def __init__(self, partial: Any) -> None:
        super().__init__()
        self.partial = partial


def complete_prefix(text: str) -> Any:
    """The complete values of the JSON prefix ``text`` (see the module's docstring), or
    :data:`MISSING`. Malformed text raises ``ValueError``."""
    parser = _Parser(text)
    try:
        return parser.value()
    except _Incomplete:
        return MISSING
    except _Stop as stop:
        return stop.partial
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
