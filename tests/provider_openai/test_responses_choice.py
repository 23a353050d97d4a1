"""Choosing the vendor API without building a ChatRequest, over real HTTP to the test server:
per call (``options={"api": ...}``), per instance (``GPT(api=...)``, ``gpt.api``), from
``MOODLEMATE_API`` and the config file; and a reasoning summary asked for by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from moodlemate.ai import GPT, UnsupportedInputError, ValidationError
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY


def _where(server: LoopbackServer) -> tuple[int, int]:
    return len(server.chat_requests), len(server.response_requests)


def test_the_instance_setting_sends_a_chat_model_to_responses(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, api="responses")
    assert gpt.api == "responses"
    assert gpt.chat_completion("gpt-4o", "", "Hi") == "Echo: Hi"
    assert _where(server) == (0, 1)
    assert "api" not in server.response_requests[-1].body
    with gpt.stream("gpt-4o", "", "Hi") as deltas:
        assert "".join(deltas) == "Echo: Hi"
    talk = gpt.conversation("c")
    talk.model = "gpt-4o"
    talk.ask("Hi")
    assert _where(server) == (0, 3)


def test_a_call_option_beats_the_instance_and_the_model_rules(
    server: LoopbackServer, gpt: GPT
) -> None:
    gpt.api = "responses"
    gpt.complete("gpt-4o", "", "x", options={"api": "chat"})
    assert _where(server) == (1, 0)
    assert "api" not in server.chat_requests[-1].body
    gpt.api = None  # the model rules again: gpt-4o on chat, o3-pro on responses
    gpt.complete("gpt-4o", "", "x")
    gpt.complete("o3-pro", "", "x")
    assert _where(server) == (2, 1)
    gpt.complete("gpt-4o", "", "x", options={"api": "responses"})
    assert _where(server) == (2, 2)


def test_a_bad_api_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="api must be one of chat, responses"):
        GPT(api="completions")
    gpt = GPT()
    with pytest.raises(ValidationError, match="api must be one of"):
        gpt.api = "batch"
    with pytest.raises(ValidationError, match="api must be one of"):
        gpt.complete("gpt-4o", "", "x", options={"api": "legacy"})


def test_the_environment_and_the_config_file_choose_it(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('api = "responses"\n')
    monkeypatch.setenv("MOODLEMATE_CONFIG", str(config))
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    assert gpt.api == "responses"
    gpt.complete("gpt-4o", "", "x")
    assert _where(server) == (0, 1)
    monkeypatch.setenv("MOODLEMATE_API", "chat")  # the environment beats the file
    assert GPT().api == "chat"
    assert GPT(api="responses").api == "responses"  # the argument beats both
    monkeypatch.setenv("MOODLEMATE_API", "nope")
    with pytest.raises(ValidationError, match="MOODLEMATE_API must be one of"):
        GPT()
    monkeypatch.delenv("MOODLEMATE_API")
    config.write_text('api = "nope"\n')
    with pytest.raises(ValidationError, match=r"the api of .*config\.toml must be one of"):
        GPT()


def test_a_reasoning_summary_reaches_the_responses_api(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="Rome", reasoning="Rome is further south."))
    completion = gpt.complete(
        "o3",
        "",
        "Warmer?",
        options={"api": "responses", "reasoning_effort": "high", "reasoning_summary": "detailed"},
    )
    body = server.response_requests[-1].body
    assert body["reasoning"] == {"effort": "high", "summary": "detailed"}
    assert (completion.text, completion.reasoning) == ("Rome", "Rome is further south.")
    from openapi_spec import SPEC
    from openapi_spec import check_schema as check

    if SPEC is not None:
        check("CreateResponse", body)


def test_a_reasoning_summary_on_chat_completions_is_refused_unsent(
    server: LoopbackServer, gpt: GPT
) -> None:
    with pytest.raises(UnsupportedInputError, match="reasoning_summary is a Responses API option"):
        gpt.complete("o3", "", "x", options={"reasoning_summary": "auto"})
    with pytest.raises(ValidationError, match="reasoning_summary must be one of"):
        gpt.complete("o3-pro", "", "x", options={"reasoning_summary": "long"})
    assert server.requests == []
