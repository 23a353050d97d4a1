"""A conversation turn that is a typed answer or a tool run, over real HTTP: what is asked, what
comes back, and what the history keeps for the next turn."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypedDict

import pytest
from moodlemate.ai import GPT, StructuredOutputError, ValidationError
from moodlemate.ai.errors import ContextWindowExceededError, ServerContextWindowExceededError
from moodlemate.ai.testing import Fault, LoopbackServer, Reply


class City(TypedDict):
    name: str
    population: int


def weather(city: str) -> str:
    """Current temperature in a city."""
    return {"Oslo": "4C"}.get(city, "10C")


def _asks(call_id: str, name: str, arguments: dict[str, Any]) -> Reply:
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return Reply(tool_calls=[call], finish_reason="tool_calls")


def _roles(request: Any) -> list[str]:
    return [m["role"] for m in request.body["messages"]]


def test_a_typed_turn_returns_the_answer_and_keeps_its_text(
    server: LoopbackServer, gpt: GPT
) -> None:
    oslo = '{"name": "Oslo", "population": 709000}'
    server.enqueue(Reply(text='{"name": "Oslo"}'), Reply(text=oslo), Reply(text="Norway."))
    talk = gpt.conversation("cities", system_message="Be brief.")
    city = talk.ask("Which city?", schema=City)
    assert city == {"name": "Oslo", "population": 709000}
    assert server.chat_requests[0].body["response_format"]["type"] == "json_schema"
    assert len(server.chat_requests) == 2  # one re-ask for the missing field
    # The history keeps the question and the valid answer, not the failed attempt.
    assert [(m.role, m.text) for m in talk.history] == [
        ("user", "Which city?"),
        ("assistant", oslo),
    ]
    assert talk.ask("In which country?") == "Norway."
    last = server.chat_requests[-1].body
    assert "response_format" not in last
    assert [m["content"] for m in last["messages"]] == [
        "Be brief.",
        "Which city?",
        oslo,
        "In which country?",
    ]


def test_a_typed_turn_that_never_fits_leaves_the_history_unchanged(
    server: LoopbackServer, gpt: GPT
) -> None:
    server.enqueue(*[Reply(text='{"name": 1}') for _ in range(2)])
    talk = gpt.conversation()
    with pytest.raises(StructuredOutputError):
        talk.ask("Which city?", schema=City, max_attempts=2)
    assert talk.history == ()


def test_a_tool_turn_keeps_every_call_and_result(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(
        _asks("call_1", "weather", {"city": "Oslo"}),
        Reply(text="4 degrees in Oslo."),
        Reply(text="You asked about Oslo."),
    )
    talk = gpt.conversation("weather")
    assert talk.ask("Weather in Oslo?", tools=[weather]) == "4 degrees in Oslo."
    assert server.chat_requests[0].body["tools"][0]["function"]["name"] == "weather"
    assert [m.role for m in talk.history] == ["user", "assistant", "tool", "assistant"]
    assert talk.history[2].text == "4C"
    assert talk.history[2].tool_call_id == "call_1"
    # The next turn carries the whole run, its tool turns answered by id; no tools offered.
    assert talk.ask("What did I ask?") == "You asked about Oslo."
    last = server.chat_requests[-1]
    assert _roles(last) == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert "tools" not in last.body


def test_async_typed_and_tool_turns(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(
        Reply(text='{"name": "Rome", "population": 2750000}'),
        _asks("c1", "weather", {"city": "Rome"}),
        Reply(text="10 degrees."),
    )
    talk = gpt.conversation("async")

    async def main() -> tuple[City, str]:
        city = await talk.aask("Which city?", schema=City)
        text = await talk.aask("Weather there?", tools=[weather])
        return city, text

    city, text = asyncio.run(main())
    assert city["name"] == "Rome"
    assert text == "10 degrees."
    assert [m.role for m in talk.history] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


def test_a_turn_takes_a_schema_or_tools_not_both(server: LoopbackServer, gpt: GPT) -> None:
    with pytest.raises(ValidationError, match="schema or tools"):
        gpt.conversation().ask("x", schema=City, tools=[weather])
    with pytest.raises(ValidationError, match="max_attempts"):
        gpt.conversation().ask("x", schema=City, max_attempts=0)
    assert server.chat_requests == []


def test_the_default_conversation_gives_context_assistant_its_tools(
    server: LoopbackServer, gpt: GPT
) -> None:
    server.enqueue(
        _asks("call_1", "weather", {"city": "Oslo"}),
        Reply(text="4 degrees in Oslo."),
        _asks("call_2", "weather", {"city": "Rome"}),
        Reply(text="10 degrees in Rome."),
        Reply(text="No tools now."),
    )
    talk = gpt.conversation(tools=[weather])
    assert [tool.name for tool in talk.tools] == ["weather"]
    assert gpt.context_assistant("Weather in Oslo?") == "4 degrees in Oslo."
    assert asyncio.run(gpt.acontext_assistant("And Rome?")) == "10 degrees in Rome."
    requests = server.chat_requests
    assert len(requests) == 4
    assert all(r.body["tools"][0]["function"]["name"] == "weather" for r in requests)
    assert [m["content"] for m in requests[-1].body["messages"] if m["role"] == "tool"] == [
        "4C",
        "10C",
    ]
    # A typed turn and an explicit tools=() ask without them; () takes them away for good.
    assert talk.ask("Plain?", tools=()) == "No tools now."
    assert "tools" not in server.chat_requests[-1].body
    server.enqueue(Reply(text='{"name": "Oslo", "population": 1}'))
    assert talk.ask("Which city?", schema=City)["name"] == "Oslo"
    assert "tools" not in server.chat_requests[-1].body
    assert gpt.conversation(tools=()).tools == ()
    assert gpt.context_assistant("Hi") == "Echo: Hi"
    assert "tools" not in server.chat_requests[-1].body


def test_conversation_tools_are_checked_when_set(server: LoopbackServer, gpt: GPT) -> None:
    with pytest.raises(ValidationError, match="two tools"):
        gpt.conversation(tools=[weather, weather])
    with pytest.raises(ValidationError, match="a tool is"):
        gpt.conversation("other", tools=[42])
    assert gpt.conversation().tools == ()
    assert server.chat_requests == []


def test_a_conversations_approval_hook_refuses_a_call(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(_asks("call_1", "weather", {"city": "Oslo"}), Reply(text="I may not look."))
    seen: list[str] = []

    def approve(call: Any, tool: Any) -> str:
        seen.append(f"{tool.name} {call.arguments}")
        return "Not now."

    talk = gpt.conversation(tools=[weather])
    talk.before_tool_call = approve
    assert gpt.context_assistant("Weather in Oslo?") == "I may not look."
    assert seen == ['weather {"city": "Oslo"}']
    (refused,) = [m for m in server.chat_requests[-1].body["messages"] if m["role"] == "tool"]
    assert "Not now." in refused["content"]


_OVERFLOW = Fault.status(
    400,
    code_str="context_length_exceeded",
    message="This model's maximum context length is 1000 tokens. However, your messages "
    "resulted in 1400 tokens.",
)


def _long_conversation(gpt: GPT, ran: list[str]) -> Any:
    """A conversation with three long old turns and a tool that counts its runs."""

    def weather(city: str) -> str:
        """Current temperature in a city."""
        ran.append(city)
        return "4C"

    talk = gpt.conversation("long")
    talk.load_json(
        json.dumps(
            {
                "version": 1,
                "system_message": "",
                "turns": [
                    m
                    for n in range(3)
                    for m in (
                        {"role": "user", "content": f"OLD-{n} " + "word " * 150},
                        {"role": "assistant", "content": "Noted."},
                    )
                ],
            }
        )
    )
    talk.tools = [weather]
    return talk


def _refuses_old_turns_with_tool_results(body: Any) -> Reply | Fault:
    """The model: asks for the weather, answers once it has it; the server refuses a turn
    that carries the oldest turn and a tool result together as over its window."""
    messages = body["messages"]
    if messages[-1]["role"] == "tool":
        return _OVERFLOW if "OLD-0" in json.dumps(messages) else Reply(text="4 degrees.")
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": json.dumps({"city": "Oslo"})},
    }
    return Reply(tool_calls=[call], finish_reason="tool_calls")


@pytest.mark.parametrize("how", ["ask", "aask", "stream", "astream"])
def test_a_tool_run_refused_as_too_long_refits_without_running_its_tools_again(
    server: LoopbackServer, gpt: GPT, how: str
) -> None:
    """The server refuses the run's second model turn (after the tool ran) as over its
    window: the conversation drops old turns and sends that turn again with the run's call
    and result, so the tool the model asked for once runs once."""
    ran: list[str] = []
    talk = _long_conversation(gpt, ran)
    server.responder = _refuses_old_turns_with_tool_results

    async def collect() -> str:
        return "".join([delta async for delta in talk.astream("Weather in Oslo?")])

    if how == "ask":
        answer = talk.ask("Weather in Oslo?")
    elif how == "aask":
        answer = asyncio.run(talk.aask("Weather in Oslo?"))
    elif how == "stream":
        answer = "".join(talk.stream("Weather in Oslo?"))
    else:
        answer = asyncio.run(collect())
    assert answer == "4 degrees."
    assert ran == ["Oslo"]
    first, refused, again = server.chat_requests
    assert _roles(first) == ["user", "assistant"] * 3 + ["user"]
    assert _roles(refused)[-2:] == ["assistant", "tool"]
    # Sent again without the oldest turn, with the run's call and result as they were.
    assert "OLD-0" not in json.dumps(again.body["messages"])
    assert again.body["messages"][-3:] == refused.body["messages"][-3:]
    assert again.body["tools"] == refused.body["tools"]
    texts = [m.text for m in talk.history]
    assert not any(t.startswith("OLD-0") for t in texts)
    assert texts[-4:] == ["Weather in Oslo?", "", "4C", "4 degrees."]
    assert talk.history[-3].tool_calls[0].id == "call_1"


def test_a_tool_run_refused_again_after_refitting_raises_and_runs_no_tool_twice(
    server: LoopbackServer, gpt: GPT
) -> None:
    ran: list[str] = []
    talk = _long_conversation(gpt, ran)
    before = talk.history

    def refuse_tool_results(body: Any) -> Reply | Fault:
        if body["messages"][-1]["role"] == "tool":
            return _OVERFLOW
        return _refuses_old_turns_with_tool_results(body)

    server.responder = refuse_tool_results
    with pytest.raises(ServerContextWindowExceededError):
        talk.ask("Weather in Oslo?")
    assert ran == ["Oslo"]
    assert len(server.chat_requests) == 3  # the tool turn, refused twice
    assert talk.history == before


def test_a_tool_run_whose_own_messages_cannot_fit_the_servers_window_raises_before_resending(
    server: LoopbackServer, gpt: GPT
) -> None:
    """The tool's result alone is over the window the server states: dropping every old
    turn cannot make room, so the run ends with ContextWindowExceededError, nothing is sent
    again, the tool ran once and the history is unchanged."""
    ran: list[str] = []

    def report(city: str) -> str:
        """A long report on a city."""
        ran.append(city)
        return "line " * 3000

    talk = gpt.conversation("reports", system_message="", tools=[report])

    def respond(body: Any) -> Reply | Fault:
        if body["messages"][-1]["role"] == "tool":
            return _OVERFLOW
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "report", "arguments": json.dumps({"city": "Oslo"})},
        }
        return Reply(tool_calls=[call], finish_reason="tool_calls")

    server.responder = respond
    with pytest.raises(ContextWindowExceededError, match="tool run so far") as caught:
        talk.ask("Report on Oslo?")
    assert not isinstance(caught.value, ServerContextWindowExceededError)
    assert ran == ["Oslo"]
    assert len(server.chat_requests) == 2
    assert talk.history == ()
