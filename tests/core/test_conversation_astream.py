"""``Conversation.astream``: the async twin of ``Conversation.stream``, over loopback HTTP,
plain and as a streamed tool run, checked against the sync one turn for turn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from moodlemate.ai import GPT, BadRequestError, Conversation
from moodlemate.ai.testing import Fault, LoopbackServer, Reply


def weather(city: str) -> str:
    """Current temperature in a city."""
    return {"Oslo": "4C"}.get(city, "10C")


def _asks(text: str = "") -> Reply:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": json.dumps({"city": "Oslo"})},
    }
    if text:
        return Reply(text=text, chunks=[text], tool_calls=[call], finish_reason="tool_calls")
    return Reply(tool_calls=[call], finish_reason="tool_calls")


async def _collect(deltas: AsyncIterator[str]) -> list[str]:
    return [delta async for delta in deltas]


def _sync(talk: Conversation, prompt: str) -> list[str]:
    return list(talk.stream(prompt))


def _async(talk: Conversation, prompt: str) -> list[str]:
    return asyncio.run(_collect(talk.astream(prompt)))


FLAVOURS: dict[str, Callable[[Conversation, str], list[str]]] = {
    "stream": _sync,
    "astream": _async,
}


def test_a_plain_async_turn_is_remembered_once_complete(gpt: GPT, server: LoopbackServer) -> None:
    talk = gpt.conversation("astreamed", system_message="")
    server.enqueue(
        Reply(text="Hello Ada.", chunks=["Hel", "lo ", "Ada."]),
        Reply(text="never kept", chunks=["never", " kept"]),
        Reply(text="ok", chunks=["ok"]),
    )

    async def main() -> None:
        deltas = talk.astream("My name is Ada.")
        assert await anext(deltas) == "Hel"
        assert talk.history == ()  # not before the reply is whole
        assert "".join(await _collect(deltas)) == "lo Ada."
        abandoned = talk.astream("Tell me more.")
        assert await anext(abandoned) == "never"
        await abandoned.aclose()  # an abandoned turn is not remembered
        assert await _collect(talk.astream("Still there?")) == ["ok"]
        await gpt.aclose()

    asyncio.run(main())
    assert [m.content for m in talk.history] == [
        "My name is Ada.",
        "Hello Ada.",
        "Still there?",
        "ok",
    ]
    assert server.chat_requests[-1].body["stream"] is True
    assert [m["content"] for m in server.chat_requests[-1].body["messages"]] == [
        "My name is Ada.",
        "Hello Ada.",
        "Still there?",
    ]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_tool_turn_streams_every_model_turn_and_keeps_the_run(
    gpt: GPT, server: LoopbackServer, flavour: str
) -> None:
    server.enqueue(_asks("Let me look."), Reply(text="4 degrees.", chunks=["4 ", "degrees."]))
    talk = gpt.conversation(f"tools-{flavour}", system_message="")
    talk.tools = [weather]
    assert FLAVOURS[flavour](talk, "Weather in Oslo?") == ["Let me look.", "\n", "4 ", "degrees."]
    assert [m.role for m in talk.history] == ["user", "assistant", "tool", "assistant"]
    assert talk.history[2].text == "4C"
    assert talk.history[-1].text == "4 degrees."
    assert all(r.body["stream"] is True for r in server.chat_requests)
    assert server.chat_requests[0].body["tools"][0]["function"]["name"] == "weather"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_failed_turn_leaves_the_history_unchanged(
    gpt: GPT, server: LoopbackServer, flavour: str
) -> None:
    talk = gpt.conversation(f"failing-{flavour}", system_message="")
    server.enqueue(Fault.status(400))
    with pytest.raises(BadRequestError):
        FLAVOURS[flavour](talk, "Hi")
    talk.tools = [weather]
    server.enqueue(_asks(), Fault.status(400))
    with pytest.raises(BadRequestError):
        FLAVOURS[flavour](talk, "Weather?")
    assert talk.history == ()


def test_an_async_tool_turn_cancelled_mid_run_is_not_remembered(
    gpt: GPT, server: LoopbackServer
) -> None:
    server.enqueue(_asks(), Reply(text="slow " * 40, chunks=["slow "] * 40, chunk_delay=0.05))
    talk = gpt.conversation("cancelled", system_message="")
    talk.tools = [weather]
    seen: list[Any] = []

    async def main() -> None:
        async def read() -> None:
            async for delta in talk.astream("Weather?"):
                seen.append(delta)

        task = asyncio.create_task(read())
        while not seen and not task.done():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await gpt.aclose()

    asyncio.run(main())
    assert seen
    assert talk.history == ()
    assert gpt.ledger.reserved == 0
