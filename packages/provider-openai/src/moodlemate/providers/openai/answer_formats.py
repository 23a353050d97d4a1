"""How each OpenAI model is asked for a typed answer (Structured Outputs and JSON mode).

OpenAI's Structured Outputs guide: ``response_format: json_schema`` with ``strict: true`` works
on gpt-4o from its 2024-08-06 snapshot on, gpt-4o-mini, gpt-4.1, gpt-4.5, gpt-5 and the o-series
from o1 (2024-12-17) and o3-mini on; JSON mode (``json_object``) on gpt-3.5-turbo, gpt-4-turbo
and gpt-4o-2024-05-13; o1-mini, o1-preview and gpt-4 take neither, so the schema goes in the
instructions. A schema strict mode cannot carry (see :mod:`.strict_schema`) is sent non-strict,
and the reply is checked against the full schema either way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from moodlemate.ai.plugin import AnswerFormat, AnswerMode, answer_instructions
from moodlemate.providers.openai.models import family
from moodlemate.providers.openai.strict_schema import to_strict

__all__ = ["answer_format", "best_mode", "tool_definition"]

log = logging.getLogger("moodlemate.ai")

_STRUCTURED = re.compile(
    r"^(gpt-4o-mini|gpt-4o|chatgpt-4o-latest|gpt-4\.1(-mini|-nano)?|gpt-4\.5-preview"
    r"|gpt-5(\.\d+)?(-mini|-nano|-pro|-chat-latest)?|o1|o1-pro|o3(-mini|-pro)?|o4-mini)$"
)
_JSON_MODE = re.compile(r"^(gpt-3\.5-turbo|gpt-4-turbo(-preview)?|gpt-4o)$")
_OLD_GPT_4O = "gpt-4o-2024-05-13"


def best_mode(model: str) -> AnswerMode | None:
    """The best way ``model`` takes a typed answer; None when OpenAI's tables do not know it."""
    vendor, slash, _ = model.partition("/")
    if slash and vendor.lower() != "openai":
        return None  # another vendor's model behind a router: its own rules, unknown here
    name = model.rsplit("/", 1)[-1].lower()
    fam = family(model)
    if name.startswith(_OLD_GPT_4O) or (fam == "o1" and name.startswith("o1-2024-09")):
        return "json_object" if fam == "gpt-4o" else "instructions"
    if _STRUCTURED.match(fam):
        return "json_schema"
    if _JSON_MODE.match(fam):
        return "json_object"
    if fam in ("o1-mini", "o1-preview", "gpt-4"):
        return "instructions"
    return None


def answer_format(
    model: str, name: str, schema: Mapping[str, Any], mode: AnswerMode | None
) -> AnswerFormat | None:
    """The format for ``model``, or None to leave it to the generic default (a model these
    rules do not know, on a server that may be anything)."""
    chosen = mode or best_mode(model)
    if chosen is None:
        return None
    if chosen == "json_object":
        return AnswerFormat(
            "json_object",
            {"response_format": {"type": "json_object"}},
            instructions=answer_instructions(schema),
        )
    if chosen == "instructions":
        return AnswerFormat("instructions", instructions=answer_instructions(schema))
    strict = to_strict(schema)
    if not strict.strict:
        log.info("schema %r sent without strict mode: %s", name, "; ".join(strict.refusals)[:500])
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": strict.schema, "strict": strict.strict},
    }
    return AnswerFormat("json_schema", {"response_format": response_format}, notes=strict.notes)


def tool_definition(model: str, definition: Mapping[str, Any]) -> Mapping[str, Any]:
    """A function tool in strict mode for the models that take Structured Outputs (the same
    models take strict function calling), unless its ``strict`` says otherwise or its schema
    cannot be strict."""
    function = definition.get("function")
    if not isinstance(function, Mapping) or function.get("strict") is False:
        return definition
    if best_mode(model) != "json_schema":
        return definition
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    strict = to_strict(parameters)
    if not strict.strict:
        log.info(
            "tool %r sent without strict mode: %s",
            function.get("name"),
            "; ".join(strict.refusals)[:500],
        )
        return {**definition, "function": {**function, "strict": False}}
    return {**definition, "function": {**function, "parameters": strict.schema, "strict": True}}
