"""OpenRouter passes parts, tool turns and options through in OpenAI's shapes; OpenAI's own
models behind it keep OpenAI's rules, other vendors' models are sent what they are given."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moodlemate.ai import GPT, ImagePart, Message, TextPart, ToolCall, UnsupportedInputError
from moodlemate.ai.testing import LoopbackServer
from support import FAST_RETRY, pdf_bytes, png_bytes

KEY = "sk-or-v1-" + "0" * 64


@pytest.fixture
def router() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        srv.models = []
        yield srv


def or_gpt(server: LoopbackServer) -> GPT:
    return GPT("openrouter", endpoint=f"{server.origin}/api/v1", api_key=KEY, retry=FAST_RETRY)


def test_parts_tool_turns_and_options_pass_through(router: LoopbackServer) -> None:
    from moodlemate.ai import FilePart

    gpt = or_gpt(router)
    history = [
        Message("user", (TextPart("Compare"), ImagePart(png_bytes()), FilePart(pdf_bytes()))),
        Message("assistant", "", tool_calls=(ToolCall("c1", "look", "{}"),)),
        Message("tool", "seen", tool_call_id="c1"),
    ]
    gpt.complete(
        "anthropic/claude-sonnet-4",
        messages=history,
        options={"top_p": 0.5, "seed": 3, "reasoning_effort": "low"},
        extra={"provider": {"order": ["anthropic"]}},
    )
    body = router.chat_requests[-1].body
    assert [p["type"] for p in body["messages"][0]["content"]] == ["text", "image_url", "file"]
    assert body["messages"][1]["tool_calls"][0]["id"] == "c1"
    assert (body["top_p"], body["seed"], body["reasoning"]) == (0.5, 3, {"effort": "low"})
    assert "reasoning_effort" not in body  # OpenRouter's reasoning object carries it
    assert body["provider"] == {"order": ["anthropic"]}


def test_openai_models_behind_the_router_keep_openai_rules(router: LoopbackServer) -> None:
    gpt = or_gpt(router)
    with pytest.raises(UnsupportedInputError, match="top_p"):
        gpt.complete("openai/o3-mini", user_message="x", options={"top_p": 0.5})
    with pytest.raises(UnsupportedInputError, match="image"):
        gpt.complete("openai/gpt-3.5-turbo", messages=[Message("user", (ImagePart(png_bytes()),))])
    assert router.chat_requests == []
