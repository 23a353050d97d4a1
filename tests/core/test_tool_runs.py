"""The tool loop over real HTTP: tools from functions, the loop, its bounds, its accounting, and a
model that misbehaves (broken arguments, unknown tools, endless calls)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import traceback
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from moodlemate.ai import (
    GPT,
    APITimeoutError,
    BadRequestError,
    MaxTurnsError,
    RetryPolicy,
    RunBudgetError,
    RunDeadlineError,
    SpendLog,
    Tool,
    ToolExecutionError,
    ValidationError,
)
from moodlemate.ai.testing import LoopbackServer, Reply
from moodlemate.providers.openai.strict_schema import strict_violations
from support import FAST_RETRY, TEST_KEY


def weather(city: str, unit: Literal["C", "F"] = "C") -> str:
    """Current temperature in a city."""
    return {"Oslo": "4", "Rome": "19"}.get(city, "10") + unit


def _call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def _asks(*calls: dict[str, Any], **usage: int) -> Reply:
    return Reply(tool_calls=list(calls), finish_reason="tool_calls", **usage)


def _tool_messages(request: Any) -> list[dict[str, Any]]:
    return [m for m in request.body["messages"] if m["role"] == "tool"]


def test_one_tool_then_the_answer(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(
        _asks(
            _call("call_1", "weather", {"city": "Oslo"}),
            _call("call_2", "weather", {"city": "Rome", "unit": "C"}),
        ),
        Reply(text="Rome is warmer."),
    )
    run = gpt.run("gpt-4o-mini", "Is it warmer in Oslo or Rome?", tools=[weather], max_turns=8)
    assert run.text == "Rome is warmer."
    assert run.stopped == "answer"
    assert len(run.turns) == 2
    assert [r.output for r in run.tool_calls] == ["4C", "19C"]
    assert all(r.ok for r in run.tool_calls)
    first, second = server.chat_requests
    (definition,) = first.body["tools"]
    assert definition["function"]["name"] == "weather"
    assert definition["function"]["description"] == "Current temperature in a city."
    assert definition["function"]["strict"] is True
    assert strict_violations(definition["function"]["parameters"]) == []
    # The second turn carries the assistant's calls and an answer to each, by id.
    assert second.body["messages"][-3]["tool_calls"][0]["id"] == "call_1"
    assert [(m["tool_call_id"], m["content"]) for m in _tool_messages(second)] == [
        ("call_1", "4C"),
        ("call_2", "19C"),
    ]
    assert run.tool_definition_tokens is not None
    assert run.tool_definition_tokens > 10


def test_parallel_calls_run_at_once(server: LoopbackServer, gpt: GPT) -> None:
    def slow(seconds: float) -> str:
        """Wait."""
        time.sleep(seconds)
        return "done"

    server.enqueue(
        _asks(_call("a", "slow", {"seconds": 1}), _call("b", "slow", {"seconds": 1})),
        Reply(text="ok"),
    )
    run = gpt.run("gpt-4o-mini", "go", tools=[slow])
    assert run.turns[0].tool_seconds < 1.8  # two 1 s tools together, not 2 s in a row
    assert all(r.seconds >= 0.9 for r in run.tool_calls)


def test_async_tools_run_concurrently_in_the_async_run(server: LoopbackServer, gpt: GPT) -> None:
    async def fetch(url: str) -> str:
        """Fetch a page."""
        await asyncio.sleep(1)
        return f"page {url}"

    server.enqueue(
        _asks(_call("a", "fetch", {"url": "x"}), _call("b", "fetch", {"url": "y"})),
        Reply(text="ok"),
    )
    run = asyncio.run(gpt.arun("gpt-4o-mini", "go", tools=[fetch]))
    assert run.turns[0].tool_seconds < 1.8
    assert [r.output for r in run.tool_calls] == ["page x", "page y"]


def test_an_endless_model_is_stopped_by_max_turns(server: LoopbackServer, gpt: GPT) -> None:
    server.responder = lambda body: _asks(
        _call(f"c{len(body['messages'])}", "weather", {"city": "Oslo"})
    )
    with pytest.raises(MaxTurnsError, match="after 3 turn") as caught:
        gpt.run("gpt-4o-mini", "loop", tools=[weather], max_turns=3)
    assert len(server.chat_requests) == 3
    run = caught.value.run
    assert len(run.turns) == 3
    assert len(run.tool_calls) == 2  # the last turn's calls are not run: no turn left to read them
    assert run.cost == gpt.ledger.cost


def test_an_endless_model_is_stopped_by_the_run_budget(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    server.responder = lambda body: _asks(
        _call(f"c{len(body['messages'])}", "weather", {"city": "Oslo"}), completion_tokens=50
    )
    budget = Decimal("0.0003")
    with pytest.raises(RunBudgetError, match="was not sent") as caught:
        gpt.run("gpt-4o-mini", "loop", tools=[weather], max_turns=100, budget=budget, max_tokens=50)
    run = caught.value.run
    assert run.cost is not None
    assert run.cost <= budget
    assert len(server.chat_requests) == len(run.turns) < 100
    assert run.cost == gpt.ledger.cost


@pytest.mark.parametrize("flavour", ["run", "arun", "run_stream"])
def test_turns_that_cannot_be_priced_still_count_against_the_run_budget(
    server: LoopbackServer, flavour: str
) -> None:
    """Each reply has audio tokens gpt-4o-mini lists no price for: its cost is unknown, yet
    it counts as the instance's budget counts it (its worst case), so the run stops."""
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    server.responder = lambda body: _asks(
        _call(f"c{len(body['messages'])}", "weather", {"city": "Oslo"}),
        prompt_tokens=100,
        audio_prompt_tokens=10,
        completion_tokens=50,
    )
    budget = Decimal("0.0003")
    settings: dict[str, Any] = {"tools": [weather], "max_turns": 60, "budget": budget}

    def go() -> None:
        if flavour == "run":
            gpt.run("gpt-4o-mini", "loop", max_tokens=50, **settings)
        elif flavour == "arun":
            asyncio.run(gpt.arun("gpt-4o-mini", "loop", max_tokens=50, **settings))
        else:
            for _ in gpt.run_stream("gpt-4o-mini", "loop", max_tokens=50, **settings):
                pass

    with pytest.raises(RunBudgetError, match="was not sent") as caught:
        go()
    run = caught.value.run
    assert run.cost is None  # unknown: the audio tokens have no price
    assert len(run.turns) < 60
    assert gpt.ledger.charged <= budget


def test_an_endless_model_is_stopped_by_the_run_deadline(server: LoopbackServer, gpt: GPT) -> None:
    def nap() -> str:
        """Sleep a little."""
        time.sleep(0.3)
        return "rested"

    # The client's and the tokenizer's first set-up (a second under load) is not what is timed.
    gpt.chat_completion("gpt-4o-mini", "", "warm up")
    gpt.count_tokens("warm up")
    server.responder = lambda body: _asks(_call(f"c{len(body['messages'])}", "nap", {}))
    started = time.monotonic()
    with pytest.raises(RunDeadlineError) as caught:
        gpt.run("gpt-4o-mini", "loop", tools=[nap], max_turns=100, deadline=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 0.3 + 1.0  # the deadline, plus at most one tool and one turn
    assert 2 <= len(caught.value.run.turns) <= 5


def test_broken_arguments_and_unknown_tools_are_told_to_the_model(
    server: LoopbackServer, gpt: GPT
) -> None:
    server.enqueue(
        _asks(
            _call("a", "weather", '{"city": "Oslo"'),  # cut JSON
            _call("b", "weather", {"town": "Oslo"}),  # wrong name
            _call("c", "weather", {"city": "Oslo", "unit": "K"}),  # outside the Literal
            _call("d", "forecast", {"city": "Oslo"}),  # no such tool
        ),
        _asks(_call("e", "weather", {"city": "Oslo"})),
        Reply(text="4 degrees."),
    )
    run = gpt.run("gpt-4o-mini", "Oslo?", tools=[weather])
    assert run.text == "4 degrees."
    errors = [r.error for r in run.tool_calls]
    assert errors == [
        "invalid_arguments",
        "invalid_arguments",
        "invalid_arguments",
        "unknown_tool",
        None,
    ]
    told = {m["tool_call_id"]: m["content"] for m in _tool_messages(server.chat_requests[1])}
    assert "not valid JSON" in told["a"]
    assert "unknown argument(s): town" in told["b"]
    assert "missing required argument(s): city" in told["b"]
    assert "'unit'" in told["c"]
    assert "no tool named 'forecast'" in told["d"]


def test_the_approval_hook_refuses_a_call(server: LoopbackServer, gpt: GPT) -> None:
    ran: list[str] = []

    def delete(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return "deleted"

    asked: list[tuple[str, str]] = []

    def approve(call: Any, tool: Tool) -> bool | str:
        asked.append((call.name, call.arguments))
        return "deleting is not allowed here"

    server.enqueue(_asks(_call("a", "delete", {"path": "/etc"})), Reply(text="I could not."))
    run = gpt.run("gpt-4o-mini", "clean up", tools=[delete], before_tool_call=approve)
    assert ran == []
    assert asked == [("delete", '{"path": "/etc"}')]
    assert run.tool_calls[0].error == "refused"
    assert "deleting is not allowed here" in _tool_messages(server.chat_requests[1])[0]["content"]


def test_a_tool_that_raises_is_told_redacted_or_raised_when_asked(
    server: LoopbackServer, gpt: GPT
) -> None:
    def login() -> str:
        """Log in."""
        raise PermissionError(f"key {TEST_KEY} was refused")

    server.enqueue(_asks(_call("a", "login", {})), Reply(text="Login failed."))
    run = gpt.run("gpt-4o-mini", "log in", tools=[login])
    result = run.tool_calls[0]
    assert result.error == "raised"
    sent = json.dumps(server.chat_requests[1].body)
    assert "PermissionError" in sent
    assert TEST_KEY not in sent  # the key never reaches the model

    server.enqueue(_asks(_call("b", "login", {})), Reply(text="unused"))
    with pytest.raises(ToolExecutionError, match="login raised PermissionError") as caught:
        gpt.run("gpt-4o-mini", "log in", tools=[login], raise_tool_errors=True)
    assert TEST_KEY not in str(caught.value)
    assert isinstance(caught.value.__cause__, PermissionError)
    # The tool's own exception is chained: what a traceback prints of it is redacted too.
    printed = "".join(traceback.format_exception(caught.value))
    assert "was refused" in printed
    assert TEST_KEY not in printed

    server.clear()  # the reply left unused above
    server.enqueue(_asks(_call("c", "login", {})))
    with pytest.raises(ToolExecutionError) as caught:
        asyncio.run(gpt.arun("gpt-4o-mini", "log in", tools=[login], raise_tool_errors=True))
    assert TEST_KEY not in "".join(traceback.format_exception(caught.value))


def test_stop_after_a_named_tool(server: LoopbackServer, gpt: GPT) -> None:
    def submit(answer: str) -> str:
        """Submit the final answer."""
        return "submitted"

    server.enqueue(_asks(_call("a", "submit", {"answer": "42"})), Reply(text="unused"))
    run = gpt.run("gpt-4o-mini", "answer", tools=[submit, weather], stop_after="submit")
    assert run.stopped == "stop_after"
    assert run.tool_calls[0].value == "submitted"
    assert len(server.chat_requests) == 1


def test_a_forced_tool_choice_applies_to_the_first_turn_only(
    server: LoopbackServer, gpt: GPT
) -> None:
    server.enqueue(_asks(_call("a", "weather", {"city": "Oslo"})), Reply(text="4C"))
    gpt.run("gpt-4o-mini", "Oslo?", tools=[weather], tool_choice="required")
    first, second = server.chat_requests
    assert first.body["tool_choice"] == "required"
    assert "tool_choice" not in second.body


def test_per_turn_costs_add_up_to_the_run_and_the_spend_log(
    server: LoopbackServer, tmp_path: Path
) -> None:
    log = SpendLog(tmp_path / "spend.sqlite")
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=log)
    server.enqueue(
        _asks(_call("a", "weather", {"city": "Oslo"}), prompt_tokens=123, completion_tokens=17),
        _asks(_call("b", "weather", {"city": "Rome"}), prompt_tokens=234, completion_tokens=19),
        Reply(text="Rome.", prompt_tokens=345, completion_tokens=3),
    )
    run = gpt.run("gpt-4o-mini", "Warmer?", tools=[weather])
    costs = [turn.cost for turn in run.turns]
    assert all(cost is not None and cost > 0 for cost in costs)
    assert run.cost == sum(costs, Decimal(0)) == gpt.ledger.cost
    rows = log.calls()
    assert len(rows) == 3
    assert sum((row.cost for row in rows if row.cost is not None), Decimal(0)) == run.cost
    assert run.usage.prompt_tokens == 123 + 234 + 345


def _run_rows(path: Path, run_id: str) -> list[tuple[int, Decimal]]:
    """(turn, cost) of a run's spend-log rows, read from the file with plain SQL."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT turn, cost FROM calls WHERE run_id = ? ORDER BY id", (run_id,)
        ).fetchall()
    finally:
        conn.close()
    return [(turn, Decimal(cost)) for turn, cost in rows]


def _three_turns(server: LoopbackServer, scale: int = 1) -> None:
    server.enqueue(
        _asks(
            _call("a", "weather", {"city": "Oslo"}), prompt_tokens=123 * scale, completion_tokens=17
        ),
        _asks(
            _call("b", "weather", {"city": "Rome"}), prompt_tokens=234 * scale, completion_tokens=19
        ),
        Reply(text="Rome.", prompt_tokens=345 * scale, completion_tokens=3),
    )


@pytest.mark.parametrize("how", ["sync", "async", "with fallbacks"])
def test_a_runs_spend_log_rows_carry_its_id_and_turns_and_add_up_to_its_cost(
    server: LoopbackServer, tmp_path: Path, how: str
) -> None:
    path = tmp_path / "spend.sqlite"
    fallbacks = ["gpt-4o"] if how == "with fallbacks" else None
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=FAST_RETRY,
        log=path,
        fallbacks=fallbacks,
    )
    gpt.complete("gpt-4o-mini", "", "a call of its own")
    runs = []
    for scale in (1, 7):  # two runs in one log: each finds only its own rows
        _three_turns(server, scale)
        if how == "async":
            runs.append(asyncio.run(gpt.arun("gpt-4o-mini", "Warmer?", tools=[weather])))
        else:
            runs.append(gpt.run("gpt-4o-mini", "Warmer?", tools=[weather]))
    first, second = runs
    assert first.id != second.id
    for run in runs:
        rows = _run_rows(path, run.id)
        assert [turn for turn, _ in rows] == [1, 2, 3]
        assert [cost for _, cost in rows] == [turn.cost for turn in run.turns]
        assert sum((cost for _, cost in rows), Decimal(0)) == run.cost
        assert run.cost is not None
        assert run.cost > 0
    records = SpendLog(path).calls()
    assert (records[0].run_id, records[0].turn) == (None, None)  # the plain call
    assert [(r.run_id, r.turn) for r in records[1:4]] == [(first.id, n) for n in (1, 2, 3)]
    assert records[4].as_dict()["run_id"] == second.id
    assert records[4].as_dict()["turn"] == 1


def test_a_failed_turn_is_logged_with_its_run_and_turn(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    server.enqueue(
        _asks(_call("a", "weather", {"city": "Oslo"})),
        Reply(status=400),
    )
    with pytest.raises(BadRequestError):
        gpt.run("gpt-4o-mini", "Warmer?", tools=[weather])
    records = SpendLog(path).calls()
    assert [(r.turn, r.outcome) for r in records] == [(1, "ok"), (2, "BadRequestError")]
    assert records[0].run_id is not None
    assert records[0].run_id == records[1].run_id


def test_a_log_written_before_runs_gains_the_run_columns(tmp_path: Path) -> None:
    from moodlemate.ai._spend_log import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:4]:
        conn.executescript(step)
    conn.execute("PRAGMA user_version = 4")
    conn.execute(
        "INSERT INTO calls (time, provider, requested_model, outcome, cost) "
        "VALUES ('2026-01-01T00:00:00.000000Z', 'openai', 'gpt-4o-mini', 'ok', '0.5')"
    )
    conn.close()
    (record,) = SpendLog(path).calls()
    assert (record.cost, record.run_id, record.turn) == (Decimal("0.5"), None, None)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_cancelling_an_async_run_cancels_its_tool_tasks(server: LoopbackServer, gpt: GPT) -> None:
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

    async def main() -> None:
        task = asyncio.ensure_future(gpt.arun("gpt-4o-mini", "go", tools=[long_job]))
        while state["started"] < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []  # no orphan tool task

    asyncio.run(main())
    assert state == {"started": 2, "cancelled": 2}


def test_a_sync_tool_past_its_timeout_is_told_as_a_timeout(
    server: LoopbackServer, gpt: GPT
) -> None:
    release = threading.Event()

    def stuck() -> str:
        """Never ends on its own."""
        release.wait(10)
        return "late"

    server.enqueue(_asks(_call("a", "stuck", {})), Reply(text="It timed out."))
    started = time.monotonic()
    run = gpt.run("gpt-4o-mini", "go", tools=[Tool.from_function(stuck, timeout=0.3)])
    release.set()
    assert time.monotonic() - started < 3
    assert run.tool_calls[0].error == "timeout"
    assert "did not finish" in _tool_messages(server.chat_requests[1])[0]["content"]


def test_a_raw_definition_with_its_callable(server: LoopbackServer, gpt: GPT) -> None:
    definition = {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    }
    server.enqueue(
        _asks(_call("x", "add", {"a": 2, "b": "three"}), _call("y", "add", {"a": 2, "b": 3})),
        Reply(text="5"),
    )
    run = gpt.run("gpt-4o-mini", "2+3", tools=[(definition, lambda a, b: a + b)])
    assert [r.error for r in run.tool_calls] == ["invalid_arguments", None]
    assert run.tool_calls[1].output == "5"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tools": []}, "at least one tool"),
        ({"tools": [weather, weather]}, "two tools are named"),
        ({"tools": [weather], "max_turns": 0}, "max_turns"),
        ({"tools": [weather], "deadline": -1}, "deadline"),
        ({"tools": [weather], "stop_after": "nope"}, "stop_after"),
        ({"tools": [{"type": "function", "function": {"name": "x"}}]}, "cannot be run"),
        ({"tools": "weather"}, "list of functions"),
    ],
)
def test_bad_runs_are_refused_before_sending(
    server: LoopbackServer, gpt: GPT, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        gpt.run("gpt-4o-mini", "x", **kwargs)
    assert server.chat_requests == []


def test_every_tool_run_request_follows_openais_spec(server: LoopbackServer, gpt: GPT) -> None:
    from openapi_spec import SPEC
    from openapi_spec import check_schema as check

    if SPEC is None:
        pytest.skip("the OpenAPI spec is not present")
    server.enqueue(
        _asks(
            _call("a", "weather", {"city": "Oslo"}),
            _call("b", "weather", {"city": "x", "unit": "Q"}),
        ),
        Reply(text="done"),
    )
    gpt.run("gpt-4o-mini", "Oslo?", tools=[weather], tool_choice="auto", system_message="Be brief.")
    for request in server.chat_requests:
        check("CreateChatCompletionRequest", request.body)


def test_a_slow_model_turn_counts_against_the_run_deadline(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=RetryPolicy(attempts=1))
    server.responder = lambda body: Reply(
        tool_calls=[_call(f"c{len(body['messages'])}", "weather", {"city": "Oslo"})],
        finish_reason="tool_calls",
        delay=0.4,
    )
    started = time.monotonic()
    with pytest.raises(RunDeadlineError, match="ran out") as caught:
        gpt.run("gpt-4o-mini", "loop", tools=[weather], max_turns=50, deadline=1.0)
    assert time.monotonic() - started < 2.5
    # Cut in the middle of a turn, the run still reports the turns it made and their cost.
    run = caught.value.run
    assert 1 <= len(run.turns) <= 3
    assert run.cost == gpt.ledger.cost


def test_a_slow_server_under_a_generous_run_deadline_is_a_timeout(server: LoopbackServer) -> None:
    slow = RetryPolicy(attempts=1, attempt_timeout=0.3, deadline=0.5)
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=slow)
    server.enqueue(Reply(text="late", delay=1.0))
    with pytest.raises(APITimeoutError):
        gpt.run("gpt-4o-mini", "go", tools=[weather], deadline=30.0)


def test_serve_calls_the_tools_it_is_given(server: LoopbackServer, gpt: GPT) -> None:
    """With calls_tools (what `moodlemate-ai serve` turns on), an unscripted run goes through a
    tool call and back, so a tool run can be tried without a model."""
    server.calls_tools = True
    run = gpt.run("gpt-4o-mini", "Weather in Oslo?", tools=[weather])
    assert [r.call.name for r in run.tool_calls] == ["weather"]
    assert run.tool_calls[0].output == "10C"  # the plainest arguments: city "example"
    assert run.text == "Echo: tool results: 10C"
    assert len(run.turns) == 2


# -- a hostile model and odd tools: the run goes on, bounded, and says what happened ----------


def test_a_repeated_or_missing_call_id_gets_an_id_of_its_own(
    server: LoopbackServer, gpt: GPT
) -> None:
    server.enqueue(
        _asks(
            _call("a", "weather", {"city": "Oslo"}),
            _call("a", "weather", {"city": "Rome"}),
            _call("", "weather", {"city": "Bern"}),
        ),
        Reply(text="done"),
    )
    run = gpt.run("gpt-4o-mini", "go", tools=[weather])
    assert run.text == "done"
    assert [r.output for r in run.tool_calls] == ["4C", "19C", "10C"]
    second = server.chat_requests[1]
    asked = [call["id"] for call in second.body["messages"][-4]["tool_calls"]]
    answered = [m["tool_call_id"] for m in _tool_messages(second)]
    assert asked[0] == "a"
    assert len(set(asked)) == 3
    assert answered == asked


def test_arguments_that_are_json_but_no_object_are_fed_back(
    server: LoopbackServer, gpt: GPT
) -> None:
    deep = '{"city": ' + "[" * 5000 + "]" * 5000 + "}"
    server.enqueue(
        _asks(
            _call("a", "weather", "[1, 2]"),
            _call("b", "weather", "null"),
            _call("c", "weather", "3"),
            _call("d", "weather", deep),
        ),
        Reply(text="sorry"),
    )
    run = gpt.run("gpt-4o-mini", "go", tools=[weather])
    assert [r.error for r in run.tool_calls] == ["invalid_arguments"] * 4
    assert all(len(r.output) < 500 for r in run.tool_calls)


def test_a_huge_unknown_tool_name_is_not_echoed_whole(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(_asks(_call("a", "w" * 10_000, {"city": "Oslo"})), Reply(text="ok"))
    run = gpt.run("gpt-4o-mini", "go", tools=[weather])
    (result,) = run.tool_calls
    assert result.error == "unknown_tool"
    assert "10,000 characters" in result.output
    assert len(result.output) < 300


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_tool_returns_that_cannot_be_shown_do_not_end_the_run(
    server: LoopbackServer, gpt: GPT
) -> None:
    def odd() -> object:
        """An object whose str() raises."""
        return _Unprintable()

    def deep() -> object:
        """A list nested past the recursion limit."""
        value: list[Any] = []
        for _ in range(100_000):
            value = [value]
        return value

    server.enqueue(_asks(_call("a", "odd", {}), _call("b", "deep", {})), Reply(text="ok"))
    run = gpt.run("gpt-4o-mini", "go", tools=[odd, deep])
    assert run.text == "ok"
    odd_result, deep_result = run.tool_calls
    assert odd_result.output == "<a _Unprintable that cannot be shown: RuntimeError>"
    assert deep_result.output == "<a list that cannot be shown: RecursionError>"
    assert [m["content"] for m in _tool_messages(server.chat_requests[1])] == [
        odd_result.output,
        deep_result.output,
    ]


def test_a_tool_exception_whose_text_raises_is_fed_back(server: LoopbackServer, gpt: GPT) -> None:
    class Odd(Exception):
        def __str__(self) -> str:
            raise ValueError("no text")

    def fails() -> str:
        """Raises an exception that cannot be shown."""
        raise Odd

    server.enqueue(_asks(_call("a", "fails", {})), Reply(text="ok"))
    run = gpt.run("gpt-4o-mini", "go", tools=[fails])
    (result,) = run.tool_calls
    assert result.error == "raised"
    assert "Odd: <a Odd that cannot be shown: ValueError>" in result.output


def test_a_huge_output_is_cut_and_a_key_across_the_cut_never_leaks(
    server: LoopbackServer, gpt: GPT
) -> None:
    from moodlemate.ai._tool_calls import MAX_OUTPUT_CHARS

    def dump() -> str:
        """Megabytes with the key at the cut and after it."""
        return "x" * (MAX_OUTPUT_CHARS - 5) + TEST_KEY + "y" * 5_000_000 + TEST_KEY

    server.enqueue(_asks(_call("a", "dump", {})), Reply(text="ok"))
    run = gpt.run("gpt-4o-mini", "go", tools=[dump])
    (result,) = run.tool_calls
    assert len(result.output) < MAX_OUTPUT_CHARS + 100
    assert result.output.endswith(
        f"[... the output was {2 * len(TEST_KEY) + 5_100_000 - 5:,} characters; cut]"
    )
    for key_piece in (TEST_KEY, TEST_KEY[:12], TEST_KEY[-12:]):
        assert key_piece not in server.chat_requests[1].body["messages"][-1]["content"]


def test_five_hundred_calls_in_one_turn_use_a_bounded_pool(
    server: LoopbackServer, gpt: GPT
) -> None:
    from moodlemate.ai._tool_calls import MAX_WORKERS

    names: set[str] = set()

    def note(n: int) -> int:
        """Record the thread."""
        names.add(threading.current_thread().name)
        time.sleep(0.005)
        return n

    server.enqueue(_asks(*[_call(f"c{i}", "note", {"n": i}) for i in range(500)]), Reply(text="ok"))
    run = gpt.run("gpt-4o-mini", "go", tools=[note])
    assert [r.output for r in run.tool_calls] == [str(i) for i in range(500)]
    assert len(names) <= MAX_WORKERS
    assert len(_tool_messages(server.chat_requests[1])) == 500
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name.startswith("moodlemate-tool")]


def test_the_async_run_cut_mid_turn_by_its_deadline_says_so(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=RetryPolicy(attempts=1))
    server.enqueue(_asks(_call("a", "weather", {"city": "Oslo"})), Reply(text="late", delay=3.0))
    with pytest.raises(RunDeadlineError, match="during turn 2") as caught:
        asyncio.run(gpt.arun("gpt-4o-mini", "go", tools=[weather], deadline=1.5))
    assert len(caught.value.run.turns) == 1
    assert caught.value.run.tool_calls[0].output == "4C"


def test_arguments_too_long_to_read_are_not_sent_back(server: LoopbackServer, gpt: GPT) -> None:
    """Two megabytes of arguments are refused unread; kept in the history they would make
    every later turn too long for the context window, ending the run."""
    huge = json.dumps({"city": "O" * 2_000_000})
    server.enqueue(
        _asks(_call("a", "weather", huge)),
        _asks(_call("b", "weather", {"city": "Oslo"})),
        Reply(text="4C in Oslo."),
    )
    run = gpt.run("gpt-4o-mini", "Weather in Oslo?", tools=[weather])
    assert run.text == "4C in Oslo."
    assert run.tool_calls[0].error == "invalid_arguments"
    assert "2,000,012 characters" in run.tool_calls[0].output
    assert run.turns[0].completion.tool_calls[0]["function"]["arguments"] == huge
    second = server.chat_requests[1].body["messages"]
    assert second[-2]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert len(json.dumps(second)) < 10_000
