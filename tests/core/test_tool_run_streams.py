"""Streamed tool runs over real HTTP (``gpt.run_stream`` / ``gpt.arun_stream``): the events and
their order, the same bounds and accounting as ``gpt.run``, early closes, the Responses API, and
a run's destination pinned while another thread changes the instance's endpoint."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import (
    GPT,
    MaxTurnsError,
    RunBudgetError,
    RunDeadlineError,
    SpendLog,
    TextDelta,
    ToolCallFinished,
    ToolCallRequested,
    ToolCallStarted,
    TurnFinished,
)
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY


def weather(city: str, unit: str = "C") -> str:
    """Current temperature in a city."""
    return {"Oslo": "4", "Rome": "19"}.get(city, "10") + unit


def _call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def _asks(*calls: dict[str, Any], text: str | None = None, **more: Any) -> Reply:
    return Reply(text=text, tool_calls=list(calls), finish_reason="tool_calls", **more)


def _kinds(events: list[Any]) -> list[str]:
    """The events' kinds, runs of text deltas folded into one 'text'."""
    kinds: list[str] = []
    for event in events:
        kind = {
            TextDelta: "text",
            ToolCallRequested: "requested",
            ToolCallStarted: "started",
            ToolCallFinished: "finished",
            TurnFinished: "turn",
        }[type(event)]
        if not (kind == "text" and kinds and kinds[-1] == "text"):
            kinds.append(kind)
    return kinds


def test_events_come_in_order_and_text_arrives_before_the_tools_run(
    server: LoopbackServer, gpt: GPT
) -> None:
    ran_at: list[float] = []

    def look(city: str) -> str:
        """Look a city up."""
        ran_at.append(time.monotonic())
        return weather(city)

    server.enqueue(
        _asks(
            _call("a", "look", {"city": "Oslo"}),
            _call("b", "look", {"city": "Rome"}),
            text="Let me look both up.",
            chunk_delay=0.05,
        ),
        Reply(text="Rome is warmer.", chunk_delay=0.05),
    )
    seen: list[tuple[float, Any]] = []
    with gpt.run_stream("gpt-4o-mini", "Warmer in Oslo or Rome?", tools=[look]) as stream:
        for event in stream:
            seen.append((time.monotonic(), event))
    events = [event for _, event in seen]
    assert _kinds(events) == [
        "text",
        "requested",
        "requested",
        "started",
        "started",
        "finished",
        "finished",
        "turn",
        "text",
        "turn",
    ]
    first_text = next(at for at, event in seen if isinstance(event, TextDelta))
    assert first_text < min(ran_at)  # shown while the reply was still coming
    texts = [e.text for e in events if isinstance(e, TextDelta) and e.turn == 1]
    assert len(texts) > 1  # delta by delta, not the whole reply at once
    assert "".join(texts) == "Let me look both up."
    run = stream.run
    assert run is not None
    assert run.text == "Rome is warmer."
    assert run.stopped == "answer"
    assert [e.call.name for e in events if isinstance(e, ToolCallRequested)] == ["look", "look"]
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert sorted(e.output for e in finished) == ["19C", "4C"]
    assert [e.result for e in events if isinstance(e, TurnFinished)] == list(run.turns)
    assert stream.id == run.id
    # Each turn was a streamed request carrying the tools.
    assert all(r.body["stream"] is True and r.body["tools"] for r in server.chat_requests)


def test_two_parallel_one_second_tools_take_about_a_second_in_the_stream(
    server: LoopbackServer, gpt: GPT
) -> None:
    def slow(seconds: float) -> str:
        """Wait."""
        time.sleep(seconds)
        return f"waited {seconds}"

    server.enqueue(
        _asks(
            _call("a", "slow", {"seconds": 1}),
            _call("b", "slow", {"seconds": 1}),
            _call("c", "slow", {"seconds": 0.2}),
        ),
        Reply(text="ok"),
    )
    times: dict[str, float] = {}
    began = 0.0
    for event in gpt.run_stream("gpt-4o-mini", "go", tools=[slow]):
        if isinstance(event, ToolCallStarted) and not began:
            began = time.monotonic()
        if isinstance(event, ToolCallFinished):
            times[event.call.id] = time.monotonic() - began
            assert event.ok
    assert times["c"] < 0.8  # the short one is reported when it ends, not with the others
    assert 0.9 <= times["a"] < 1.8
    assert 0.9 <= times["b"] < 1.8  # together, not one after the other


def test_the_async_stream_runs_async_tools_at_once(server: LoopbackServer, gpt: GPT) -> None:
    async def fetch(url: str) -> str:
        """Fetch a page."""
        await asyncio.sleep(1)
        return f"page {url}"

    server.enqueue(
        _asks(_call("a", "fetch", {"url": "x"}), _call("b", "fetch", {"url": "y"}), text="On it."),
        Reply(text="Both fetched."),
    )

    async def main() -> tuple[list[Any], Any, float]:
        events = []
        stream = gpt.arun_stream("gpt-4o-mini", "go", tools=[fetch])
        started = time.monotonic()
        async with stream:
            async for event in stream:
                events.append(event)
        return events, stream.run, time.monotonic() - started

    events, run, seconds = asyncio.run(main())
    assert _kinds(events) == [
        "text",
        "requested",
        "requested",
        "started",
        "started",
        "finished",
        "finished",
        "turn",
        "text",
        "turn",
    ]
    assert run.text == "Both fetched."
    assert run.turns[0].tool_seconds < 1.8
    assert seconds < 3.0
    assert [r.output for r in run.tool_calls] == ["page x", "page y"]


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_malformed_and_unknown_streamed_calls_are_fed_back_and_recovered(
    server: LoopbackServer, gpt: GPT, flavour: str
) -> None:
    server.enqueue(
        _asks(
            _call("a", "weather", '{"city": "Oslo"'),  # cut JSON, streamed in pieces
            _call("b", "weather", {"town": "Oslo"}),
            _call("c", "forecast", {"city": "Oslo"}),
        ),
        _asks(_call("d", "weather", {"city": "Oslo"})),
        Reply(text="4 degrees."),
    )
    if flavour == "sync":
        events = list(gpt.run_stream("gpt-4o-mini", "Oslo?", tools=[weather]))
    else:

        async def main() -> list[Any]:
            return [e async for e in gpt.arun_stream("gpt-4o-mini", "Oslo?", tools=[weather])]

        events = asyncio.run(main())
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert [(e.turn, e.error) for e in finished] == [
        (1, "invalid_arguments"),
        (1, "invalid_arguments"),
        (1, "unknown_tool"),
        (2, None),
    ]
    started = [e.call.id for e in events if isinstance(e, ToolCallStarted)]
    assert started == ["d"]  # a call that does not fit never starts
    assert "not valid JSON" in finished[0].output
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "4 degrees."
    # The arguments the stream delivered in pieces were put together as sent.
    requested = [e.call.arguments for e in events if isinstance(e, ToolCallRequested)]
    assert requested[0] == '{"city": "Oslo"'
    told = [m for m in server.chat_requests[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in told] == ["a", "b", "c"]


def _endless(body: dict[str, Any]) -> Reply:
    number = len(body["messages"])
    return _asks(_call(f"c{number}", "weather", {"city": "Oslo"}), completion_tokens=50)


def test_a_streamed_endless_model_is_stopped_by_max_turns(server: LoopbackServer, gpt: GPT) -> None:
    server.responder = _endless
    events: list[Any] = []
    stream = gpt.run_stream("gpt-4o-mini", "loop", tools=[weather], max_turns=3)
    with pytest.raises(MaxTurnsError) as caught:
        events.extend(stream)
    assert len(server.chat_requests) == 3
    run = caught.value.run
    assert len(run.turns) == 3
    assert len(run.tool_calls) == 2  # the last turn's calls are not run
    turns = [e for e in events if isinstance(e, TurnFinished)]
    assert [e.turn for e in turns] == [1, 2, 3]
    assert sum((e.cost for e in turns if e.cost is not None), Decimal(0)) == run.cost


def test_a_streamed_endless_model_is_stopped_by_the_run_budget(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    server.responder = _endless
    budget = Decimal("0.0003")
    with pytest.raises(RunBudgetError, match="was not sent") as caught:
        for _ in gpt.run_stream(
            "gpt-4o-mini", "loop", tools=[weather], max_turns=100, budget=budget, max_tokens=50
        ):
            pass
    run = caught.value.run
    assert run.cost is not None
    assert run.cost <= budget
    assert len(server.chat_requests) == len(run.turns) < 100
    assert run.cost == gpt.ledger.cost
    assert gpt.ledger.reserved == 0


def test_a_streamed_endless_model_is_stopped_by_the_run_deadline(
    server: LoopbackServer, gpt: GPT
) -> None:
    def nap() -> str:
        """Sleep a little."""
        time.sleep(0.3)
        return "rested"

    gpt.chat_completion("gpt-4o-mini", "", "warm up")
    gpt.count_tokens("warm up")
    server.responder = lambda body: _asks(_call(f"c{len(body['messages'])}", "nap", {}))
    started = time.monotonic()
    with pytest.raises(RunDeadlineError) as caught:
        for _ in gpt.run_stream("gpt-4o-mini", "loop", tools=[nap], max_turns=100, deadline=1.0):
            pass
    assert time.monotonic() - started < 1.0 + 0.3 + 1.0
    assert 2 <= len(caught.value.run.turns) <= 5


def test_the_run_deadline_cuts_a_slow_streamed_turn(server: LoopbackServer, gpt: GPT) -> None:
    """A model still writing when the run's time is up: the turn is cut, the error is the
    run's deadline (not a bare stream interruption), and its row is in the log."""
    gpt.chat_completion("gpt-4o-mini", "", "warm up")
    server.enqueue(Reply(chunks=["word "] * 40, chunk_delay=0.1))
    started = time.monotonic()
    events: list[Any] = []
    stream = gpt.run_stream("gpt-4o-mini", "go", tools=[weather], deadline=1.0)
    with pytest.raises(RunDeadlineError, match="during turn 1"):
        events.extend(stream)
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert time.monotonic() - started < 1.8
    assert texts  # some text had come
    assert gpt.ledger.reserved == 0


def test_per_turn_costs_add_up_to_the_run_and_the_spend_log(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    server.enqueue(
        _asks(_call("a", "weather", {"city": "Oslo"}), prompt_tokens=123, completion_tokens=17),
        _asks(_call("b", "weather", {"city": "Rome"}), prompt_tokens=234, completion_tokens=19),
        Reply(text="Rome.", prompt_tokens=345, completion_tokens=3),
    )
    stream = gpt.run_stream("gpt-4o-mini", "Warmer?", tools=[weather])
    costs = [e.cost for e in stream if isinstance(e, TurnFinished)]
    run = stream.run
    assert run is not None
    assert all(cost is not None and cost > 0 for cost in costs)
    assert sum((c for c in costs if c is not None), Decimal(0)) == run.cost == gpt.ledger.cost
    rows = SpendLog(path).run_calls(run.id)
    assert [row.turn for row in rows] == [1, 2, 3]
    assert [row.cost for row in rows] == costs
    assert sum((row.cost for row in rows if row.cost is not None), Decimal(0)) == run.cost
    # The same script through run(): the same figures, to the last decimal.
    server.enqueue(
        _asks(_call("a", "weather", {"city": "Oslo"}), prompt_tokens=123, completion_tokens=17),
        _asks(_call("b", "weather", {"city": "Rome"}), prompt_tokens=234, completion_tokens=19),
        Reply(text="Rome.", prompt_tokens=345, completion_tokens=3),
    )
    whole = gpt.run("gpt-4o-mini", "Warmer?", tools=[weather])
    assert [t.cost for t in whole.turns] == costs


def test_closing_mid_reply_releases_the_reservation_and_logs_the_turn(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path, budget=1)
    server.enqueue(Reply(text=" ".join(["word"] * 50), chunk_delay=0.05))
    stream = gpt.run_stream("gpt-4o-mini", "go", tools=[weather])
    for event in stream:
        if isinstance(event, TextDelta):
            assert gpt.ledger.reserved > 0  # the turn holds its worst case while it streams
            break
    stream.close()
    assert gpt.ledger.reserved == 0
    assert stream.run is None
    (row,) = SpendLog(path).run_calls(stream.id)
    assert (row.turn, row.outcome) == (1, "cancelled")


def test_closing_while_tools_run_leaves_no_tool_thread(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    ended: list[str] = []

    def slow(seconds: float) -> str:
        """Wait."""
        time.sleep(seconds)
        ended.append("slow")
        return "done"

    server.enqueue(
        _asks(
            _call("a", "slow", {"seconds": 0.05}),
            _call("b", "slow", {"seconds": 0.6}),
            *[_call(f"q{n}", "slow", {"seconds": 0.6}) for n in range(20)],  # 16 run, 4 wait
        ),
        Reply(text="never asked"),
    )
    with gpt.run_stream("gpt-4o-mini", "go", tools=[slow]) as stream:
        for event in stream:
            if isinstance(event, ToolCallFinished):
                break  # while the others still run
    assert not [t for t in threading.enumerate() if t.name.startswith("moodlemate-tool")]
    # The running ones ended (one thread may have taken a waiting call before the close);
    # the waiting ones never started.
    assert 16 <= len(ended) <= 17
    assert len(server.chat_requests) == 1  # no further turn
    (row,) = SpendLog(path).with_tool_calls(SpendLog(path).run_calls(stream.id))
    outcomes = [call.outcome for call in row.tool_calls]
    assert len(outcomes) == 22
    assert outcomes[0] == "ok"
    assert set(outcomes[1:]) == {"cancelled"}


def test_cancelling_an_async_stream_cancels_its_tool_tasks(
    server: LoopbackServer, gpt: GPT
) -> None:
    state = {"started": 0, "cancelled": 0}

    async def long_job() -> str:
        """A long job."""
        state["started"] += 1
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] += 1
            raise
        return "done"

    server.enqueue(_asks(_call("a", "long_job", {}), _call("b", "long_job", {})))

    async def consume() -> None:
        async for _ in gpt.arun_stream("gpt-4o-mini", "go", tools=[long_job]):
            pass

    async def main() -> None:
        task = asyncio.ensure_future(consume())
        while state["started"] < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []

    asyncio.run(main())
    assert state == {"started": 2, "cancelled": 2}


def test_aclose_mid_reply_releases_and_logs(server: LoopbackServer, tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path, budget=1)
    server.enqueue(Reply(text=" ".join(["word"] * 50), chunk_delay=0.05))

    async def main() -> str:
        stream = gpt.arun_stream("gpt-4o-mini", "go", tools=[weather])
        async for event in stream:
            if isinstance(event, TextDelta):
                break
        await stream.aclose()
        return stream.id

    run_id = asyncio.run(main())
    assert gpt.ledger.reserved == 0
    (row,) = SpendLog(path).run_calls(run_id)
    assert row.outcome == "cancelled"


def test_a_streamed_run_on_the_responses_api(server: LoopbackServer, gpt: GPT) -> None:
    """o3-pro is served only by /v1/responses: each streamed turn goes there, its
    function calls are read from the event stream."""
    server.enqueue(
        _asks(_call("call_a", "weather", {"city": "Oslo"}), text="Checking."),
        Reply(text="4 degrees in Oslo."),
    )
    events = list(gpt.run_stream("o3-pro", "Oslo?", tools=[weather]))
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert [(e.call.name, e.output) for e in finished] == [("weather", "4C")]
    turns = [e for e in events if isinstance(e, TurnFinished)]
    assert turns[-1].completion.text == "4 degrees in Oslo."
    assert "".join(e.text for e in events if isinstance(e, TextDelta) and e.turn == 2) == (
        "4 degrees in Oslo."
    )
    sent = [r for r in server.requests if r.path.endswith("/responses")]
    assert len(sent) == 2
    assert all(r.body["stream"] is True for r in sent)
    assert server.chat_requests == []


@pytest.mark.parametrize("flavour", ["run", "run_stream", "arun"])
def test_a_run_keeps_its_destination_when_the_endpoint_changes_mid_run(
    server: LoopbackServer, flavour: str
) -> None:
    other_key = "sk-other-" + "x" * 40
    with LoopbackServer() as other:
        gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)

        def switch(city: str) -> str:
            """Look a city up (while someone repoints the instance)."""
            gpt.configure(endpoint=other.url, api_key=other_key, headers={"x-team": "b"})
            return weather(city)

        server.enqueue(
            _asks(_call("a", "switch", {"city": "Oslo"})),
            _asks(_call("b", "switch", {"city": "Rome"})),
            Reply(text="done"),
        )
        if flavour == "run":
            run = gpt.run("gpt-4o-mini", "go", tools=[switch])
        elif flavour == "arun":
            run = asyncio.run(gpt.arun("gpt-4o-mini", "go", tools=[switch]))
        else:
            stream = gpt.run_stream("gpt-4o-mini", "go", tools=[switch])
            for _ in stream:
                pass
            assert stream.run is not None
            run = stream.run
        assert run.text == "done"
        assert len(server.chat_requests) == 3  # every turn where the first went
        assert other.chat_requests == []
        assert all(
            r.headers.get("authorization") == f"Bearer {TEST_KEY}" for r in server.chat_requests
        )
        # The next call follows the new setting.
        other.enqueue(Reply(text="over here"))
        assert gpt.chat_completion("gpt-4o-mini", "", "hi") == "over here"
        assert other.chat_requests[0].headers.get("x-team") == "b"


@pytest.mark.parametrize("how", ["run", "run_stream"])
def test_a_tool_call_without_an_id_is_run_not_lost(
    server: LoopbackServer, gpt: GPT, how: str
) -> None:
    """Some servers stream a call with no id: it still runs, under an id of its own."""
    server.enqueue(
        _asks(
            {"type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}
        ),
        Reply(text="19 in Rome."),
    )
    if how == "run":
        run = gpt.run("gpt-4o-mini", "Rome?", tools=[weather])
    else:
        stream = gpt.run_stream("gpt-4o-mini", "Rome?", tools=[weather])
        for _ in stream:
            pass
        assert stream.run is not None
        run = stream.run
    assert run.text == "19 in Rome."
    (result,) = run.tool_calls
    assert result.output == "19C"
    assert result.call.id
    told = [m for m in server.chat_requests[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in told] == [result.call.id]


def test_stop_after_refusals_and_raised_errors_hold_in_the_stream(
    server: LoopbackServer, tmp_path: Path
) -> None:
    from moodlemate.ai import ToolExecutionError

    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)

    def submit(answer: str) -> str:
        """Hand the answer in."""
        return "submitted"

    def wipe(path: str) -> str:
        """Wipe a disk."""
        raise AssertionError("refused calls never run")

    def broken() -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    server.enqueue(_asks(_call("a", "wipe", {"path": "/"}), _call("b", "submit", {"answer": "42"})))
    stream = gpt.run_stream(
        "gpt-4o-mini",
        "go",
        tools=[submit, wipe],
        stop_after="submit",
        before_tool_call=lambda call, tool: tool.name != "wipe" or "not today",
    )
    events = list(stream)
    assert stream.run is not None
    assert stream.run.stopped == "stop_after"
    assert len(server.chat_requests) == 1
    finished = {e.call.id: e for e in events if isinstance(e, ToolCallFinished)}
    assert finished["a"].error == "refused"
    assert "not today" in finished["a"].output
    assert finished["b"].ok
    server.enqueue(_asks(_call("c", "broken", {})))
    failing = gpt.run_stream("gpt-4o-mini", "go", tools=[broken], raise_tool_errors=True)
    with pytest.raises(ToolExecutionError, match="disk on fire"):
        list(failing)
    (row,) = SpendLog(path).with_tool_calls(SpendLog(path).run_calls(failing.id))
    assert [c.outcome for c in row.tool_calls] == ["raised"]


def test_an_async_approval_hook_in_the_async_stream(server: LoopbackServer, gpt: GPT) -> None:
    async def approve(call: Any, tool: Any) -> bool | str:
        await asyncio.sleep(0.01)
        return call.arguments.find("Rome") < 0 or "not Rome"

    server.enqueue(
        _asks(_call("a", "weather", {"city": "Oslo"}), _call("b", "weather", {"city": "Rome"})),
        Reply(text="Only Oslo."),
    )

    async def main() -> list[Any]:
        stream = gpt.arun_stream("gpt-4o-mini", "go", tools=[weather], before_tool_call=approve)
        return [e async for e in stream]

    events = asyncio.run(main())
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert sorted((e.call.id, e.error) for e in finished) == [("a", None), ("b", "refused")]


def test_a_streamed_run_with_fallbacks_logs_each_turn(
    server: LoopbackServer, tmp_path: Path
) -> None:
    from moodlemate.ai.testing import Fault

    path = tmp_path / "spend.sqlite"
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=FAST_RETRY,
        log=path,
        fallbacks=["gpt-4o"],
    )

    def answer(body: dict[str, Any]) -> Reply | Fault:
        answered = any(m["role"] == "tool" for m in body["messages"])
        if body["model"] == "gpt-4o-mini" and not answered:
            return Fault.status(503)  # an outage: the turn goes to the fallback
        if not answered:
            return _asks(_call("a", "weather", {"city": "Oslo"}))
        return Reply(text="4 degrees.", chunk_delay=0.01)

    server.responder = answer
    stream = gpt.run_stream("gpt-4o-mini", "Oslo?", tools=[weather])
    events = list(stream)
    assert stream.run is not None
    assert stream.run.text == "4 degrees."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "4 degrees."
    rows = SpendLog(path).run_calls(stream.id)
    assert [(r.turn, r.requested_model, r.outcome == "ok") for r in rows] == [
        (1, "gpt-4o-mini", False),
        (1, "gpt-4o", True),
        (2, "gpt-4o-mini", True),
    ]
    assert sum((r.cost for r in rows if r.cost is not None), Decimal(0)) == stream.run.cost


def test_aclose_while_a_sync_tool_runs_waits_for_its_thread(
    server: LoopbackServer, gpt: GPT
) -> None:
    ended: list[float] = []

    def slow() -> str:
        """Wait half a second."""
        time.sleep(0.5)
        ended.append(time.monotonic())
        return "done"

    server.enqueue(_asks(_call("a", "slow", {})))

    async def main() -> float:
        stream = gpt.arun_stream("gpt-4o-mini", "go", tools=[slow])
        async for event in stream:
            if isinstance(event, ToolCallStarted):
                break
        await stream.aclose()
        return time.monotonic()

    closed = asyncio.run(main())
    assert ended  # the tool's thread had finished when aclose returned
    assert ended[0] <= closed


def _tool_chunk(*pieces: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-adv",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"tool_calls": list(pieces)}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _end_chunks() -> list[bytes]:
    usage = {
        "id": "chatcmpl-adv",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    return [b"data: " + json.dumps(usage).encode() + b"\n\n", b"data: [DONE]\n\n"]


def _fn(name: str | None = None, arguments: str | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    return function


STREAMED_SHAPES = {
    # OpenAI's own shape for two parallel calls, their pieces interleaved.
    "interleaved": [
        _tool_chunk({"index": 0, "id": "a", "type": "function", "function": _fn("weather", "")}),
        _tool_chunk({"index": 1, "id": "b", "type": "function", "function": _fn("weather", "")}),
        _tool_chunk({"index": 0, "function": _fn(arguments='{"city": ')}),
        _tool_chunk({"index": 1, "function": _fn(arguments='{"city": "Ro')}),
        _tool_chunk({"index": 0, "function": _fn(arguments='"Oslo"}')}),
        _tool_chunk({"index": 1, "function": _fn(arguments='me"}')}),
    ],
    # No index at all: a new id starts a call, other pieces go on with the last.
    "no index": [
        _tool_chunk({"id": "a", "type": "function", "function": _fn("weather", '{"ci')}),
        _tool_chunk({"function": _fn(arguments='ty": "Oslo"}')}),
        _tool_chunk({"id": "b", "type": "function", "function": _fn("weather", "")}),
        _tool_chunk({"function": _fn(arguments='{"city": "Rome"}')}),
    ],
    # The id and the name repeated with every piece.
    "repeated": [
        _tool_chunk({"index": 0, "id": "a", "function": _fn("weather", '{"city":')}),
        _tool_chunk({"index": 0, "id": "a", "function": _fn("weather", ' "Oslo"}')}),
        _tool_chunk({"index": 1, "id": "b", "function": _fn("weather", '{"city": "Rome"}')}),
    ],
}


@pytest.mark.parametrize("shape", sorted(STREAMED_SHAPES))
def test_tool_calls_streamed_in_pieces_are_put_together(shape: str) -> None:
    from adversarial import AdversarialServer, sse_events

    answers = iter(
        [
            sse_events(*STREAMED_SHAPES[shape], *_end_chunks()),
            sse_events(
                b'data: {"choices": [{"index": 0, "delta": {"content": "done"}, '
                b'"finish_reason": "stop"}]}\n\n',
                b"data: [DONE]\n\n",
            ),
        ]
    )
    with AdversarialServer({"/chat/completions": lambda sock: next(answers)(sock)}) as hostile:
        gpt = GPT("openai", endpoint=hostile.url, api_key=TEST_KEY, retry=FAST_RETRY)
        stream = gpt.run_stream("gpt-4o-mini", "Oslo and Rome?", tools=[weather])
        events = list(stream)
    requested = [e.call for e in events if isinstance(e, ToolCallRequested)]
    assert [(c.name, json.loads(c.arguments)) for c in requested] == [
        ("weather", {"city": "Oslo"}),
        ("weather", {"city": "Rome"}),
    ]
    assert [c.id for c in requested] == ["a", "b"]
    assert stream.run is not None
    assert [r.output for r in stream.run.tool_calls] == ["4C", "19C"]
    assert stream.run.text == "done"


def test_a_cancelled_async_run_records_its_tool_calls_as_cancelled(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)

    async def quick() -> str:
        """Done at once."""
        return "ok"

    async def long_job() -> str:
        """A long job."""
        await asyncio.sleep(30)
        return "done"

    server.enqueue(_asks(_call("a", "quick", {}), _call("b", "long_job", {})))

    async def main() -> str:
        stream = gpt.arun_stream("gpt-4o-mini", "go", tools=[quick, long_job])
        ids: list[str] = []

        async def consume() -> None:
            ids.append(stream.id)
            async for _ in stream:
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ids[0]

    run_id = asyncio.run(main())
    (row,) = SpendLog(path).with_tool_calls(SpendLog(path).run_calls(run_id))
    assert [(c.name, c.outcome) for c in row.tool_calls] == [
        ("quick", "ok"),
        ("long_job", "cancelled"),
    ]


def test_a_plain_break_closes_the_run(server: LoopbackServer, tmp_path: Path) -> None:
    """Without a ``with`` block, leaving the loop drops the stream, which closes it."""
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path, budget=1)
    server.enqueue(Reply(chunks=["word "] * 20, chunk_delay=0.05))
    for event in gpt.run_stream("gpt-4o-mini", "go", tools=[weather]):
        if isinstance(event, TextDelta):
            break
    assert gpt.ledger.reserved == 0
    (row,) = SpendLog(path).recent(1)
    assert (row.turn, row.outcome) == (1, "cancelled")


def test_a_streamed_turn_is_retried_before_its_first_delta_and_never_after(
    server: LoopbackServer, gpt: GPT
) -> None:
    from moodlemate.ai import StreamInterruptedError
    from moodlemate.ai.testing import Fault

    server.enqueue(
        Fault.status(503),
        _asks(_call("a", "weather", {"city": "Oslo"})),
        Fault.stream_break(after=2),  # text has reached the caller: an interruption
    )
    stream = gpt.run_stream("gpt-4o-mini", "Oslo?", tools=[weather])
    events: list[Any] = []
    with pytest.raises(StreamInterruptedError):
        events.extend(stream)
    (first,) = [e for e in events if isinstance(e, TurnFinished)]
    assert first.completion.attempts == 2
    assert any(isinstance(e, TextDelta) and e.turn == 2 for e in events)
    assert len(server.chat_requests) == 3  # the broken stream was not sent again
    assert gpt.ledger.reserved == 0


# -- a tool error that ends the run: every started call still ends -----------------------------


def _ends_of(events: list[Any]) -> dict[str, ToolCallFinished]:
    """The finished calls by id, each once; every started call among them."""
    started = [e.call.id for e in events if isinstance(e, ToolCallStarted)]
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert sorted(e.call.id for e in finished) == sorted({e.call.id for e in finished})
    ends = {e.call.id: e for e in finished}
    assert set(started) <= set(ends), set(started) - set(ends)
    return ends


def test_a_raised_tool_error_ends_every_started_call_of_the_stream_first(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """Under ``raise_tool_errors`` the stream reports each started call's end, with what came
    of it, before the error comes out of the iteration: the failing call (``raised``), the
    sync calls it waited for (``ok``, ``raised``, ``timeout``) and a call that never got its
    thread (``cancelled``); the spend log keeps its own record, as before."""
    from moodlemate.ai import Tool, ToolExecutionError

    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)

    def broken() -> str:
        """Fails at once."""
        time.sleep(0.05)
        raise RuntimeError("disk on fire")

    def slow() -> str:
        """Waits, then answers."""
        time.sleep(1.0)
        return "done"

    def late() -> str:
        """Waits, then fails."""
        time.sleep(1.0)
        raise ValueError("late failure")

    def stuck() -> str:
        """Past its timeout."""
        time.sleep(1.5)
        return "too late"

    tools = [broken, slow, late, Tool.from_function(stuck, timeout=0.5)]
    server.enqueue(
        _asks(
            _call("a", "broken", {}),
            _call("b", "late", {}),
            _call("c", "stuck", {}),
            _call("d", "nowhere", {}),  # never starts: ends at once, as ever
            *[_call(f"s{n}", "slow", {}) for n in range(15)],  # 13 run, 2 wait for a thread
        ),
        Reply(text="never asked"),
    )
    events: list[Any] = []
    stream = gpt.run_stream("gpt-4o-mini", "go", tools=tools, raise_tool_errors=True)
    with pytest.raises(ToolExecutionError, match="disk on fire"):
        events.extend(stream)  # keeps the events that came before the error
    ends = _ends_of(events)
    assert len(ends) == 19
    started = [e.call.id for e in events if isinstance(e, ToolCallStarted)]
    assert len(started) == 18
    assert [e.turn for e in ends.values()] == [1] * 19
    assert (ends["a"].error, ends["b"].error, ends["c"].error) == ("raised", "raised", "timeout")
    assert ends["d"].error == "unknown_tool"
    assert "disk on fire" in ends["a"].output
    assert ends["b"].seconds >= 0.9  # it was waited for, not given up
    slow_ones = [ends[f"s{n}"] for n in range(15)]
    assert {e.error for e in slow_ones} == {None, "cancelled"}
    assert 13 <= sum(e.ok for e in slow_ones) <= 14  # a freed thread may take a waiting call
    for end in slow_ones:
        if end.error == "cancelled":
            assert end.seconds == 0
            assert "cancelled" in end.output
    assert isinstance(events[-1], ToolCallFinished)  # no TurnFinished: the turn did not end
    (row,) = SpendLog(path).with_tool_calls(SpendLog(path).run_calls(stream.id))
    outcomes = [c.outcome for c in row.tool_calls]
    assert outcomes[:4] == ["raised", "raised", "timeout", "unknown_tool"]
    assert set(outcomes[4:]) == {"ok", "not_run"}


def test_a_raised_tool_error_ends_every_started_call_of_the_async_stream_first(
    server: LoopbackServer,
) -> None:
    """Async: the async tool still running is cancelled and reported ``cancelled`` (timed to
    its cancellation), the sync one is waited for and reported ``ok``."""
    from moodlemate.ai import ToolExecutionError

    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    cancelled: list[str] = []

    async def broken() -> str:
        """Fails."""
        await asyncio.sleep(0.05)
        raise RuntimeError("disk on fire")

    async def long_job() -> str:
        """A long job."""
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("long_job")
            raise
        return "done"

    def slow() -> str:
        """A sync job."""
        time.sleep(0.3)
        return "done"

    server.enqueue(
        _asks(_call("a", "long_job", {}), _call("b", "broken", {}), _call("c", "slow", {}))
    )

    async def main() -> list[Any]:
        events: list[Any] = []
        stream = gpt.arun_stream(
            "gpt-4o-mini", "go", tools=[broken, long_job, slow], raise_tool_errors=True
        )

        async def collect() -> None:
            async for event in stream:
                events.append(event)

        with pytest.raises(ToolExecutionError, match="disk on fire"):
            await collect()
        return events

    events = asyncio.run(main())
    assert cancelled == ["long_job"]
    ends = _ends_of(events)
    assert [(i, ends[i].error) for i in "abc"] == [("a", "cancelled"), ("b", "raised"), ("c", None)]
    assert 0.03 <= ends["a"].seconds < 5  # from its start to its cancellation
    assert ends["c"].output == "done"
    finished = [e.call.id for e in events if isinstance(e, ToolCallFinished)]
    assert finished[0] == "b"  # the error's own call first
