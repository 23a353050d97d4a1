"""OpenAI's strict-mode rules (Structured Outputs guide, "Supported schemas"), as written down in
strict_schema's docstring: generated schemas are rewritten to follow them, and what cannot follow
them is refused with a path and a reason."""

from __future__ import annotations

import dataclasses
import enum
from decimal import Decimal
from typing import Any, Literal, NotRequired, TypedDict

import jsonschema
import pytest
from moodlemate.ai._json_schema import function_schema, type_schema
from moodlemate.providers.openai.strict_schema import strict_violations, to_strict


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Line:
    item: str
    price: Decimal


@dataclasses.dataclass
class Invoice:
    number: str
    lines: list[Line]
    colour: Colour | None = None
    note: str = ""


class Address(TypedDict):
    street: str
    zip: NotRequired[str]


@dataclasses.dataclass
class Tree:
    value: int
    children: list[Tree]


def weather(city: str, unit: Literal["C", "F"] = "C", days: int | None = None) -> str:
    """Weather."""
    return ""


@pytest.mark.parametrize("annotation", [Invoice, Address, Tree])
def test_generated_schemas_follow_every_rule_once_made_strict(annotation: Any) -> None:
    result = to_strict(_rooted(annotation))
    assert result.strict, result.refusals
    assert strict_violations(result.schema) == []
    jsonschema.Draft202012Validator.check_schema(result.schema)


def _rooted(annotation: Any) -> dict[str, Any]:
    """A class schema is a $ref; structured output roots it in an object wrapper's place."""
    schema = type_schema(annotation)
    name = annotation.__name__
    return {**schema["$defs"][name], "$defs": schema["$defs"]}


def test_a_tool_schema_is_made_strict_with_optional_fields_nullable() -> None:
    result = to_strict(function_schema(weather)["parameters"])
    assert result.strict
    schema = result.schema
    assert schema["required"] == ["city", "unit", "days"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["unit"]["type"] == ["string", "null"]
    assert None in schema["properties"]["unit"]["enum"]
    assert "default" not in schema["properties"]["unit"]
    assert any("default dropped" in n for n in result.notes)
    assert strict_violations(schema) == []
    # Still accepts what the function takes, now with an explicit null for a default.
    jsonschema.validate({"city": "Oslo", "unit": None, "days": None}, schema)


def test_narrowing_keywords_are_dropped_with_a_note_not_refused() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "site": {"type": "string", "format": "uri"},
            "when": {"type": "string", "format": "date-time"},
        },
        "required": ["name", "tags", "site", "when"],
    }
    result = to_strict(schema)
    assert result.strict
    assert result.schema["properties"]["name"] == {"type": "string"}
    assert "format" not in result.schema["properties"]["site"]
    assert result.schema["properties"]["when"]["format"] == "date-time"
    notes = "\n".join(result.notes)
    assert "minLength" in notes
    assert "uniqueItems" in notes
    assert "'uri'" in notes
    assert strict_violations(result.schema) == []
    assert schema["properties"]["name"]["minLength"] == 2  # the caller's schema is untouched


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "array", "items": {"type": "string"}}, "root must be an object"),
        ({"anyOf": [{"type": "object", "properties": {}}]}, "root must be an object"),
        (
            {
                "type": "object",
                "properties": {
                    "m": {"type": "object", "additionalProperties": {"type": "integer"}}
                },
            },
            "free-form keys",
        ),
        ({"type": "object"}, "without properties"),
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "negation"),
        ({"type": "object", "properties": {}, "allOf": [{}, {}]}, "intersection"),
        ({"type": "object", "properties": {}, "if": {}, "then": {}}, "conditional"),
        ({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}}, "oneOf"),
    ],
)
def test_shape_changing_schemas_are_refused_with_path_and_reason(
    schema: dict[str, Any], reason: str
) -> None:
    result = to_strict(schema)
    assert not result.strict
    assert any(reason in r for r in result.refusals), result.refusals
    assert result.schema == schema  # sent non-strict as given


def test_size_limits_are_refused() -> None:
    wide = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string"} for i in range(5001)},
        "required": [f"p{i}" for i in range(5001)],
        "additionalProperties": False,
    }
    assert any("5,000" in r for r in to_strict(wide).refusals)
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(12):
        deep = {
            "type": "object",
            "properties": {"x": deep},
            "required": ["x"],
            "additionalProperties": False,
        }
    assert any("nesting" in r for r in to_strict(deep).refusals)
    enums = {
        "type": "object",
        "properties": {
            "e": {"type": "string", "enum": [f"value-{i:04d}-" + "x" * 60 for i in range(300)]}
        },
        "required": ["e"],
    }
    assert any("enum of more than 250" in r for r in to_strict(enums).refusals)


def test_violations_are_listed_for_a_hand_written_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "minLength": 1}}}
    problems = strict_violations(schema)
    assert any("additionalProperties must be false" in p for p in problems)
    assert any("every property must be required" in p for p in problems)
    assert any("'minLength' is not supported" in p for p in problems)
