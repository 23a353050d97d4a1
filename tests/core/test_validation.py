"""Bad call arguments fail with a ValidationError before anything reaches the server."""

from __future__ import annotations

import math

import pytest
from moodlemate.ai import GPT, MoodlemateError, ValidationError
from moodlemate.ai.testing import LoopbackServer

GOOD = {
    "model": "gpt-4o-mini",
    "system_message": "Be brief.",
    "user_message": "Hi",
    "temperature": 0.7,
    "max_tokens": None,
}

BAD_ARGUMENTS = [
    ("temperature", -0.1),
    ("temperature", 2.01),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("temperature", True),
    ("temperature", "0.5"),
    ("temperature", None),
    ("max_tokens", 0),
    ("max_tokens", -1),
    ("max_tokens", 1.5),
    ("max_tokens", 100.0),
    ("max_tokens", True),
    ("max_tokens", "100"),
    ("model", ""),
    ("model", "   "),
    ("model", " gpt-4o-mini"),
    ("model", None),
    ("model", 4),
    ("model", b"gpt-4o-mini"),
    ("system_message", None),
    ("system_message", 42),
    ("system_message", ["Be brief."]),
    ("user_message", None),
    ("user_message", b"Hi"),
    ("user_message", {"role": "user", "content": "Hi"}),
]


@pytest.mark.parametrize(("name", "value"), BAD_ARGUMENTS)
def test_bad_argument_is_rejected_before_any_request(
    gpt: GPT, server: LoopbackServer, name: str, value: object
) -> None:
    with pytest.raises(ValidationError, match=name) as caught:
        gpt.chat_completion(**{**GOOD, name: value})  # type: ignore[arg-type]
    assert server.requests == []  # the server saw nothing at all
    assert isinstance(caught.value, MoodlemateError)
    assert isinstance(caught.value, ValueError)  # also catchable as a plain ValueError
    assert gpt.ledger.calls == 0


@pytest.mark.parametrize(
    ("name", "value"), [("temperature", 0), ("temperature", 2), ("max_tokens", 1)]
)
def test_boundary_values_are_accepted(
    gpt: GPT, server: LoopbackServer, name: str, value: object
) -> None:
    gpt.chat_completion(**{**GOOD, name: value})  # type: ignore[arg-type]
    assert len(server.chat_requests) == 1
    assert server.chat_requests[0].body[name] == value


def test_prompt_of_context_assistant_is_validated(gpt: GPT, server: LoopbackServer) -> None:
    with pytest.raises(ValidationError, match="prompt"):
        gpt.context_assistant(None)  # type: ignore[arg-type]
    assert server.requests == []


def test_validation_comes_before_the_key_check(server: LoopbackServer) -> None:
    keyless = GPT()  # api.openai.com without a key: a call would raise MissingAPIKeyError
    with pytest.raises(ValidationError, match="temperature"):
        keyless.chat_completion("gpt-4o-mini", "", "Hi", temperature=3)
