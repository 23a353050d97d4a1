"""The test server and the OpenAI provider agree on every model's rules.

The strict server rejects what the real API rejects on reasoning models (``max_tokens``, a
temperature other than 1, the system role on o1-mini); the provider adapts its requests to
the same rules. If the two kept their own lists they would drift (they did: o3-pro, o1-pro
and gpt-5.1 were reasoning models to the provider but not to the server, so the server
accepted requests the real API refuses and the provider's adaptation went untested). Each
model is probed twice: with raw HTTP (no provider mapping in between), where the server must
accept or reject exactly as the provider's rules say, and through ``GPT``, where the seed's
default call must succeed at the first attempt.
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
from moodlemate.providers.openai.models import rules_for
from moodlemate.providers.openai.pricing import openai_prices

KEY = "sk-test-model-rules-0123456789"
# Reasoning models to the provider that the server once took for chat models, with their
# dated and routed spellings.
DRIFTED = (
    *("o3-pro", "o1-pro", "gpt-5.1"),
    *("o3-pro-2025-06-10", "openai/o1-pro", "gpt-5.1-2025-11-13"),
)
PRICED = tuple(info.name for info in openai_prices().all())
MODELS = (*PRICED, *DRIFTED, "o1-mini-2024-09-12", "openai/gpt-4o-mini")


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


@pytest.mark.parametrize("model", MODELS)
def test_max_tokens_is_rejected_exactly_when_the_provider_says_reasoning(
    strict_server: LoopbackServer, model: str
) -> None:
    body = {"model": model, "messages": messages("user"), "max_tokens": 16}
    expected = "max_tokens" if rules_for(model).reasoning else None
    assert rejected_param(*post(strict_server, body)) == expected
    body = {"model": model, "messages": messages("user"), "max_completion_tokens": 16}
    assert rejected_param(*post(strict_server, body)) is None


@pytest.mark.parametrize("model", MODELS)
def test_temperature_is_rejected_exactly_when_the_provider_says_reasoning(
    strict_server: LoopbackServer, model: str
) -> None:
    for temperature in (0.7, 0, 1.5):
        body = {"model": model, "messages": messages("user"), "temperature": temperature}
        expected = "temperature" if rules_for(model).reasoning else None
        assert rejected_param(*post(strict_server, body)) == expected, temperature
    body = {"model": model, "messages": messages("user"), "temperature": 1}
    assert rejected_param(*post(strict_server, body)) is None


@pytest.mark.parametrize("model", MODELS)
def test_the_system_role_is_rejected_exactly_when_the_provider_folds_it(
    strict_server: LoopbackServer, model: str
) -> None:
    for role in ("system", "developer"):
        body = {"model": model, "messages": messages("user", role, "user")}
        expected = None if rules_for(model).system_role else "messages[1].role"
        assert rejected_param(*post(strict_server, body)) == expected, role


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_the_seed_call_through_gpt_succeeds_at_the_first_attempt(
    strict_server: LoopbackServer, model: str, stream: bool
) -> None:
    """temperature 0.7, max_tokens and a system message: the provider adapts what the server
    would reject, so one request suffices (a 400 would surface as BadRequestError: no retry)."""
    gpt = GPT("openai", endpoint=strict_server.url, api_key=KEY, retry=RetryPolicy(attempts=1))
    before = len(strict_server.chat_requests)
    if stream:
        text = "".join(gpt.stream(model, "Be brief.", "Hi", 0.7, 16))
    else:
        text = gpt.chat_completion(model, "Be brief.", "Hi", temperature=0.7, max_tokens=16)
    assert text.endswith("Hi")
    (sent,) = strict_server.chat_requests[before:]
    rules = rules_for(model)
    assert ("max_completion_tokens" in sent.body) is rules.reasoning
    assert ("max_tokens" in sent.body) is not rules.reasoning
    roles = [m["role"] for m in sent.body["messages"]]
    assert roles == (["system", "user"] if rules.system_role else ["user"])
