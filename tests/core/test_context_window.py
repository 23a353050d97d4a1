"""A request that cannot fit the model's context window is refused before it is sent."""

from __future__ import annotations

import pytest
from moodlemate.ai import GPT, ContextWindowExceededError
from moodlemate.ai.testing import LoopbackServer, Reply
from support import tiktoken_encoding


def _text_of(tokens: int) -> str:
    """Text of exactly ``tokens`` cl100k_base tokens (" hello" is one token)."""
    text = " hello" * tokens
    assert len(tiktoken_encoding("cl100k_base").encode(text)) == tokens
    return text


def test_prompt_over_the_window_is_refused_without_a_request(
    server: LoopbackServer, gpt: GPT
) -> None:
    with pytest.raises(ContextWindowExceededError) as caught:
        gpt.chat_completion("gpt-4", "", _text_of(9_000))  # gpt-4: 8,192-token window
    assert server.chat_requests == []
    message = str(caught.value)
    assert "8,192" in message
    assert "9,0" in message  # the counted prompt


def test_prompt_plus_max_tokens_over_the_window_is_refused(
    server: LoopbackServer, gpt: GPT
) -> None:
    prompt = _text_of(5_000)
    # prompt: 3 + 1 ("user") + 5,000 + 3 = 5,007 tokens; 5,007 + 3,186 = 8,193 > 8,192
    assert gpt.count_chat_tokens("", prompt, model="gpt-4") == 5_007
    with pytest.raises(ContextWindowExceededError) as caught:
        gpt.chat_completion("gpt-4", "", prompt, max_tokens=3_186)
    assert "max_tokens" in str(caught.value)
    assert server.chat_requests == []
    server.enqueue(Reply(text="ok"))
    gpt.chat_completion("gpt-4", "", prompt, max_tokens=3_185)  # exactly 8,192: fits
    gpt.chat_completion("gpt-4", "", prompt)  # no max_tokens: room for a reply is enough
    assert len(server.chat_requests) == 2


def test_dated_snapshot_uses_its_family_window(server: LoopbackServer, gpt: GPT) -> None:
    with pytest.raises(ContextWindowExceededError):
        gpt.chat_completion("gpt-4-0613", "", _text_of(9_000))
    assert server.chat_requests == []


def test_gpt5_input_limit_is_below_its_window(server: LoopbackServer, gpt: GPT) -> None:
    # 280,000 tokens fit gpt-5-mini's 400,000 window but not its 272,000 input limit.
    with pytest.raises(ContextWindowExceededError) as caught:
        gpt.chat_completion("gpt-5-mini", "", " hello" * 280_000)
    assert "272,000" in str(caught.value)
    assert server.chat_requests == []


def test_models_without_a_known_window_are_sent(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="ok"))
    gpt.chat_completion("llama3.2", "", _text_of(9_000))
    assert len(server.chat_requests) == 1
