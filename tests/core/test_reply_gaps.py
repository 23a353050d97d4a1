"""Replies that are no answer: a reasoning model's empty reply, a refusal, tool calls only,
and bodies nested too deep to parse. Each is a typed error carrying the Completion, never
a silent "" and never a retry, for plain, async and streamed calls alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from moodlemate.ai import (
    GPT,
    Completion,
    EmptyReplyError,
    MalformedResponseError,
    RefusalError,
    RetryPolicy,
    StreamInterruptedError,
)
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

REASONING_EMPTY = Reply(text="", finish_reason="length", completion_tokens=50, reasoning_tokens=50)
REFUSAL = "I'm sorry, I can't help with that."
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'},
}


def _stream_text(gpt: GPT, model: str, max_tokens: int | None) -> str:
    with gpt.stream(model, "", "hi", max_tokens=max_tokens) as stream:
        return "".join(stream)


def _astream_text(gpt: GPT, model: str, max_tokens: int | None) -> str:
    async def main() -> str:
        try:
            return "".join([d async for d in gpt.astream(model, "", "hi", max_tokens=max_tokens)])
        finally:
            await gpt.aclose()

    return asyncio.run(main())


def _achat(gpt: GPT, model: str, max_tokens: int | None) -> str:
    async def main() -> str:
        try:
            return await gpt.achat_completion(model, "", "hi", max_tokens=max_tokens)
        finally:
            await gpt.aclose()

    return asyncio.run(main())


TEXT_CALLS: dict[str, Callable[[GPT, str, int | None], str]] = {
    "chat_completion": lambda g, m, n: g.chat_completion(m, "", "hi", max_tokens=n),
    "achat_completion": _achat,
    "stream": _stream_text,
    "astream": _astream_text,
    "conversation": lambda g, m, n: g.conversation("c", model=m).ask("hi"),
}


@pytest.fixture(params=list(TEXT_CALLS))
def text_call(request: pytest.FixtureRequest) -> Callable[[GPT, str, int | None], str]:
    return TEXT_CALLS[request.param]


def test_a_reasoning_model_that_spent_max_tokens_on_reasoning_says_so(
    gpt: GPT, server: LoopbackServer, text_call: Callable[[GPT, str, int | None], str]
) -> None:
    server.enqueue(REASONING_EMPTY, Reply(text="a second request would get this"))
    with pytest.raises(EmptyReplyError) as caught:
        text_call(gpt, "o1", 50)
    error = caught.value
    assert "50 reasoning tokens" in str(error)
    assert "raise max_tokens" in str(error)
    assert error.retryable is False
    assert isinstance(error.completion, Completion)
    assert error.completion.finish_reason == "length"
    assert error.completion.usage.reasoning_tokens == 50
    assert error.completion.cost is not None  # billed, and in the ledger
    assert len(server.chat_requests) == 1  # not retried
    assert gpt.ledger.calls == 1
    assert gpt.ledger.usage.reasoning_tokens == 50


def test_the_message_names_the_limit_that_was_used_up(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(REASONING_EMPTY)
    with pytest.raises(EmptyReplyError, match=r"max_tokens=50\) was used up by 50 reasoning"):
        gpt.chat_completion("o3-mini", "", "hi", max_tokens=50)


@pytest.mark.parametrize("finish_reason", ["length", "content_filter", "", "weird"])
def test_an_empty_reply_without_a_normal_stop_raises(
    gpt: GPT,
    server: LoopbackServer,
    text_call: Callable[[GPT, str, int | None], str],
    finish_reason: str,
) -> None:
    server.enqueue(Reply(text="", finish_reason=finish_reason))
    with pytest.raises(EmptyReplyError) as caught:
        text_call(gpt, "gpt-4o-mini", None)
    assert caught.value.completion.text == ""
    assert len(server.chat_requests) == 1


def test_an_empty_reply_with_a_normal_stop_is_an_empty_answer(
    gpt: GPT, server: LoopbackServer, text_call: Callable[[GPT, str, int | None], str]
) -> None:
    server.enqueue(Reply(text="", finish_reason="stop"))
    assert text_call(gpt, "gpt-4o-mini", None) == ""


def test_an_empty_reply_leaves_the_conversation_unchanged(gpt: GPT, server: LoopbackServer) -> None:
    chat = gpt.conversation()
    server.enqueue(REASONING_EMPTY)
    with pytest.raises(EmptyReplyError):
        gpt.context_assistant("hi")
    assert chat.history == ()


def test_a_refusal_is_surfaced_and_not_retried(
    gpt: GPT, server: LoopbackServer, text_call: Callable[[GPT, str, int | None], str]
) -> None:
    server.enqueue(Reply(refusal=REFUSAL), Reply(text="a second request would get this"))
    with pytest.raises(RefusalError) as caught:
        text_call(gpt, "gpt-4o", None)
    assert caught.value.refusal == REFUSAL
    assert REFUSAL in str(caught.value)
    assert caught.value.completion.refusal == REFUSAL
    assert caught.value.retryable is False
    assert len(server.chat_requests) == 1


def test_complete_returns_the_refusal_on_the_completion(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Reply(refusal=REFUSAL))
    result = gpt.complete("gpt-4o", "", "hi")
    assert result.text == ""
    assert result.refusal == REFUSAL
    assert server.chat_requests[0].body["model"] == "gpt-4o"


def test_a_streamed_refusal_yields_no_text_and_keeps_the_completion(
    gpt: GPT, server: LoopbackServer
) -> None:
    server.enqueue(Reply(refusal=REFUSAL))
    stream = gpt.stream("gpt-4o", "", "hi")
    with pytest.raises(RefusalError):
        assert list(stream) == []
    assert stream.completion is not None
    assert stream.completion.refusal == REFUSAL
    assert gpt.ledger.calls == 1


def test_tool_calls_alone_are_not_an_empty_answer(
    gpt: GPT, server: LoopbackServer, text_call: Callable[[GPT, str, int | None], str]
) -> None:
    server.enqueue(Reply(tool_calls=[WEATHER_CALL], finish_reason="tool_calls"))
    with pytest.raises(EmptyReplyError, match=r"1 tool call.*get_weather") as caught:
        text_call(gpt, "gpt-4o", None)
    (call,) = caught.value.completion.tool_calls
    assert call["id"] == "call_1"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "C"}


def test_complete_and_stream_agree_on_tool_calls(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Reply(tool_calls=[WEATHER_CALL], finish_reason="tool_calls"))
    plain = gpt.complete("gpt-4o", "", "hi").tool_calls
    server.enqueue(Reply(tool_calls=[WEATHER_CALL], finish_reason="tool_calls"))
    stream = gpt.stream("gpt-4o", "", "hi")
    with pytest.raises(EmptyReplyError):
        list(stream)
    assert stream.completion is not None
    streamed = stream.completion.tool_calls
    assert [dict(c) for c in plain] == [dict(c) for c in streamed] == [WEATHER_CALL]


DEPTH = 100_000


def _deep_body() -> bytes:
    return (
        b'{"id":"x","model":"gpt-4o-mini","choices":[{"index":0,"finish_reason":"stop",'
        b'"message":{"role":"assistant","content":"hi"}}],"deep":'
        + b"[" * DEPTH
        + b"]" * DEPTH
        + b"}"
    )


def test_a_body_nested_100k_levels_deep_is_a_malformed_response(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=RetryPolicy(attempts=2))
    deep = Fault(kind="status", http_status=200, body=_deep_body())
    server.enqueue(deep, deep)
    with pytest.raises(MalformedResponseError):
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert len(server.chat_requests) == 2  # malformed bodies are retried, like cut ones


def _sse(*events: bytes) -> bytes:
    return b"".join(b"data: " + event + b"\n\n" for event in events)


def test_a_deep_stream_event_after_text_is_an_interruption_with_the_partial_text(
    gpt: GPT, server: LoopbackServer
) -> None:
    first = json.dumps(
        {"id": "x", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}
    ).encode()
    deep = b'{"choices":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    server.enqueue(Fault(kind="status", http_status=200, body=_sse(first, deep)))
    received: list[str] = []
    with pytest.raises(StreamInterruptedError) as caught:  # noqa: PT012 - the text comes first
        for delta in gpt.stream("gpt-4o-mini", "", "hi"):
            received.append(delta)
    assert received == ["Hel"]
    assert caught.value.partial_text == "Hel"
    assert isinstance(caught.value.__cause__, MalformedResponseError)


def test_a_deep_stream_event_before_text_is_retried(gpt: GPT, server: LoopbackServer) -> None:
    deep = b'{"choices":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    server.enqueue(Fault(kind="status", http_status=200, body=_sse(deep)), Reply(text="fine"))
    assert "".join(gpt.stream("gpt-4o-mini", "", "hi")) == "fine"
    assert len(server.chat_requests) == 2


def test_the_testing_server_scripts_refusals_and_tool_calls_over_the_wire(
    server: LoopbackServer,
) -> None:
    import urllib.request

    server.enqueue(Reply(refusal=REFUSAL), Reply(tool_calls=[WEATHER_CALL]))
    for expected in ("refusal", "tool_calls"):
        request = urllib.request.Request(
            f"{server.url}/chat/completions",
            data=json.dumps(
                {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
            ).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            message = json.loads(response.read())["choices"][0]["message"]
        assert message["content"] is None
        assert message[expected] == (REFUSAL if expected == "refusal" else [WEATHER_CALL])


def test_a_reply_error_counts_one_attempt_under_a_retrying_policy(
    server: LoopbackServer,
) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    server.enqueue(Reply(refusal=REFUSAL), Reply(refusal=REFUSAL))
    with pytest.raises(RefusalError) as caught:
        gpt.chat_completion("gpt-4o", "", "hi")
    assert caught.value.attempts == 1
    assert server.pending == 1


def test_call_hooks_see_a_refused_call_as_completed_whether_streamed_or_not(
    server: LoopbackServer,
) -> None:
    from moodlemate.ai._plugins import PluginRegistry
    from test_call_hooks import Recorder

    plugins = PluginRegistry()
    recorder = Recorder()
    plugins.register(recorder, "recorder")
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, plugins=plugins)
    server.enqueue(Reply(refusal=REFUSAL), Reply(refusal=REFUSAL))
    with pytest.raises(RefusalError):
        gpt.chat_completion("gpt-4o", "", "hi")
    with pytest.raises(RefusalError):
        list(gpt.stream("gpt-4o", "", "hi"))
    afters = [seen for kind, seen in recorder.calls if kind == "after"]
    assert len(afters) == 2
    for seen in afters:
        assert seen["error"] is None
        assert seen["completion"].refusal == REFUSAL


def test_the_chat_command_reports_a_refusal_instead_of_printing_nothing(
    server: LoopbackServer,
) -> None:
    import subprocess
    import sys

    server.enqueue(Reply(refusal=REFUSAL))
    out = subprocess.run(
        [sys.executable, "-m", "moodlemate.ai.cli", "chat", "--endpoint", server.url, "hi"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stdout == ""
    assert f"RefusalError: the model refused to answer: {REFUSAL}" in out.stderr
