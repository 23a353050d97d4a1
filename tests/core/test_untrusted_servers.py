"""What a misbehaving or hostile server can and cannot do to a caller: headers and bodies
stay on the configured host, and odd response fields give typed errors, never a poisoned
ledger."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import replace

import pytest
from moodlemate.ai import GPT
from moodlemate.ai._provider import ChatRequest, Message
from moodlemate.ai.errors import (
    InvalidEndpointError,
    MalformedResponseError,
    ProviderError,
    ValidationError,
)
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY


@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_to_another_host_carries_neither_headers_nor_prompt(
    server: LoopbackServer, status: int
) -> None:
    gateway_secret = "gw-secret-0123456789abcdef"
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=FAST_RETRY,
        headers={"X-Api-Key": gateway_secret},
    )
    with LoopbackServer() as elsewhere:
        server.enqueue(
            Reply(status=status, headers={"location": f"{elsewhere.url}/chat/completions"})
        )
        with pytest.raises(ProviderError) as caught:
            gpt.chat_completion("gpt-4o-mini", "", "private prompt")
        assert elsewhere.requests == []
        assert f"redirects to {elsewhere.url}/chat/completions" in str(caught.value)
    assert caught.value.status_code == status
    assert len(server.chat_requests) == 1


def _body_200(usage: object = None, content: object = "hi", model: object = "gpt-4o-mini") -> Fault:
    """A 200 whose JSON the test writes in full (Fault's status kind sends any body as is)."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }
    return Fault(kind="status", http_status=200, body=json.dumps(body).encode())


@pytest.mark.parametrize("cost", ["NaN", "-Infinity", -5, "-0.5", "Infinity"])
def test_a_nonsense_reported_cost_neither_poisons_the_ledger_nor_defeats_the_budget(
    gpt: GPT, server: LoopbackServer, cost: object
) -> None:
    gpt.budget = "1"
    server.enqueue(_body_200({"prompt_tokens": 10, "completion_tokens": 5, "cost": cost}))
    first = gpt.complete("gpt-4o-mini", "", "hi")
    assert first.cost is not None
    assert first.cost.is_finite()
    assert first.cost >= 0
    assert gpt.ledger.cost.is_finite()
    assert gpt.ledger.cost >= 0
    assert gpt.chat_completion("gpt-4o-mini", "", "again") == "Echo: again"


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "many", "completion_tokens": 5},
        {"prompt_tokens": 1e400, "completion_tokens": 5},
        {"prompt_tokens": {"n": 1}, "completion_tokens": 5},
        {"prompt_tokens": 10, "completion_tokens": -1000000},
        {"prompt_tokens": 10, "prompt_tokens_details": ["cached", 5]},
        {"prompt_tokens": 10, "completion_tokens_details": "none"},
    ],
)
def test_usage_fields_of_the_wrong_type_or_sign_still_give_the_reply(
    gpt: GPT, server: LoopbackServer, usage: dict[str, object]
) -> None:
    server.enqueue(_body_200(usage))
    result = gpt.complete("gpt-4o-mini", "", "hi")
    assert result.text == "hi"
    counts = (result.usage.prompt_tokens, result.usage.completion_tokens)
    assert all(isinstance(n, int) and n >= 0 for n in counts)
    assert result.cost is not None
    assert result.cost >= 0


def test_usage_fields_of_the_wrong_type_in_a_stream_still_give_the_reply(
    gpt: GPT, server: LoopbackServer
) -> None:
    chunk = {
        "id": "c",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": "lots", "completion_tokens": None, "cost": "NaN"},
    }
    body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
    server.enqueue(
        Fault(
            kind="status", http_status=200, body=body, headers={"content-type": "text/event-stream"}
        )
    )
    stream = gpt.stream("gpt-4o-mini", "", "hi")
    assert "".join(stream) == "hi"
    assert gpt.ledger.cost.is_finite()


@pytest.mark.parametrize("content", [42, {"text": "hi"}, True])
def test_a_reply_whose_content_is_not_text_is_a_malformed_response(
    gpt: GPT, server: LoopbackServer, content: object
) -> None:
    server.enqueue(_body_200(content=content), _body_200(content=content))
    gpt.retry = replace(FAST_RETRY, attempts=2)
    with pytest.raises(MalformedResponseError):
        gpt.chat_completion("gpt-4o-mini", "", "hi")


def test_a_model_name_that_is_not_text_falls_back_to_the_requested_one(
    gpt: GPT, server: LoopbackServer
) -> None:
    server.enqueue(_body_200({"prompt_tokens": 1, "completion_tokens": 1}, model=17))
    assert gpt.complete("gpt-4o-mini", "", "hi").model == "gpt-4o-mini"


def test_a_stream_delta_whose_content_is_not_text_is_a_malformed_response(
    gpt: GPT, server: LoopbackServer
) -> None:
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": 42}}]}
    body = f"data: {json.dumps(chunk)}\n\n".encode()
    events = {"content-type": "text/event-stream"}
    gpt.retry = replace(FAST_RETRY, attempts=1)
    server.enqueue(Fault(kind="status", http_status=200, body=body, headers=events))
    with pytest.raises(MalformedResponseError):
        "".join(gpt.stream("gpt-4o-mini", "", "hi"))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1?key=AIzaSy-secret-0123456789",
        "http://127.0.0.1:8080/v1#AIzaSy-secret-0123456789",
        "http://me:AIzaSy-secret-0123456789@127.0.0.1:99999/v1",
        "ftp://me:AIzaSy-secret-0123456789@127.0.0.1/v1",
    ],
)
def test_a_rejected_endpoint_is_not_echoed_with_the_credentials_in_it(url: str) -> None:
    with pytest.raises(InvalidEndpointError) as caught:
        GPT("openai", endpoint=url)
    assert "AIzaSy-secret-0123456789" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


_SURROGATE = "half of a pair: \ud83d"


@pytest.mark.parametrize(
    "call",
    [
        lambda g: g.chat_completion("gpt-4o-mini", "", _SURROGATE),
        lambda g: g.chat_completion("gpt-4o-mini", _SURROGATE, "hi"),
        lambda g: "".join(g.stream("gpt-4o-mini", "", _SURROGATE)),
        lambda g: asyncio.run(g.achat_completion("gpt-4o-mini", "", _SURROGATE)),
        lambda g: g.context_assistant(_SURROGATE),
    ],
)
def test_text_that_is_not_valid_unicode_is_a_validation_error(
    gpt: GPT, server: LoopbackServer, call: Callable[[GPT], object]
) -> None:
    with pytest.raises(ValidationError, match="surrogate"):
        call(gpt)
    assert server.chat_requests == []


@pytest.mark.parametrize(
    "request_",
    [
        ChatRequest("gpt-4o-mini", (Message("user", None),)),  # type: ignore[arg-type]
        ChatRequest("gpt-4o-mini", (Message("wizard", "x"),)),  # type: ignore[arg-type]
        ChatRequest("gpt-4o-mini", ()),
        ChatRequest("gpt-4o-mini", ("hi",)),  # type: ignore[arg-type]
        ChatRequest("gpt-4o-mini", (Message("user", "x"),), temperature=math.nan),
        ChatRequest("gpt-4o-mini", (Message("user", "x"),), max_tokens=0),
        ChatRequest(None, (Message("user", "x"),)),  # type: ignore[arg-type]
        ChatRequest("gpt-4o-mini", (Message("user", "x"),), extra=None),  # type: ignore[arg-type]
    ],
)
def test_a_prepared_request_is_validated_like_the_seed_call(
    gpt: GPT, server: LoopbackServer, request_: ChatRequest
) -> None:
    with pytest.raises(ValidationError):
        gpt.send(request_)
    with pytest.raises(ValidationError):
        "".join(gpt.stream_request(request_))
    with pytest.raises(ValidationError):
        asyncio.run(gpt.asend(request_))
    assert server.chat_requests == []
