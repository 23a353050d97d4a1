"""Typed answers: the schema sent for each kind of type, and the checking of a model's text."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from decimal import Decimal
from typing import Any, Literal, TypedDict

import pytest
from moodlemate.ai._answer_schema import AnswerProblems, answer_schema
from moodlemate.ai._partial_json import MISSING, complete_prefix


class Status(enum.Enum):
    PAID = "paid"
    OPEN = "open"


@dataclasses.dataclass
class Line:
    item: str
    total: Decimal


@dataclasses.dataclass
class Invoice:
    number: str
    issued: datetime.date
    status: Status
    lines: list[Line]
    note: str | None = None


class Person(TypedDict):
    name: str
    age: int


INVOICE = (
    '{"number": "A-7", "issued": "2026-12-01", "status": "paid",'
    ' "lines": [{"item": "tea", "total": 0.10}, {"item": "cake", "total": 0.20}]}'
)


def test_a_dataclass_answer_is_built_with_exact_decimals() -> None:
    schema = answer_schema(Invoice)
    assert schema.name == "Invoice"
    assert not schema.wrapped
    assert schema.schema["type"] == "object"
    invoice = schema.parse(INVOICE)
    assert invoice == Invoice(
        number="A-7",
        issued=datetime.date(2026, 12, 1),
        status=Status.PAID,
        lines=[Line("tea", Decimal("0.10")), Line("cake", Decimal("0.20"))],
    )
    assert sum(line.total for line in invoice.lines) == Decimal("0.30")  # not 0.30000000000000004


ENGINES = ["auto", "jsonschema"]
"""pydantic checks non-pydantic types when installed ("auto"); jsonschema otherwise."""


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"number": "A-7"}', r"^issued: ('issued' is a required property|Field required)"),
        (
            INVOICE.replace('"paid"', '"lost"'),
            r"^status: .*('lost' is not one of|'paid' or 'open')",
        ),
        (INVOICE.replace("0.10", '"ten cents"'), r"^lines\[0\]\.total: .*(not of type|decimal)"),
        (INVOICE.replace("2026-12-01", "yesterday"), r"^issued: .*(not a 'date'|valid date)"),
        ("{not json", r"^the answer: .*(not valid JSON|Invalid JSON)"),
        ("[" * 100_000 + "]" * 100_000, r"(nests too deeply|recursion limit)"),
    ],
)
def test_invalid_answers_say_what_is_wrong(engine: str, text: str, problem: str) -> None:
    with pytest.raises(AnswerProblems) as caught:
        answer_schema(Invoice, engine=engine).parse(text)  # type: ignore[arg-type]
    assert any(re.search(problem, p) for p in caught.value.problems), caught.value.problems


def test_jsonschema_refuses_fields_the_schema_does_not_name() -> None:
    with pytest.raises(AnswerProblems, match="Additional properties are not allowed"):
        answer_schema(Person, engine="jsonschema").parse('{"name": "a", "age": 1, "x": 2}')


@pytest.mark.parametrize("engine", ENGINES)
def test_both_engines_build_the_same_value(engine: str) -> None:
    invoice = answer_schema(Invoice, engine=engine).parse(INVOICE)  # type: ignore[arg-type]
    assert invoice.lines[0].total == Decimal("0.10")
    assert invoice.issued == datetime.date(2026, 12, 1)
    assert invoice.status is Status.PAID


def test_problems_are_bounded() -> None:
    text = '{"items": [' + ",".join(['"x"'] * 500) + "]}"
    with pytest.raises(AnswerProblems) as caught:
        answer_schema(
            {
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
            }
        ).parse(text)
    assert len(caught.value.problems) == 21
    assert caught.value.problems[-1] == "... and 480 more problems"


def test_a_typeddict_answer_is_a_dict() -> None:
    assert answer_schema(Person).parse('{"name": "Ada", "age": 36}') == {"name": "Ada", "age": 36}


def test_a_non_object_answer_is_wrapped() -> None:
    schema = answer_schema(list[Person])
    assert schema.wrapped
    assert schema.schema["required"] == ["value"]
    people = schema.parse('{"value": [{"name": "Ada", "age": 36}]}')
    assert people == [{"name": "Ada", "age": 36}]
    with pytest.raises(AnswerProblems, match='"value" field'):
        schema.parse('[{"name": "Ada", "age": 36}]')


def test_literals_and_unions() -> None:
    schema = answer_schema(dict[str, Literal["a", "b"] | int])
    assert not schema.wrapped  # a mapping is already an object
    assert schema.parse('{"x": "a", "y": 3}') == {"x": "a", "y": 3}
    with pytest.raises(AnswerProblems):
        schema.parse('{"x": "c"}')


def test_a_json_schema_dict_gives_plain_json() -> None:
    schema = answer_schema(
        {
            "title": "city weather",
            "type": "object",
            "properties": {"t": {"type": "number"}},
            "required": ["t"],
        }
    )
    assert schema.name == "city_weather"
    value = schema.parse('{"t": 21.5}')
    assert value == {"t": 21.5}
    assert isinstance(value["t"], float)


def test_a_markdown_fence_around_the_answer_is_tolerated() -> None:
    assert answer_schema(Person).parse('```json\n{"name": "Ada", "age": 36}\n```')["age"] == 36


def test_pydantic_models_validate_themselves() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):
        name: str
        price: Decimal

    schema = answer_schema(Item)
    item = schema.parse('{"name": "tea", "price": 0.10}')
    assert item.price == Decimal("0.10")
    with pytest.raises(AnswerProblems) as caught:
        schema.parse('{"name": "tea"}')
    assert caught.value.problems == ("price: Field required",)


def test_recursive_dataclass_schema_keeps_its_defs() -> None:
    @dataclasses.dataclass
    class Leaf:
        value: int

    schema = answer_schema(Leaf)
    assert "$defs" not in schema.schema
    assert schema.parse('{"value": 3}') == Leaf(3)


# -- streamed answers: the complete part of a prefix ------------------------------------------


def test_fields_appear_as_they_complete() -> None:
    text = '{"name": "Ada", "age": 36, "tags": ["x", "y"], "home": {"city": "London"}}'
    seen: list[Any] = []
    for end in range(len(text) + 1):
        value = complete_prefix(text[:end])
        if not seen or value != seen[-1]:
            seen.append(value)
    assert seen[0] is MISSING
    assert {"name": "Ada"} in seen
    assert {"name": "Ada", "age": 36} in seen
    assert not any(isinstance(v, dict) and v.get("name") == "A" for v in seen)  # no half strings
    assert seen[-1] == {"name": "Ada", "age": 36, "tags": ["x", "y"], "home": {"city": "London"}}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ('{"n": 12', {}),  # the number may go on
        ('{"n": 12,', {"n": 12}),
        ('{"ok": tr', {}),
        ('{"ok": true', {"ok": True}),
        ('{"s": "a\\"b', {}),
        ('{"s": "a\\"b"', {"s": 'a"b'}),
        ("[1, 2", [1]),
        ("", MISSING),
        ("  ", MISSING),
    ],
)
def test_prefixes(prefix: str, expected: Any) -> None:
    assert complete_prefix(prefix) == expected


def test_malformed_text_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="expected ':'"):
        complete_prefix('{"a" 1}')


def test_deep_nesting_does_not_overflow_the_stack() -> None:
    assert complete_prefix("[" * 100_000) is not None
