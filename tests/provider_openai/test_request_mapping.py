"""Request bodies per model family, as the real API requires them."""

from __future__ import annotations

import logging

import pytest
from moodlemate.ai import GPT
from moodlemate.ai.testing import LoopbackServer


def _body(gpt: GPT, server: LoopbackServer, model: str, **kwargs: object) -> dict[str, object]:
    server.clear()
    gpt.chat_completion(model, "SYSTEM TEXT", "USER TEXT", **kwargs)  # type: ignore[arg-type]
    [request] = server.chat_requests
    body: dict[str, object] = request.body
    return body


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4", "gpt-3.5-turbo"])
def test_chat_models_send_temperature_and_max_tokens(
    gpt: GPT, server: LoopbackServer, model: str
) -> None:
    body = _body(gpt, server, model, temperature=0.3, max_tokens=64)
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 64
    assert "max_completion_tokens" not in body
    assert body["messages"][0] == {"role": "system", "content": "SYSTEM TEXT"}  # type: ignore[index]


def test_chat_model_omits_max_tokens_when_none(gpt: GPT, server: LoopbackServer) -> None:
    body = _body(gpt, server, "gpt-4o")
    assert body["temperature"] == 0.7
    assert "max_tokens" not in body


@pytest.mark.parametrize(
    "model", ["o1", "o3-mini", "o1-2024-12-17", "o3-mini-2025-01-31", "o4-mini"]
)
def test_reasoning_models_send_max_completion_tokens_and_no_temperature(
    gpt: GPT, server: LoopbackServer, model: str
) -> None:
    body = _body(gpt, server, model, max_tokens=100)
    assert body["max_completion_tokens"] == 100
    assert "max_tokens" not in body
    assert "temperature" not in body
    assert body["messages"][0] == {"role": "system", "content": "SYSTEM TEXT"}  # type: ignore[index]
    assert body["model"] == model


def test_reasoning_model_keeps_temperature_one(gpt: GPT, server: LoopbackServer) -> None:
    assert _body(gpt, server, "o1", temperature=1)["temperature"] == 1


@pytest.mark.parametrize("model", ["o1-mini", "o1-mini-2024-09-12", "o1-preview"])
def test_o1_mini_folds_system_text_into_the_user_turn(
    gpt: GPT, server: LoopbackServer, model: str
) -> None:
    body = _body(gpt, server, model, max_tokens=50)
    messages = body["messages"]
    assert all(m["role"] not in ("system", "developer") for m in messages)  # type: ignore[attr-defined]
    assert messages == [{"role": "user", "content": "SYSTEM TEXT\n\nUSER TEXT"}]
    assert body["max_completion_tokens"] == 50


def test_empty_system_message_sends_only_the_user_turn(gpt: GPT, server: LoopbackServer) -> None:
    server.clear()
    gpt.chat_completion("o1-mini", "", "just this")
    assert server.chat_requests[0].body["messages"] == [{"role": "user", "content": "just this"}]


def test_adaptation_is_logged_once_per_model(
    gpt: GPT, server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="moodlemate.ai"):
        for _ in range(3):
            gpt.chat_completion("o4-mini-2025-04-16", "s", "u")
    notes = [r for r in caplog.records if "temperature" in r.getMessage()]
    assert len(notes) == 1
    assert "o4-mini-2025-04-16" in notes[0].getMessage()


def test_custom_endpoint_sends_model_names_unchanged(server: LoopbackServer) -> None:
    gpt = GPT(endpoint=server.url)
    gpt.chat_completion("llama3.2:3b-instruct", "s", "u")
    assert server.chat_requests[0].body["model"] == "llama3.2:3b-instruct"
    assert "authorization" not in server.chat_requests[0].headers
