"""The call path's copies of frozen values are the copies ``dataclasses.replace`` makes."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from moodlemate.ai import Completion, RetryPolicy, Usage
from moodlemate.ai._call_types import ChatRequest, Connection
from moodlemate.ai._evolve import evolved, plain
from moodlemate.ai._messages import Message
from moodlemate.ai.errors import ValidationError


def _completion() -> Completion:
    return Completion(
        text="hi",
        model="m",
        provider="openai",
        usage=Usage(prompt_tokens=10, completion_tokens=5),
        tool_calls=({"id": "c1"},),
    )


@pytest.mark.parametrize(
    ("value", "changes"),
    [
        (_completion(), {"cost": Decimal("0.1"), "priced_model": "m", "attempts": 3}),
        (_completion(), {}),
        (Connection("http://127.0.0.1:1/v1", api_key="sk-" + "k" * 30), {"timeout": 2.5}),
        (ChatRequest("m", (Message("user", "hi"),)), {"stream": True, "model": "n"}),
    ],
)
def test_a_copy_equals_replace_field_for_field(value: object, changes: dict[str, object]) -> None:
    copy = evolved(value, **changes)
    want = dataclasses.replace(value, **changes)  # type: ignore[type-var]
    assert copy is not value
    assert type(copy) is type(want)
    assert copy == want
    try:
        assert hash(copy) == hash(want)
    except TypeError:  # a completion with tool calls (dicts) has no hash, copied or not
        with pytest.raises(TypeError):
            hash(want)
    for field in dataclasses.fields(want):  # type: ignore[arg-type]
        assert getattr(copy, field.name) is getattr(want, field.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(copy, dataclasses.fields(want)[0].name, "other")  # type: ignore[arg-type]


def test_an_unknown_field_is_refused_as_replace_refuses_it() -> None:
    with pytest.raises(TypeError, match="nope"):
        evolved(_completion(), nope=1)


def test_a_class_that_checks_its_fields_still_checks_them() -> None:
    policy = RetryPolicy()
    assert evolved(policy, attempts=2).attempts == 2
    with pytest.raises(ValidationError):
        evolved(policy, attempts=0)


def test_a_subclass_with_its_own_init_goes_through_it() -> None:
    seen: list[str] = []

    class Noted(Completion):
        __slots__ = ()

        def __init__(self, *args: object, **kwargs: object) -> None:
            seen.append("init")
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    value = Noted(text="a", model="m", provider="p")
    copy = evolved(value, text="b")
    assert type(copy) is Noted
    assert copy.text == "b"
    assert seen == ["init", "init"]


def test_a_class_whose_init_does_more_than_store_is_not_marked_plain() -> None:
    @dataclasses.dataclass(frozen=True)
    class Derived:
        a: int
        b: int = dataclasses.field(init=False, default=0)

        def __post_init__(self) -> None:
            object.__setattr__(self, "b", self.a * 2)

    with pytest.raises(TypeError, match="not a plain dataclass"):
        plain(Derived)
    assert evolved(Derived(1), a=5).b == 10  # unmarked: through replace, so __post_init__

    class Undecorated(Completion):
        __slots__ = ()

    with pytest.raises(TypeError, match="not a plain dataclass"):
        plain(Undecorated)
