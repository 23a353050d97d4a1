"""Defaults that do not surprise: a misspelt provider fails at once, a provider without a
sensible default model is never sent gpt-4o-mini, and local models' missing prices are a
note, not a warning, and read "unknown", never $0."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from moodlemate.ai import GPT, UnknownProviderError, ValidationError
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.testing import LoopbackServer, Reply
from moodlemate.providers.openai import OpenAIProvider
from support import FAST_RETRY, TEST_KEY
from test_cli import run_cli


def test_a_misspelt_provider_fails_at_construction_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(UnknownProviderError, match=r"did you mean 'openai'\?"):
        GPT(provider="opnai")
    monkeypatch.setenv("MOODLEMATE_PROVIDER", "openroutr")
    with pytest.raises(UnknownProviderError, match=r"did you mean 'openrouter'\?"):
        GPT()
    monkeypatch.delenv("MOODLEMATE_PROVIDER")
    with pytest.raises(UnknownProviderError) as caught:
        GPT(provider="zzz")
    assert "did you mean" not in str(caught.value)


def test_providers_declare_their_default_model() -> None:
    assert GPT().model == "gpt-4o-mini"
    assert GPT(provider="openrouter").model == "openai/gpt-4o-mini"
    assert GPT(provider="ollama", model="llama3.2").model == "llama3.2"


def test_a_provider_without_a_default_model_says_to_name_one(server: LoopbackServer) -> None:
    gpt = GPT(provider="ollama", endpoint=server.url, retry=FAST_RETRY)
    with pytest.raises(ValidationError, match="'ollama' has no default model: name one"):
        _ = gpt.model
    with pytest.raises(ValidationError, match="no default model"):
        gpt.context_assistant("hi")
    assert server.chat_requests == []  # never sent as gpt-4o-mini
    gpt.model = "llama3.2"
    server.enqueue(Reply(text="ok"))
    assert gpt.context_assistant("hi") == "ok"
    assert server.chat_requests[-1].body["model"] == "llama3.2"


def test_the_cli_says_to_name_a_model_for_such_a_provider(server: LoopbackServer) -> None:
    out = run_cli("chat", "--provider", "ollama", "--endpoint", server.url, "hi")
    assert out.returncode == 2
    assert "has no default model: name one" in out.stderr
    assert server.chat_requests == []


class _Vendor(OpenAIProvider):
    """A vendor whose own service is the loopback server (so its prices would be known)."""

    name = "vendor-test"
    hosts = ()

    def __init__(self, url: str) -> None:
        super().__init__()
        self.default_endpoint = url


def _unpriced_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "no price known" in r.getMessage()]


def test_an_unknown_price_on_a_custom_endpoint_is_a_note(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="moodlemate.ai")
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    gpt.chat_completion("llama3.2", "", "hi")
    (record,) = _unpriced_records(caplog)
    assert record.levelno == logging.INFO
    assert gpt.ledger.as_dict()["total"]["cost"] is None  # unknown, not 0
    assert "cost=unknown" in repr(gpt.ledger)
    gpt.chat_completion("gpt-4o-mini", "", "hi")  # one priced call makes the total known
    assert gpt.ledger.as_dict()["total"]["cost"] > 0
    assert gpt.ledger.as_dict()["by_model"]["llama3.2"]["cost"] is None


@pytest.mark.all_plugins  # a registry of its own: no pin applies
def test_an_unknown_price_on_the_vendors_own_service_stays_a_warning(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="moodlemate.ai")
    plugins = PluginRegistry(group="moodlemate.ai.none")
    plugins.register_provider(_Vendor(server.url))
    gpt = GPT("vendor-test", plugins=plugins, api_key=TEST_KEY, retry=FAST_RETRY)
    gpt.chat_completion("gpt-unreleased", "", "hi")
    (record,) = _unpriced_records(caplog)
    assert record.levelno == logging.WARNING


def test_cli_calls_to_a_local_model_print_no_warning_and_unknown_cost(
    server: LoopbackServer, tmp_path: Path
) -> None:
    chat = run_cli("chat", "--endpoint", server.url, "-m", "llama3.2", "--usage", "hi")
    assert chat.returncode == 0, chat.stderr
    assert "WARNING" not in chat.stderr
    assert "cost unknown" in chat.stderr
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": 1, "user": "hi"}) + "\n")
    batch = run_cli(
        *("batch", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl")),
        *("--endpoint", server.url, "-m", "llama3.2"),
    )
    assert batch.returncode == 0, batch.stderr
    assert "cost       unknown" in batch.stderr
    assert "$0.0" not in batch.stderr


def test_a_subclass_for_another_service_does_not_inherit_openais_default_model() -> None:
    class Groq(OpenAIProvider):
        name = "groq-test"
        default_endpoint = "https://api.groq.com/openai/v1"

    class Pinned(OpenAIProvider):
        name = "pinned-test"
        default_endpoint = "https://example.invalid/v1"
        default_model = "pinned-1"

    assert OpenAIProvider.default_model == "gpt-4o-mini"
    assert Groq.default_model is None
    assert Pinned.default_model == "pinned-1"
