"""JSON schemas from Python types and functions, checked by a real JSON Schema validator."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from decimal import Decimal
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import jsonschema
import pytest
from moodlemate.ai._json_schema import SchemaError, function_schema, type_schema
from moodlemate.ai.errors import ValidationError


class Unit(enum.Enum):
    C = "C"
    F = "F"


@dataclasses.dataclass
class Line:
    """One line of an invoice."""

    item: str
    quantity: int
    price: Decimal


@dataclasses.dataclass
class Invoice:
    number: str
    lines: list[Line]
    paid: bool = False
    note: str | None = None


class Address(TypedDict):
    street: str
    city: str
    zip: NotRequired[str]


@dataclasses.dataclass
class Node:
    """A tree: recursion goes through $defs."""

    value: int
    children: list[Node]


class Opaque:
    """Not describable: no fields a schema could name."""


def weather(city: str, unit: Literal["C", "F"] = "C", days: int | None = None) -> str:
    """Current temperature in a city.

    Args:
        city: The city's name, e.g. Oslo.
        unit: C or F.
        days: How many days
            of forecast to add.
    """
    return ""


def _valid(schema: dict[str, Any], value: Any) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


def test_a_function_becomes_a_tool_with_its_docstring() -> None:
    schema = function_schema(weather)
    assert schema["name"] == "weather"
    assert schema["description"] == "Current temperature in a city."
    params = schema["parameters"]
    assert params["required"] == ["city"]
    assert params["properties"]["city"] == {
        "type": "string",
        "description": "The city's name, e.g. Oslo.",
    }
    assert params["properties"]["unit"]["enum"] == ["C", "F"]
    assert params["properties"]["unit"]["default"] == "C"
    assert params["properties"]["days"]["description"] == "How many days of forecast to add."
    jsonschema.Draft202012Validator.check_schema(params)
    assert _valid(params, {"city": "Oslo", "unit": "F"})
    assert not _valid(params, {"unit": "F"})
    assert not _valid(params, {"city": "Oslo", "unit": "K"})
    assert not _valid(params, {"city": "Oslo", "extra": 1})


def test_sphinx_style_parameter_lines() -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers.

        :param a: the first
        :param int b: the second
        :returns: the sum
        """
        return a + b

    schema = function_schema(add)
    assert schema["description"] == "Add two numbers."
    assert schema["parameters"]["properties"]["a"]["description"] == "the first"
    assert schema["parameters"]["properties"]["b"]["description"] == "the second"


def test_annotated_text_describes_a_parameter() -> None:
    def find(query: Annotated[str, "What to look for"]) -> list[str]:
        return []

    props = function_schema(find)["parameters"]["properties"]
    assert props["query"] == {"type": "string", "description": "What to look for"}


def test_nested_dataclasses_and_decimals() -> None:
    schema = type_schema(Invoice)
    jsonschema.Draft202012Validator.check_schema(schema)
    good = {"number": "A-1", "lines": [{"item": "x", "quantity": 2, "price": 9.5}]}
    assert _valid(schema, good)
    assert not _valid(schema, {"number": "A-1", "lines": [{"item": "x"}]})
    assert schema["$defs"]["Line"]["description"] == "One line of an invoice."
    assert schema["$defs"]["Invoice"]["required"] == ["number", "lines"]


def test_typeddict_required_and_not_required_keys() -> None:
    schema = type_schema(Address)
    assert schema["$defs"]["Address"]["required"] == ["street", "city"]
    assert _valid(schema, {"street": "a", "city": "b"})
    assert not _valid(schema, {"street": "a"})


def test_recursive_types_reference_themselves() -> None:
    schema = type_schema(Node)
    assert _valid(schema, {"value": 1, "children": [{"value": 2, "children": []}]})
    assert not _valid(schema, {"value": 1, "children": [{"value": "two", "children": []}]})


@pytest.mark.parametrize(
    ("annotation", "good", "bad"),
    [
        (Unit, "C", "K"),
        (list[int], [1, 2], [1, "2"]),
        (tuple[int, str], [1, "a"], [1, 2]),
        (tuple[int, ...], [1, 2, 3], ["a"]),
        (dict[str, float], {"a": 1.5}, {"a": "x"}),
        (int | str, "a", 1.5),
        (datetime.date, "2026-01-31", 5),
        (Literal[1, 2, 3], 2, 4),
        (Any, {"anything": True}, None),
    ],
)
def test_type_shapes(annotation: Any, good: Any, bad: Any) -> None:
    schema = type_schema(annotation)
    assert _valid(schema, good)
    if annotation is not Any:
        assert not _valid(schema, bad)


def test_pydantic_models_describe_themselves() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str
        age: int

    schema = type_schema(list[Person])
    assert _valid(schema, [{"name": "a", "age": 3}])
    assert not _valid(schema, [{"name": "a", "age": "three"}])


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (lambda *args: None, "name"),
        (print, "signature|type hint|args"),
    ],
)
def test_functions_that_cannot_be_described_are_refused(function: Any, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        function_schema(function)


def test_refusals_are_validation_errors_naming_the_parameter() -> None:
    def untyped(x, y: int) -> None:  # type: ignore[no-untyped-def]
        return None

    def variadic(*items: int) -> None:
        return None

    def odd(x: dict[int, str]) -> None:
        return None

    def opaque(x: Opaque) -> None:
        return None

    for function, message in [
        (untyped, "'x' of untyped has no type hint"),
        (variadic, r"\*args"),
        (odd, "keys are strings"),
        (opaque, "Opaque is not a JSON type"),
    ]:
        with pytest.raises(ValidationError, match=message):
            function_schema(function)


def test_two_classes_with_one_name_are_refused() -> None:
    first = dataclasses.make_dataclass("Item", [("a", int)])
    second = dataclasses.make_dataclass("Item", [("b", str)])
    pair = dataclasses.make_dataclass("Pair", [("x", first), ("y", second)])
    with pytest.raises(SchemaError, match="both named Item"):
        type_schema(pair)


def test_a_bad_tool_name_is_refused() -> None:
    with pytest.raises(SchemaError, match="tool name"):
        function_schema(weather, name="has spaces")
