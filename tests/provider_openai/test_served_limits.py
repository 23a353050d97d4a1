"""What local servers taught us (see tests/core/test_llama_server.py for the real one): windows
learned from the server, its overflow refusals typed, max_tokens bounded, refused
connections named. Here against the loopback server playing each server's documented shape."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from moodlemate.ai import (
    GPT,
    APIConnectionError,
    BadRequestError,
    ContextWindowExceededError,
    RetryPolicy,
    ValidationError,
)
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY

LLAMA_CPP_OVERFLOW = {
    "error": {
        "code": 400,
        "message": "request (2194 tokens) exceeds the available context size (2048 tokens), "
        "try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 2194,
        "n_ctx": 2048,
    }
}
OPENAI_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your "
        "messages resulted in 130000 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
VLLM_OVERFLOW = {
    "object": "error",
    "message": "This model's maximum context length is 4096 tokens. However, you requested "
    "5000 tokens (4000 in the messages, 1000 in the completion).",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}


@pytest.mark.parametrize(
    ("body", "window", "code"),
    [
        (LLAMA_CPP_OVERFLOW, 2048, "exceed_context_size_error"),
        (OPENAI_OVERFLOW, 128_000, "context_length_exceeded"),
        (VLLM_OVERFLOW, 4096, "BadRequestError"),
    ],
)
def test_a_servers_overflow_refusal_is_a_context_window_error_with_the_window(
    gpt: GPT, server: LoopbackServer, body: dict[str, object], window: int, code: str
) -> None:
    server.enqueue(Fault.status(400, body=body))
    with pytest.raises(ContextWindowExceededError) as info:
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
    assert isinstance(info.value, BadRequestError)  # still what a 400 was before
    assert info.value.window == window
    assert info.value.code == code  # the body's word, not the bare status number
    assert len(server.chat_requests) == 1  # not retried


def test_a_bad_request_that_is_not_an_overflow_stays_a_bad_request(
    gpt: GPT, server: LoopbackServer
) -> None:
    server.enqueue(Fault.status(400, body={"error": {"code": 400, "message": "bad grammar"}}))
    with pytest.raises(BadRequestError) as info:
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
    assert not isinstance(info.value, ContextWindowExceededError)


def test_the_window_comes_from_a_vllm_style_listing_once(server: LoopbackServer) -> None:
    server.models = [{"id": "served", "object": "model", "max_model_len": 300}]
    gpt = GPT(endpoint=server.url, retry=FAST_RETRY)
    assert gpt.context_window("served") == 300
    assert gpt.context_window("served") == 300
    assert gpt.context_window("gpt-4o") == 128_000  # the tables know it: nothing asked
    assert [r.path for r in server.requests] == ["/v1/models"]


def test_a_conversation_trims_to_the_window_the_server_reports(server: LoopbackServer) -> None:
    server.models = [{"id": "served", "object": "model", "max_model_len": 400}]
    gpt = GPT(endpoint=server.url, retry=FAST_RETRY)
    conversation = gpt.conversation(model="served", system_message="")
    for n in range(4):
        conversation.ask(f"turn {n} " + "word " * 60)  # ~65 tokens, and an echo as long
    # 400 tokens less the reply's reserve (a quarter): never more than one earlier turn
    sizes = [len(r.body["messages"]) for r in server.chat_requests]
    assert sizes == [1, 3, 3, 3]


def test_after_an_overflow_refusal_a_conversation_trims_and_tries_once_more(
    gpt: GPT, server: LoopbackServer
) -> None:
    conversation = gpt.conversation(model="local-model", system_message="")
    conversation.ask("first " * 50)
    server.enqueue(Fault.status(400, body=LLAMA_CPP_OVERFLOW), Reply(text="fits now"))
    assert conversation.ask("second " * 50) == "fits now"
    first_try, second_try = server.chat_requests[1:]
    assert len(first_try.body["messages"]) == 3
    assert len(second_try.body["messages"]) == 1  # the old turn dropped to fit
    assert [m.content for m in conversation.history][-1] == "fits now"
    # a second refusal in a row is the caller's
    server.enqueue(
        Fault.status(400, body=LLAMA_CPP_OVERFLOW), Fault.status(400, body=LLAMA_CPP_OVERFLOW)
    )
    with pytest.raises(ContextWindowExceededError):
        conversation.ask("third")


@pytest.mark.parametrize("flavour", ["stream", "astream"])
def test_a_streamed_conversation_turn_refused_as_too_long_trims_and_tries_once_more(
    gpt: GPT, server: LoopbackServer, flavour: str
) -> None:
    conversation = gpt.conversation(model="local-model", system_message="")
    conversation.ask("first " * 50)
    server.enqueue(Fault.status(400, body=LLAMA_CPP_OVERFLOW), Reply(text="fits now"))

    async def collect() -> str:
        return "".join([delta async for delta in conversation.astream("second " * 50)])

    if flavour == "stream":
        text = "".join(conversation.stream("second " * 50))
    else:
        text = asyncio.run(collect())
    assert text == "fits now"
    first_try, second_try = server.chat_requests[1:]
    assert len(first_try.body["messages"]) == 3
    assert len(second_try.body["messages"]) == 1  # the old turn dropped to fit
    assert [m.content for m in conversation.history][-2:] == ["second " * 50, "fits now"]
    server.enqueue(
        Fault.status(400, body=LLAMA_CPP_OVERFLOW), Fault.status(400, body=LLAMA_CPP_OVERFLOW)
    )
    with pytest.raises(ContextWindowExceededError):
        "".join(conversation.stream("third"))
    assert [m.content for m in conversation.history][-1] == "fits now"  # nothing half-kept


@pytest.mark.parametrize("max_tokens", [2**31, 2**63, 10**400])
def test_max_tokens_beyond_the_wire_format_is_refused_before_sending(
    gpt: GPT, server: LoopbackServer, max_tokens: int
) -> None:
    with pytest.raises(ValidationError, match="at most 2,147,483,647"):
        gpt.chat_completion("gpt-4o-mini", "", "Hi", max_tokens=max_tokens)
    assert server.requests == []
    gpt.chat_completion("local-model", "", "Hi", max_tokens=2**31 - 1)
    assert server.chat_requests[0].body["max_tokens"] == 2**31 - 1


def test_a_refused_connection_says_nothing_listens_and_is_still_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    policy = RetryPolicy(attempts=2, deadline=10, wait_initial=0.01, wait_max=0.01, wait_jitter=0)
    gpt = GPT(endpoint=f"http://127.0.0.1:{port}/v1", retry=policy)
    caplog.set_level(logging.WARNING, logger="moodlemate.ai")
    with pytest.raises(APIConnectionError) as info:
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
    first_retry = next(r.getMessage() for r in caplog.records if "retrying" in r.getMessage())
    assert f"cannot reach 127.0.0.1:{port} (refused): nothing listens" in first_retry
    assert info.value.attempts == 2
