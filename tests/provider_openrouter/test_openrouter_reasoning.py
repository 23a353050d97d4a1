"""OpenRouter's ``reasoning`` object over real HTTP: ``reasoning_effort`` becomes its ``effort``,
``extra`` adds its other keys, and the reasoning it returns stays out of the answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moodlemate.ai import GPT, UnsupportedInputError
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY

KEY = "sk-or-v1-" + "0" * 64


@pytest.fixture
def router() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        srv.models = []
        yield srv


def or_gpt(server: LoopbackServer) -> GPT:
    return GPT("openrouter", endpoint=f"{server.origin}/api/v1", api_key=KEY, retry=FAST_RETRY)


@pytest.mark.parametrize("model", ["openai/o3-mini", "anthropic/claude-sonnet-4"])
def test_reasoning_effort_goes_in_the_reasoning_object(router: LoopbackServer, model: str) -> None:
    router.enqueue(Reply(text="42", reasoning="six sevens"))
    completion = or_gpt(router).complete(model, "", "x", options={"reasoning_effort": "high"})
    body = router.chat_requests[-1].body
    assert body["reasoning"] == {"effort": "high"}
    assert "reasoning_effort" not in body
    assert (completion.text, completion.reasoning) == ("42", "six sevens")


def test_extra_adds_exclude_and_max_tokens(router: LoopbackServer) -> None:
    gpt = or_gpt(router)
    gpt.complete(
        "openai/o3-mini",
        "",
        "x",
        options={"reasoning_effort": "low"},
        extra={"reasoning": {"exclude": True}},
    )
    assert router.chat_requests[-1].body["reasoning"] == {"exclude": True, "effort": "low"}
    gpt.complete("anthropic/claude-sonnet-4", "", "x", extra={"reasoning": {"max_tokens": 2000}})
    assert router.chat_requests[-1].body["reasoning"] == {"max_tokens": 2000}


def test_effort_and_a_token_cap_together_are_refused_unsent(router: LoopbackServer) -> None:
    with pytest.raises(UnsupportedInputError, match="not both"):
        or_gpt(router).complete(
            "anthropic/claude-sonnet-4",
            "",
            "x",
            options={"reasoning_effort": "high"},
            extra={"reasoning": {"max_tokens": 2000}},
        )
    assert router.chat_requests == []


def test_a_reasoning_summary_is_refused_on_openrouter(router: LoopbackServer) -> None:
    with pytest.raises(UnsupportedInputError, match="reasoning_summary"):
        or_gpt(router).complete("openai/o3", "", "x", options={"reasoning_summary": "auto"})
    assert router.requests == []
