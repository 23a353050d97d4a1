"""How a typed answer is asked for on one model: the request fields and any instructions.

Servers differ: OpenAI's recent models take ``response_format: json_schema`` in strict mode, its
older ones only ``json_object`` (valid JSON, no schema), and many OpenAI-compatible servers take
a non-strict ``json_schema`` or nothing at all. Which one a model takes is vendor knowledge, so
the provider decides (:meth:`Provider.answer_format`); core only asks, sends, and checks the
reply against the schema whatever the mode, so every mode still yields a validated answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = ["AnswerFormat", "AnswerMode", "answer_instructions", "fallback_modes"]

AnswerMode = Literal["json_schema", "json_object", "instructions"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AnswerFormat:
    """What to add to a request for a typed answer in ``mode``."""

    mode: AnswerMode
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    """Request fields to send (``{"response_format": {...}}``); empty for ``instructions``."""
    instructions: str | None = None
    """Text to put before the conversation (the schema, for modes that cannot carry it)."""
    notes: tuple[str, ...] = ()
    """What the provider changed in the schema to send it (checked locally instead)."""


def answer_instructions(schema: Mapping[str, Any]) -> str:
    """The instruction that carries a schema in words, for servers that take no schema."""
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    return (
        "Reply with only a JSON value, no prose and no code fence, that follows this JSON "
        f"schema:\n{text}"
    )


def fallback_modes(mode: AnswerMode) -> tuple[AnswerMode, ...]:
    """The modes to try, in order, after a server refused ``mode``."""
    order: tuple[AnswerMode, ...] = ("json_schema", "json_object", "instructions")
    return order[order.index(mode) + 1 :]
