"""The shell's one-line schema syntax."""

from __future__ import annotations

import pytest
from moodlemate.ai._concise_schema import concise_schema, multi_schema
from moodlemate.ai.errors import ValidationError
from moodlemate.providers.openai.strict_schema import strict_violations


def test_names_types_and_descriptions() -> None:
    schema = concise_schema("name, age int, score float, ok bool, bio: a short bio, with")
    assert schema["properties"] == {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "ok": {"type": "boolean"},
        "bio": {"type": "string", "description": "a short bio"},
        "with": {"type": "string"},  # commas separate fields on one line
    }


def test_newlines_separate_fields_so_descriptions_may_hold_commas() -> None:
    schema = concise_schema("name\nbio: short, friendly\nage int: in years")
    assert schema["properties"]["bio"]["description"] == "short, friendly"
    assert schema["properties"]["age"] == {"type": "integer", "description": "in years"}
    assert schema["required"] == ["name", "bio", "age"]


def test_the_schemas_are_strict_ready() -> None:
    schema = concise_schema("name, age int")
    assert strict_violations(schema) == []
    assert strict_violations(multi_schema(schema)) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "names no fields"),
        ("name, age integer", "unknown type 'integer'"),
        ("name, name", "given twice"),
        ("9lives", "cannot read schema field"),
    ],
)
def test_mistakes_are_named(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        concise_schema(text)
