"""The test server and the OpenAI providers agree on every model's rules.

The strict server rejects what the real API rejects on reasoning models (``max_tokens``, a
temperature other than 1, the system role on o1-mini); the provider adapts its requests to
the same rules. If the two kept their own lists they would drift (they did: o3-pro, o1-pro
and gpt-5.1 were reasoning models to the provider but not to the server, so the server
accepted requests the real API refuses and the provider's adaptation went untested). Each
model is probed twice: with raw HTTP (no provider mapping in between), where the server must
accept or reject exactly as the provider's rules say, and through ``GPT``, where the seed's
default call must succeed at the first attempt. Router-style ids (``vendor/model``) are
probed the same way against the OpenRouter provider, which applies OpenAI's rules to
OpenAI's models only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from moodlemate.ai import GPT, RetryPolicy
from moodlemate.ai.testing import LoopbackServer
from moodlemate.providers.openai.models import ModelRules, rules_for
from moodlemate.providers.openai.pricing import openai_prices
from moodlemate.providers.openrouter import OpenRouterProvider

KEY = "sk-or-v1-test-model-rules-0123456789"  # a valid key for both providers
# Reasoning models to the provider that the server once took for chat models, with their
# dated and routed spellings.
DRIFTED = (
    *("o3-pro", "o1-pro", "gpt-5.1"),
    *("o3-pro-2025-06-10", "openai/o1-pro", "gpt-5.1-2025-11-13"),
)
PRICED = tuple(info.name for info in openai_prices().all())
MODELS = (*PRICED, *DRIFTED, "o1-mini-2024-09-12", "openai/gpt-4o-mini")
# OpenRouter ids: another vendor's model named like an o-series one takes the classic shape.
ROUTED = (
    *("acme/o3-mini", "meta/gpt-5", "anthropic/claude-sonnet-4", "mistral/o1-mini"),
    *("openai/o3-mini", "OpenAI/o1-mini", "openai/o3-pro", "openai/gpt-5.1", "openai/gpt-4o"),
)


@pytest.fixture(scope="module")
def strict_server() -> Iterator[LoopbackServer]:
    with LoopbackServer(api_key=KEY) as server:
        assert server.strict
        yield server


def post(server: LoopbackServer, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /chat/completions with the standard library: the body goes out exactly as given."""
    request = urllib.request.Request(
        f"{server.url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def rejected_param(status: int, data: dict[str, Any]) -> str | None:
    """The parameter a 400 names, None for a completion; anything else fails the test."""
    if status == 200:
        assert data["object"] == "chat.completion"
        return None
    assert status == 400, data
    param = data["error"]["param"]
    assert isinstance(param, str)
    return param


def messages(*roles: str) -> list[dict[str, str]]:
    return [{"role": role, "content": f"{role} text"} for role in roles]


def test_the_probe_covers_every_kind_of_model() -> None:
    """Chat models, reasoning models and the system-less ones are all among the probes, and
    the drifted names are reasoning models to the provider (else the test proves nothing)."""
    kinds = {(rules_for(m).reasoning, rules_for(m).system_role) for m in PRICED}
    assert kinds == {(False, True), (True, True), (True, False)}
    assert all(rules_for(model).reasoning for model in DRIFTED)
    assert len(PRICED) >= 15
    routed = OpenRouterProvider()
    assert not routed.rules("acme/o3-mini").reasoning  # where the two providers differ ...
    assert rules_for("acme/o3-mini").reasoning
    assert not routed.rules("OpenAI/o1-mini").system_role  # ... and where they agree


PROBES = [
    *((model, "openai") for model in MODELS),
    *((model, "openrouter") for model in ROUTED),
]


def provider_rules(model: str, provider: str) -> ModelRules:
    return rules_for(model) if provider == "openai" else OpenRouterProvider().rules(model)


@pytest.mark.parametrize(("model", "provider"), PROBES)
def test_max_tokens_is_rejected_exactly_when_the_provider_says_reasoning(
    strict_server: LoopbackServer, model: str, provider: str
) -> None:
    body = {"model": model, "messages": messages("user"), "max_tokens": 16}
    expected = "max_tokens" if provider_rules(model, provider).reasoning else None
    assert rejected_param(*post(strict_server, body)) == expected
    body = {"model": model, "messages": messages("user"), "max_completion_tokens": 16}
    assert rejected_param(*post(strict_server, body)) is None


@pytest.mark.parametrize(("model", "provider"), PROBES)
def test_temperature_is_rejected_exactly_when_the_provider_says_reasoning(
    strict_server: LoopbackServer, model: str, provider: str
) -> None:
    for temperature in (0.7, 0, 1.5):
        body = {"model": model, "messages": messages("user"), "temperature": temperature}
        expected = "temperature" if provider_rules(model, provider).reasoning else None
        assert rejected_param(*post(strict_server, body)) == expected, temperature
    body = {"model": model, "messages": messages("user"), "temperature": 1}
    assert rejected_param(*post(strict_server, body)) is None


@pytest.mark.parametrize(("model", "provider"), PROBES)
def test_the_system_role_is_rejected_exactly_when_the_provider_folds_it(
    strict_server: LoopbackServer, model: str, provider: str
) -> None:
    for role in ("system", "developer"):
        body = {"model": model, "messages": messages("user", role, "user")}
        expected = None if provider_rules(model, provider).system_role else "messages[1].role"
        assert rejected_param(*post(strict_server, body)) == expected, role


@pytest.mark.parametrize(("model", "provider"), PROBES)
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_the_seed_call_through_gpt_succeeds_at_the_first_attempt(
    strict_server: LoopbackServer, model: str, provider: str, stream: bool
) -> None:
    """temperature 0.7, max_tokens and a system message: the provider adapts what the server
    would reject, so one request suffices (a 400 would surface as BadRequestError: no retry)."""
    gpt = GPT(provider, endpoint=strict_server.url, api_key=KEY, retry=RetryPolicy(attempts=1))
    before = len(strict_server.requests)
    if stream:
        text = "".join(gpt.stream(model, "Be brief.", "Hi", 0.7, 16))
    else:
        text = gpt.chat_completion(model, "Be brief.", "Hi", temperature=0.7, max_tokens=16)
    assert text.endswith("Hi")
    (sent,) = [r for r in strict_server.requests[before:] if r.method == "POST"]
    rules = provider_rules(model, provider)
    if provider == "openai" and rules.responses_only:
        # Served only on the Responses API: the same call, in its shape.
        assert sent.path.endswith("/responses")
        assert [item["role"] for item in sent.body["input"]] == ["system", "user"]
        assert "temperature" not in sent.body
        assert sent.body["max_output_tokens"] == 16
        return
    assert sent.path.endswith("/chat/completions")
    assert ("max_completion_tokens" in sent.body) is rules.reasoning
    assert ("max_tokens" in sent.body) is not rules.reasoning
    roles = [m["role"] for m in sent.body["messages"]]
    assert roles == (["system", "user"] if rules.system_role else ["user"])
