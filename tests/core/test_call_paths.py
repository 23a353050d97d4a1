"""Sync, async and streamed calls share one preparation step: the same routing, budget,
context-window check and call hooks apply whichever way a request is sent."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from moodlemate.ai import (
    GPT,
    BudgetExceededError,
    ChatRequest,
    Completion,
    ContextWindowExceededError,
    UnknownProviderError,
    hookimpl,
)
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

CALL = Reply(text="ok", prompt_tokens=10_000, completion_tokens=2_500)  # $0.003 on gpt-4o-mini
TOO_LONG = "word " * 140_000  # far over gpt-4o-mini's 128,000-token window


def _sync(gpt: GPT, user: str, model: str) -> str:
    return gpt.chat_completion(model, "", user)


def _async(gpt: GPT, user: str, model: str) -> str:
    return asyncio.run(gpt.achat_completion(model, "", user))


def _stream(gpt: GPT, user: str, model: str) -> str:
    return "".join(gpt.stream(model, "", user))


def _astream(gpt: GPT, user: str, model: str) -> str:
    async def drain() -> str:
        return "".join([delta async for delta in gpt.astream(model, "", user)])

    return asyncio.run(drain())


SENDERS = {"sync": _sync, "async": _async, "stream": _stream, "astream": _astream}


@pytest.mark.parametrize("path", SENDERS)
def test_budget_stops_every_path_before_sending(
    server: LoopbackServer, gpt: GPT, path: str
) -> None:
    server.responder = lambda body: CALL
    gpt.chat_completion("gpt-4o-mini", "", "spend")
    gpt.budget = gpt.ledger.cost  # reached
    with pytest.raises(BudgetExceededError):
        SENDERS[path](gpt, "one more", "gpt-4o-mini")
    assert len(server.chat_requests) == 1


@pytest.mark.parametrize("path", SENDERS)
def test_context_window_is_checked_on_every_path(
    server: LoopbackServer, gpt: GPT, path: str
) -> None:
    with pytest.raises(ContextWindowExceededError):
        SENDERS[path](gpt, TOO_LONG, "gpt-4o-mini")
    assert server.chat_requests == []


@pytest.mark.parametrize("path", SENDERS)
def test_provider_prefix_routes_every_path(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A provider left out by the plugin filter is refused on every path, never sent on."""
    monkeypatch.setenv("MOODLEMATE_PLUGINS", "openai")
    gpt = GPT(
        "openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, plugins=PluginRegistry()
    )
    with pytest.raises(UnknownProviderError, match="installed but not loaded"):
        SENDERS[path](gpt, "hi", "openrouter:openai/gpt-4o-mini")
    assert server.chat_requests == []


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def before_request(self, request: ChatRequest, provider: str, endpoint: str) -> None:
        self.events.append(("before", request.model))

    @hookimpl
    def after_response(
        self, request: ChatRequest, completion: Completion | None, error: Exception | None
    ) -> None:
        self.events.append(("after", completion.text if completion else type(error).__name__))


def test_call_hooks_wrap_async_calls(server: LoopbackServer) -> None:
    plugins = PluginRegistry()
    recorder = Recorder()
    plugins.register(recorder, "recorder")
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, plugins=plugins)
    server.enqueue(Reply(text="async answer"))
    assert asyncio.run(gpt.achat_completion("gpt-4o-mini", "", "hi")) == "async answer"
    assert recorder.events == [("before", "gpt-4o-mini"), ("after", "async answer")]
    assert gpt.ledger.cost > Decimal(0)


class StreamRecorder(Recorder):
    @hookimpl
    def after_response(
        self, request: ChatRequest, completion: Completion | None, error: Exception | None
    ) -> None:
        seen = completion.text if completion else type(error).__name__
        self.events.append(("after", seen))


@pytest.mark.parametrize("path", ["stream", "astream"])
def test_call_hooks_wrap_streams_once(server: LoopbackServer, path: str) -> None:
    plugins = PluginRegistry()
    recorder = StreamRecorder()
    plugins.register(recorder, "recorder")
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, plugins=plugins)
    server.enqueue(Reply(text="streamed answer"))
    assert SENDERS[path](gpt, "hi", "gpt-4o-mini") == "streamed answer"
    assert recorder.events == [("before", "gpt-4o-mini"), ("after", "streamed answer")]


@pytest.mark.parametrize("path", ["stream", "astream"])
def test_call_hooks_see_a_stream_that_fails(server: LoopbackServer, path: str) -> None:
    from moodlemate.ai import StreamInterruptedError
    from moodlemate.ai.testing import Fault

    plugins = PluginRegistry()
    recorder = StreamRecorder()
    plugins.register(recorder, "recorder")
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, plugins=plugins)
    server.enqueue(Fault.stream_break(after=3))
    with pytest.raises(StreamInterruptedError):
        SENDERS[path](gpt, "hi", "gpt-4o-mini")
    assert recorder.events == [("before", "gpt-4o-mini"), ("after", "StreamInterruptedError")]
