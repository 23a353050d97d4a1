"""before_request / after_response hooks: what they see, that the key is never among it,
and that a call with no hook plugin does not build them at all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from moodlemate.ai import GPT, ChatRequest, Completion, RateLimitError, hookimpl
from moodlemate.ai._plugins import PluginRegistry, registry
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY


class Recorder:
    """A metrics/logging plugin taking every argument the specs offer, registered in code."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def before_request(self, request: ChatRequest, provider: str, endpoint: str) -> None:
        self.calls.append(
            ("before", {"request": request, "provider": provider, "endpoint": endpoint})
        )

    @hookimpl
    def after_response(
        self,
        request: ChatRequest,
        provider: str,
        endpoint: str,
        completion: Completion | None,
        error: Exception | None,
        attempts: int,
        elapsed: float,
    ) -> None:
        self.calls.append(
            (
                "after",
                {
                    "request": request,
                    "provider": provider,
                    "endpoint": endpoint,
                    "completion": completion,
                    "error": error,
                    "attempts": attempts,
                    "elapsed": elapsed,
                },
            )
        )


def _recorder(registry: PluginRegistry) -> Recorder:
    recorder = Recorder()
    registry.register(recorder, "recorder")
    return recorder


def test_hooks_see_request_and_result_with_cost(server: LoopbackServer) -> None:
    plugins = PluginRegistry()
    recorder = _recorder(plugins)
    server.api_key = TEST_KEY
    server.enqueue(Fault.status(503), Reply(text="ok", prompt_tokens=1000, completion_tokens=10))
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, plugins=plugins)
    assert gpt.chat_completion("gpt-4o-mini", "Be brief.", "Hi") == "ok"

    [(first, before), (second, after)] = recorder.calls
    assert (first, second) == ("before", "after")
    assert before["request"].model == "gpt-4o-mini"
    assert (before["provider"], before["endpoint"]) == ("openai", server.url)
    assert after["request"] is before["request"]
    assert after["completion"] is gpt.last_result
    assert after["completion"].cost is not None  # accounted before the hook runs
    assert (after["error"], after["attempts"]) == (None, 2)
    assert after["elapsed"] > 0
    assert TEST_KEY not in repr(recorder.calls)


def test_after_response_gets_the_error_the_caller_gets(server: LoopbackServer) -> None:
    plugins = PluginRegistry()
    recorder = _recorder(plugins)
    server.enqueue(*[Fault.status(429)] * 4)
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, plugins=plugins)
    with pytest.raises(RateLimitError) as raised:
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
    [_, (_, after)] = recorder.calls
    assert after["error"] is raised.value
    assert (after["completion"], after["attempts"]) == (None, 4)
    assert TEST_KEY not in repr(recorder.calls)


def test_a_hook_may_take_only_the_arguments_it_needs(server: LoopbackServer) -> None:
    seen: list[str] = []

    class Tokens:
        @hookimpl
        def after_response(self, completion: Completion | None) -> None:
            assert completion is not None
            seen.append(f"{completion.model}: {completion.usage.total_tokens}")

    plugins = PluginRegistry()
    plugins.register(Tokens())
    server.enqueue(Reply(text="ok", prompt_tokens=7, completion_tokens=3))
    GPT("ollama", endpoint=server.url, plugins=plugins).chat_completion("llama3.2", "", "x")
    assert seen == ["llama3.2: 10"]


def test_a_policy_hook_can_refuse_a_request(server: LoopbackServer) -> None:
    class NoSecrets:
        @hookimpl
        def before_request(self, request: ChatRequest) -> None:
            if any("password" in m.content for m in request.messages):
                raise PermissionError("refusing to send a password")

    plugins = PluginRegistry()
    plugins.register(NoSecrets())
    gpt = GPT("ollama", endpoint=server.url, plugins=plugins)
    with pytest.raises(PermissionError):
        gpt.chat_completion("llama3.2", "", "my password is hunter2")
    assert server.chat_requests == []


def test_no_hook_plugin_no_hook_calls() -> None:
    """The installed plugins implement no call hooks, so calls skip them entirely."""
    assert registry.call_hooks() is None
    plugins = PluginRegistry()
    assert plugins.call_hooks() is None
    _recorder(plugins)
    assert plugins.call_hooks() is not None  # re-checked after a registration


def _drain_async(gpt: GPT, user: str) -> str:
    async def drain() -> str:
        try:
            return "".join([delta async for delta in gpt.astream("llama3.2", "", user)])
        finally:
            await gpt.aclose()

    return asyncio.run(drain())


STREAMERS = {
    "stream": lambda gpt, user: "".join(gpt.stream("llama3.2", "", user)),
    "astream": _drain_async,
}


@pytest.mark.parametrize("style", STREAMERS)
def test_a_policy_hook_can_refuse_a_streamed_request(server: LoopbackServer, style: str) -> None:
    class NoSecrets:
        @hookimpl
        def before_request(self, request: ChatRequest) -> None:
            if any("password" in m.content for m in request.messages):
                raise PermissionError("refusing to send a password")

    plugins = PluginRegistry()
    plugins.register(NoSecrets())
    gpt = GPT("ollama", endpoint=server.url, plugins=plugins)
    with pytest.raises(PermissionError):
        STREAMERS[style](gpt, "my password is hunter2")
    assert server.chat_requests == []


@pytest.mark.parametrize("style", STREAMERS)
def test_hooks_see_a_streamed_call_end_with_its_result_or_error(
    server: LoopbackServer, style: str
) -> None:
    plugins = PluginRegistry()
    recorder = _recorder(plugins)
    gpt = GPT("ollama", endpoint=server.url, retry=FAST_RETRY, plugins=plugins)
    server.enqueue(Fault.status(503), Reply(text="ok there"))
    assert STREAMERS[style](gpt, "Hi") == "ok there"
    server.enqueue(*[Fault.status(429)] * 4)
    with pytest.raises(RateLimitError) as raised:
        STREAMERS[style](gpt, "Hi")
    [(_, _), (_, ok), (_, _), (_, failed)] = recorder.calls
    assert ok["completion"].text == "ok there"
    assert (ok["error"], ok["attempts"]) == (None, 2)
    assert failed["error"] is raised.value
    assert (failed["completion"], failed["attempts"]) == (None, 4)
