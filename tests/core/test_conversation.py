"""context_assistant and named conversations, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from moodlemate.ai import (
    GPT,
    ContextWindowExceededError,
    Message,
    ModelInfo,
    ServerError,
    ValidationError,
)
from moodlemate.ai._conversation import count_chat_tokens
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from moodlemate.providers.openai import OpenAIProvider
from support import FAST_RETRY, TEST_KEY

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


class TinyWindow(OpenAIProvider):
    """An OpenAI-compatible provider whose one model has a context window we control."""

    name = "tiny-window-test"
    default_endpoint = "http://127.0.0.1:9/v1"
    key_prefixes = ()
    hosts = ("tiny.invalid",)
    window = 150

    def model_info(self, model: str, endpoint: str | None = None) -> ModelInfo | None:
        return ModelInfo(name=model, context_window=self.window, max_output_tokens=4096)


@pytest.fixture
def tiny(server: LoopbackServer) -> GPT:
    plugins = PluginRegistry(group="moodlemate.ai.none")
    plugins.register_provider(TinyWindow())
    return GPT(
        "tiny-window-test",
        endpoint=server.url,
        api_key=TEST_KEY,
        model="tiny-model",
        retry=FAST_RETRY,
        plugins=plugins,
    )


def test_second_call_carries_the_first_turn(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Reply(text="Paris."), Reply(text="About 2.1 million."))
    assert gpt.context_assistant("Capital of France?") == "Paris."
    assert gpt.context_assistant("Its population?") == "About 2.1 million."
    first, second = (r.body for r in server.chat_requests)
    assert first["model"] == second["model"] == gpt.model
    assert second["messages"] == [
        SYSTEM,
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Its population?"},
    ]
    assert gpt.conversation().history == (
        Message("user", "Capital of France?"),
        Message("assistant", "Paris."),
        Message("user", "Its population?"),
        Message("assistant", "About 2.1 million."),
    )
    assert gpt.ledger.calls == 2


@pytest.mark.all_plugins  # the tiny fixture's registry of its own: no pin applies
def test_long_conversation_is_trimmed_to_the_window(tiny: GPT, server: LoopbackServer) -> None:
    provider = tiny.provider
    conversation = tiny.conversation()
    conversation.max_tokens = 30  # reserved for the reply: 150 - 30 = 120 prompt tokens
    for i in range(12):
        tiny.context_assistant(f"question number {i} about the weather in a few words")
    last = server.chat_requests[-1].body
    messages = tuple(Message(m["role"], m["content"]) for m in last["messages"])
    assert messages[0] == Message("system", "You are a helpful assistant.")
    assert messages[-1] == Message("user", "question number 11 about the weather in a few words")
    assert count_chat_tokens(provider, "tiny-model", messages) <= 120
    assert last["max_tokens"] == 30
    # Oldest turns went first, whole (user + reply), and more than one turn still fits.
    kept = messages[1:-1]
    assert 2 <= len(kept) < 22
    assert kept[0].role == "user"
    assert [m.role for m in kept] == ["user", "assistant"] * (len(kept) // 2)
    assert "question number 0 " not in json.dumps(last)
    # The history is what the model saw, plus its reply.
    assert conversation.history == (
        *kept,
        messages[-1],
        Message("assistant", f"Echo: {messages[-1].content}"),
    )


@pytest.mark.all_plugins  # the tiny fixture's registry of its own: no pin applies
def test_prompt_that_cannot_fit_is_refused_before_sending(
    tiny: GPT, server: LoopbackServer
) -> None:
    with pytest.raises(ContextWindowExceededError, match="tokens"):
        tiny.context_assistant("word " * 400)
    assert server.requests == []
    assert tiny.conversation().history == ()


def test_unknown_window_uses_a_conservative_default(gpt: GPT, server: LoopbackServer) -> None:
    conversation = gpt.conversation("local")
    conversation.model = "my-local-llama"  # the price table knows nothing of it
    with pytest.raises(ContextWindowExceededError):
        conversation.ask("word " * 9000)
    # the server was asked for the window (its listing names none), and sent no chat request
    assert [r.path for r in server.requests] == ["/v1/models"]


def test_saved_conversation_restores_exactly(
    gpt: GPT, server: LoopbackServer, tmp_path: Path
) -> None:
    conversation = gpt.conversation("trip")
    conversation.system_message = "You plan trips. Ünïcödé ok."
    conversation.model = "gpt-4o"
    conversation.temperature = 0.2
    conversation.max_tokens = 200
    conversation.ask("Where to in May?")
    conversation.ask('Something "quoted"\nand multi-line?')
    path = tmp_path / "trip.json"
    conversation.save(path)

    other = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    restored = other.conversation("trip")
    restored.load(path)
    assert restored.history == conversation.history
    assert restored.to_json() == conversation.to_json()
    assert (restored.system_message, restored.model, restored.temperature, restored.max_tokens) == (
        "You plan trips. Ünïcödé ok.",
        "gpt-4o",
        0.2,
        200,
    )
    # The restored conversation continues where the saved one stopped.
    restored.ask("And in June?")
    original_last = server.chat_requests[1].body["messages"]
    restored_last = server.chat_requests[2].body
    assert restored_last["messages"][: len(original_last)] == original_last
    assert restored_last["model"] == "gpt-4o"
    assert restored_last["temperature"] == 0.2


def test_invalid_documents_change_nothing(gpt: GPT) -> None:
    conversation = gpt.conversation()
    before = conversation.to_json()
    for bad in (
        "not json",
        "[]",
        '{"version": 99}',
        json.dumps({"version": 1, "turns": [{"role": "system", "content": "x"}]}),
    ):
        with pytest.raises(ValidationError):
            conversation.load_json(bad)
    assert conversation.to_json() == before


def test_named_conversations_are_separate_and_resettable(gpt: GPT, server: LoopbackServer) -> None:
    a, b = gpt.conversation("a"), gpt.conversation("b", system_message="")
    assert gpt.conversation("a") is a
    a.ask("in a")
    b.ask("in b")
    assert server.chat_requests[1].body["messages"] == [{"role": "user", "content": "in b"}]
    assert len(a.history) == 2
    assert gpt.conversation().history == ()
    a.reset()
    assert a.history == ()
    a.ask("fresh")
    assert server.chat_requests[2].body["messages"] == [
        SYSTEM,
        {"role": "user", "content": "fresh"},
    ]


def test_failed_turn_leaves_history_unchanged(gpt: GPT, server: LoopbackServer) -> None:
    gpt.context_assistant("one")
    server.enqueue(*[Fault.status(500)] * FAST_RETRY.attempts)
    with pytest.raises(ServerError):
        gpt.context_assistant("two")
    assert [m.content for m in gpt.conversation().history] == ["one", "Echo: one"]


def test_bad_settings_are_rejected(gpt: GPT) -> None:
    conversation = gpt.conversation()
    with pytest.raises(ValidationError):
        conversation.temperature = 3
    with pytest.raises(ValidationError):
        conversation.max_tokens = 0
    with pytest.raises(ValidationError):
        conversation.model = " gpt-4o"
    with pytest.raises(ValidationError):
        gpt.context_assistant(42)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        gpt.conversation("")


def test_concurrent_threads_get_whole_ordered_turns(gpt: GPT, server: LoopbackServer) -> None:
    threads = [
        threading.Thread(target=gpt.context_assistant, args=(f"thread {n}",)) for n in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    history = gpt.conversation().history
    assert len(history) == 16
    for question, answer in zip(history[::2], history[1::2], strict=True):
        assert (question.role, answer.role) == ("user", "assistant")
        assert answer.content == f"Echo: {question.content}"
    # Each request carried every turn committed before it.
    sizes = sorted(len(r.body["messages"]) for r in server.chat_requests)
    assert sizes == [2 + 2 * i for i in range(8)]


def test_async_context_assistant_remembers(gpt: GPT, server: LoopbackServer) -> None:
    async def chat() -> list[str]:
        try:
            return [await gpt.acontext_assistant("first"), await gpt.acontext_assistant("second")]
        finally:
            await gpt.aclose()

    assert asyncio.run(chat()) == ["Echo: first", "Echo: second"]
    assert server.chat_requests[1].body["messages"][1:3] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Echo: first"},
    ]


def test_a_streamed_turn_is_remembered_once_complete(gpt: GPT, server: LoopbackServer) -> None:
    talk = gpt.conversation("streamed", system_message="")
    server.enqueue(Reply(text="Hello Ada.", chunks=["Hel", "lo ", "Ada."]))
    deltas = talk.stream("My name is Ada.")
    assert next(deltas) == "Hel"
    assert talk.history == ()  # not before the reply is whole
    assert "".join(deltas) == "lo Ada."
    assert [m.content for m in talk.history] == ["My name is Ada.", "Hello Ada."]
    # An abandoned stream leaves the history as it was; the next turn is not blocked.
    server.enqueue(Reply(text="never kept", chunks=["never", " kept"]))
    abandoned = talk.stream("Tell me more.")
    assert next(abandoned) == "never"
    abandoned.close()
    assert len(talk.history) == 2
    server.enqueue(Reply(text="ok"))
    assert talk.ask("Still there?") == "ok"
    assert [m["content"] for m in server.chat_requests[-1].body["messages"]] == [
        "My name is Ada.",
        "Hello Ada.",
        "Still there?",
    ]
