"""Counting a whole chat request: the OpenAI cookbook's figures, and what the server bills."""

from __future__ import annotations

import logging

import pytest
from moodlemate.ai import GPT, ValidationError
from moodlemate.ai.testing import LoopbackServer, Reply
from support import tiktoken_encoding

# The example conversation of OpenAI's cookbook "How to count tokens with tiktoken"
# (openai/openai-cookbook, examples/How_to_count_tokens_with_tiktoken.ipynb), whose published
# counts, checked there against the API's prompt_tokens, are 124 for gpt-4o and gpt-4o-mini
# and 129 for gpt-4 and gpt-3.5-turbo-0613.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


@pytest.mark.parametrize(
    ("model", "published"),
    [("gpt-4o", 124), ("gpt-4o-mini", 124), ("gpt-4", 129), ("gpt-3.5-turbo-0613", 129)],
)
def test_cookbook_conversation_counts_as_published(model: str, published: int) -> None:
    count = GPT().count_message_tokens(COOKBOOK_MESSAGES, model)
    assert count.tokens == published
    assert count.estimate is False


def test_chat_count_is_text_tokens_plus_the_documented_frame() -> None:
    encode = tiktoken_encoding("o200k_base").encode
    system, user = "You are terse.", "東京は日本の首都です 🎉 def f(): pass"
    # 3 per message + role + content, then 3 to prime the reply.
    expected = (
        (3 + len(encode("system")) + len(encode(system)))
        + (3 + len(encode("user")) + len(encode(user)))
        + 3
    )
    assert GPT().count_chat_tokens(system, user, model="gpt-4o") == expected


def test_chat_count_drops_an_empty_system_message_as_chat_completion_does() -> None:
    gpt = GPT()
    only_user = gpt.count_message_tokens([{"role": "user", "content": "Hi"}], "gpt-4o-mini")
    assert gpt.count_chat_tokens("", "Hi") == only_user.tokens


def test_chat_count_predicts_what_the_request_sends(server: LoopbackServer, gpt: GPT) -> None:
    system, user = "Be brief.", "Count the tokens of this sentence, please."
    predicted = gpt.count_chat_tokens(system, user, model="gpt-4o-mini")
    server.enqueue(Reply(text="ok"))
    gpt.chat_completion("gpt-4o-mini", system, user)
    sent = server.chat_requests[0].body["messages"]
    assert gpt.count_message_tokens(sent, "gpt-4o-mini").tokens == predicted


def test_non_openai_model_is_an_estimate_with_a_log_note(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="moodlemate.ai"):
        count = GPT().count_message_tokens(COOKBOOK_MESSAGES, "meta-llama/llama-3.1-8b-instruct")
    assert count.estimate is True
    assert count.encoding == "o200k_base"
    assert count.tokens == 124  # the best available estimate: OpenAI's current framing
    assert any("estimate" in r.getMessage() for r in caplog.records)


def test_unknown_openai_style_model_falls_back_to_o200k_with_a_note(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="moodlemate.ai"):
        count = GPT().count_message_tokens(COOKBOOK_MESSAGES, "gpt-77-preview")
    assert (count.tokens, count.estimate, count.encoding) == (124, True, "o200k_base")
    assert any("gpt-77-preview" in r.getMessage() for r in caplog.records)


def test_a_plugin_provider_without_its_own_framing_gets_an_estimate() -> None:
    from moodlemate.ai import Provider

    class Words(Provider):
        name = "words"
        default_endpoint = "http://127.0.0.1:1/v1"

        def execute(self, connection, request):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def count_tokens(self, text: str, model: str) -> int:
            return len(text.split())

    count = Words().count_message_tokens([{"role": "user", "content": "one two three"}], "m")
    assert (count.tokens, count.estimate) == (3 + 1 + 3 + 3, True)


@pytest.mark.parametrize(
    "messages",
    [
        "hello",
        [{"role": "user"}],
        [{"content": "hi"}],
        [{"role": "user", "content": 5}],
        [("user", "hi")],
        [{"role": "", "content": "hi"}],
    ],
)
def test_malformed_messages_are_rejected(messages: object) -> None:
    with pytest.raises(ValidationError):
        GPT().count_message_tokens(messages)  # type: ignore[arg-type]
