"""The seed API, end to end over loopback HTTP: names, defaults, return types, results."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest
from moodlemate.ai import GPT, Completion
from moodlemate.ai.testing import LoopbackServer, Reply
from support import TEST_KEY

SEED_MODELS = ["gpt-4o", "gpt-4o-mini", "o1", "o1-mini", "o3-mini"]


def test_signatures_are_the_seed_contract() -> None:
    sig = inspect.signature(GPT.chat_completion)
    assert list(sig.parameters) == [
        "self",
        "model",
        "system_message",
        "user_message",
        "temperature",
        "max_tokens",
    ]
    assert sig.parameters["temperature"].default == 0.7
    assert sig.parameters["max_tokens"].default is None
    assert inspect.signature(GPT.count_tokens).parameters["model"].default == "gpt-4o-mini"
    assert list(inspect.signature(GPT.context_assistant).parameters) == ["self", "prompt"]
    GPT()  # constructs with no arguments


def test_chat_completion_returns_the_reply_text(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Reply(text="Paris."))
    text = gpt.chat_completion("gpt-4o-mini", "Be brief.", "Capital of France?")
    assert text == "Paris."
    assert isinstance(text, str)
    [request] = server.chat_requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert request.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]


def test_full_result_of_the_last_call(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(
        Reply(
            text="ok",
            model="gpt-4o-2024-08-06",
            finish_reason="length",
            prompt_tokens=120,
            completion_tokens=30,
            cached_tokens=100,
            reasoning_tokens=0,
        )
    )
    gpt.chat_completion("gpt-4o", "s", "u")
    result = gpt.last_result
    assert isinstance(result, Completion)
    assert (result.text, result.model, result.provider, result.finish_reason) == (
        "ok",
        "gpt-4o-2024-08-06",
        "openai",
        "length",
    )
    assert result.usage.prompt_tokens == 120
    assert result.usage.cached_tokens == 100
    assert result.usage.completion_tokens == 30
    assert result.request_id is not None
    assert result.request_id.startswith("req_")
    assert result.attempts == 1


def test_reasoning_tokens_are_reported(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Reply(text="42", prompt_tokens=10, completion_tokens=500, reasoning_tokens=448))
    result = gpt.complete("o3-mini", "", "think")
    assert result.usage.reasoning_tokens == 448
    assert result.usage.completion_tokens == 500


def test_last_result_is_per_thread(gpt: GPT, server: LoopbackServer) -> None:
    server.responder = lambda body: Reply(text=body["messages"][-1]["content"].upper())
    seen: dict[str, str | None] = {}

    def worker(word: str) -> None:
        gpt.chat_completion("gpt-4o-mini", "", word)
        last = gpt.last_result
        seen[word] = last.text if last else None

    threads = [threading.Thread(target=worker, args=(w,)) for w in ("alpha", "beta", "gamma")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"alpha": "ALPHA", "beta": "BETA", "gamma": "GAMMA"}


@pytest.mark.parametrize("model", SEED_MODELS)
@pytest.mark.parametrize("max_tokens", [None, 100])
def test_seed_default_call_works_on_every_seed_model(
    gpt: GPT, server: LoopbackServer, model: str, max_tokens: int | None
) -> None:
    """The strict server answers 400 to what the real API rejects; the default call passes."""
    assert server.strict
    text = gpt.chat_completion(model, "You are terse.", "Hello", max_tokens=max_tokens)
    assert text == "Echo: Hello" or text.startswith("Echo:")
    assert [r.path for r in server.chat_requests] == ["/v1/chat/completions"]


def test_strict_server_really_rejects_what_the_api_rejects(server: LoopbackServer) -> None:
    """Guards the test above: a raw o1 request with max_tokens is refused with the real body."""
    import json
    import urllib.error
    import urllib.request

    body = {"model": "o1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}
    req = urllib.request.Request(
        f"{server.url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 400
    error = json.loads(info.value.read())["error"]
    assert error["param"] == "max_tokens"
    assert error["code"] == "unsupported_parameter"


def test_one_pooled_client_serves_many_calls_and_threads(gpt: GPT, server: LoopbackServer) -> None:
    provider, connection, _ = gpt.provider_connection()
    transport = provider.transport(connection)  # type: ignore[attr-defined]
    before = _pooled(transport)
    threads = [
        threading.Thread(target=gpt.chat_completion, args=("gpt-4o-mini", "", f"q{i}"))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gpt.chat_completion("gpt-4o-mini", "", "again")
    assert len(server.chat_requests) == 9
    assert provider.transport(connection) is transport  # type: ignore[attr-defined]
    assert _pooled(transport) - before <= 1


def _pooled(transport: Any) -> int:
    """Clients (the SDK's) or connection pools (the lean transport's) kept for reuse."""
    if transport.name == "openai-sdk":
        return len(transport.pool._clients)
    return len(transport._pools._pools)


def test_context_assistant_answers_a_prompt(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Reply(text="Sure."))
    assert gpt.context_assistant("Help me") == "Sure."
    assert server.chat_requests[0].body["messages"][-1] == {"role": "user", "content": "Help me"}
