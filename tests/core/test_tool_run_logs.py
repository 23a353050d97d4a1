"""A tool run's tool calls in the spend log (schema 6): each turn's row is written with the calls
its reply asked for (name only), their outcome and time once the run knows them; ``logs`` shows
them, run as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import (
    GPT,
    MaxTurnsError,
    SpendLog,
    Tool,
    ToolCallStarted,
    ToolExecutionError,
)
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

SECRET = "Oslo-4417-private"
"""An argument value that must never reach the log's file."""


def weather(city: str) -> str:
    """Current temperature in a city."""
    return "4C" if city.startswith("Oslo") else "19C"


def delete(path: str) -> str:
    """Delete a file."""
    raise AssertionError("refused calls never run")


def _call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def _asks(*calls: dict[str, Any]) -> Reply:
    return Reply(tool_calls=list(calls), finish_reason="tool_calls")


def _script(server: LoopbackServer) -> None:
    server.enqueue(
        _asks(
            _call("a", "weather", {"city": SECRET}),
            _call("b", "forecast", {"city": SECRET}),
            _call("c", "delete", {"path": "/etc/" + SECRET}),
            _call("d", "weather", '{"city": '),
        ),
        Reply(text="4 degrees."),
    )


def _refuse(call: Any, tool: Tool) -> bool:
    return tool.name != "delete"


@pytest.mark.parametrize("how", ["run", "arun", "run_stream"])
def test_each_turns_tool_calls_are_logged_without_arguments_or_results(
    server: LoopbackServer, tmp_path: Path, how: str
) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    _script(server)
    arguments: dict[str, Any] = {"tools": [weather, delete], "before_tool_call": _refuse}
    if how == "run":
        run = gpt.run("gpt-4o-mini", "Oslo?", **arguments)
    elif how == "arun":
        run = asyncio.run(gpt.arun("gpt-4o-mini", "Oslo?", **arguments))
    else:
        stream = gpt.run_stream("gpt-4o-mini", "Oslo?", **arguments)
        assert [e.call.name for e in stream if isinstance(e, ToolCallStarted)] == ["weather"]
        assert stream.run is not None
        run = stream.run
    log = SpendLog(path)
    first, second = log.with_tool_calls(log.run_calls(run.id))
    assert [(c.position, c.name, c.outcome) for c in first.tool_calls] == [
        (0, "weather", "ok"),
        (1, "forecast", "unknown_tool"),
        (2, "delete", "refused"),
        (3, "weather", "invalid_arguments"),
    ]
    assert first.tool_calls[0].latency_ms is not None
    assert first.tool_calls[1].latency_ms == 0
    assert second.tool_calls == ()
    assert first.as_dict()["tool_calls"][0] == {
        "name": "weather",
        "outcome": "ok",
        "latency_ms": first.tool_calls[0].latency_ms,
    }
    log.close()
    stored = path.read_bytes() + Path(f"{path}-wal").read_bytes()
    assert SECRET.encode() not in stored  # neither the arguments nor what a tool returned
    assert b"4C" not in stored


def test_calls_the_run_never_ran_are_logged_as_not_run(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    server.responder = lambda body: _asks(
        _call(f"c{len(body['messages'])}", "weather", {"city": "Oslo"})
    )
    with pytest.raises(MaxTurnsError) as caught:
        gpt.run("gpt-4o-mini", "loop", tools=[weather], max_turns=2)
    rows = SpendLog(path).with_tool_calls(SpendLog(path).run_calls(caught.value.run.id))
    assert [[c.outcome for c in row.tool_calls] for row in rows] == [["ok"], ["not_run"]]


def test_a_turns_row_and_its_tool_calls_are_written_together(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """Until the run knows what came of a call it reads ``requested``: a process that ends
    while its tools run leaves the turn whole, never a row without its calls."""
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    seen: list[list[str]] = []

    def look(city: str) -> str:
        """Look a city up (and at the log meanwhile)."""
        conn = sqlite3.connect(path)
        try:
            seen.append([row[0] for row in conn.execute("SELECT outcome FROM tool_calls")])
        finally:
            conn.close()
        return "4C"

    server.enqueue(_asks(_call("a", "look", {"city": "Oslo"})), Reply(text="ok"))
    gpt.run("gpt-4o-mini", "Oslo?", tools=[look])
    assert seen == [["requested"]]


def test_folding_old_rows_drops_their_tool_calls(server: LoopbackServer, tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    server.enqueue(_asks(_call("a", "weather", {"city": "Oslo"})), Reply(text="ok"))
    gpt.run("gpt-4o-mini", "Oslo?", tools=[weather])
    conn = sqlite3.connect(path)
    conn.execute("UPDATE calls SET time = '2020-01-01T00:00:00.000000Z'")
    conn.commit()
    conn.close()
    SpendLog(path).prune(30)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM tool_calls").fetchone()[0] == 0
    conn.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moodlemate.ai.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
    )


def test_the_logs_command_shows_a_runs_tool_calls(server: LoopbackServer, tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    gpt.complete("gpt-4o-mini", "", "a call of its own")
    _script(server)
    run = gpt.run("gpt-4o-mini", "Oslo?", tools=[weather, delete], before_tool_call=_refuse)
    out = _cli("logs", "--log", str(path), "--run", run.id)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "TIME",
        "PROVIDER",
        "MODEL",
        "TOKENS",
        "COST",
        "ATTEMPTS",
        "MS",
        "RUN/TURN",
        "TOOLS",
        "OUTCOME",
        "PROMPT",
        "REPLY",
    ]
    header = lines.index(next(line for line in lines if line.startswith("TURN")))
    calls = [line.split() for line in lines[header + 1 :]]
    assert [c[:4] for c in calls] == [
        ["1", "1", "weather", "ok"],
        ["1", "2", "forecast", "unknown_tool"],
        ["1", "3", "delete", "refused"],
        ["1", "4", "weather", "invalid_arguments"],
    ]
    assert SECRET not in out.stdout
    # Plain logs: a count per run turn, '-' for a call of its own.
    plain = _cli("logs", "--log", str(path)).stdout.splitlines()
    tools = plain[0].split().index("TOOLS") + 1  # the TIME cell holds a space
    assert [line.split()[tools] for line in plain[1:]] == ["0", "4", "-"]
    rows = json.loads(_cli("logs", "--log", str(path), "--json").stdout)
    assert [len(r["tool_calls"]) for r in rows] == [0, 4, 0]
    assert [c["outcome"] for c in rows[1]["tool_calls"]] == [
        "ok",
        "unknown_tool",
        "refused",
        "invalid_arguments",
    ]
    assert SECRET not in json.dumps(rows)


def test_a_key_in_a_tool_name_past_the_kept_length_never_reaches_the_log(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """The name is cut to 64 characters: a key that starts before the cut and ends after it is
    still recognised (redacted before the cut), so no prefix of it is stored."""
    key = "sk-proj-" + "K7q" * 50
    log = SpendLog(tmp_path / "spend.db")
    gpt = GPT("openai", endpoint=server.url, api_key=key, retry=FAST_RETRY, log=log)
    server.enqueue(_asks(_call("a", "lookup_" + key, {"city": "Oslo"})), Reply(text="done"))
    gpt.run("gpt-4o-mini", "weather?", tools=[weather])
    (name,) = [call.name for row in log.with_tool_calls(log.calls()) for call in row.tool_calls]
    assert name.startswith("lookup_sk-...")
    assert len(name) <= 64
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"K7qK7qK7q" not in data


@pytest.mark.parametrize("how", ["run", "run_stream"])
def test_a_raised_tool_error_waits_for_the_running_sync_tools_and_logs_what_came_of_them(
    server: LoopbackServer, tmp_path: Path, how: str
) -> None:
    """With ``raise_tool_errors`` one tool's error ends the run, but the tools already running
    in threads end first, within their timeouts, and the log says what came of each: only
    the calls still waiting for a thread are ``not_run``."""
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    ended: list[str] = []

    def broken() -> str:
        """Fails at once."""
        time.sleep(0.05)
        raise RuntimeError("disk on fire")

    def slow(seconds: float) -> str:
        """Wait, then answer."""
        time.sleep(seconds)
        ended.append("slow")
        return "done"

    def late(seconds: float) -> str:
        """Wait, then fail."""
        time.sleep(seconds)
        ended.append("late")
        raise ValueError("late failure")

    def stuck() -> str:
        """Past its timeout."""
        time.sleep(1.5)
        return "too late"

    tools = [broken, slow, late, Tool.from_function(stuck, timeout=0.5)]
    server.enqueue(
        _asks(
            _call("a", "broken", {}),
            _call("b", "late", {"seconds": 1.0}),
            _call("c", "stuck", {}),
            *[_call(f"s{n}", "slow", {"seconds": 1.0}) for n in range(15)],  # 13 run, 2 wait
        ),
        Reply(text="never asked"),
    )
    if how == "run":
        with pytest.raises(ToolExecutionError, match="disk on fire"):
            gpt.run("gpt-4o-mini", "go", tools=tools, raise_tool_errors=True)
        run_id = SpendLog(path).recent(1)[0].run_id
    else:
        stream = gpt.run_stream("gpt-4o-mini", "go", tools=tools, raise_tool_errors=True)
        with pytest.raises(ToolExecutionError, match="disk on fire"):
            list(stream)
        run_id = stream.id
    # The started tools ended before the run raised (one freed thread may take a waiting call).
    assert "late" in ended
    assert 13 <= ended.count("slow") <= 14
    assert len(server.chat_requests) == 1
    assert run_id is not None
    (row,) = SpendLog(path).with_tool_calls(SpendLog(path).run_calls(run_id))
    outcomes = [call.outcome for call in row.tool_calls]
    assert outcomes[:3] == ["raised", "raised", "timeout"]
    assert set(outcomes[3:16]) == {"ok"}
    assert "not_run" in outcomes[16:]
    assert set(outcomes[16:]) <= {"ok", "not_run"}
    assert all(c.latency_ms is not None for c in row.tool_calls if c.outcome != "not_run")
    late_ms = row.tool_calls[1].latency_ms
    assert late_ms is not None
    assert late_ms >= 900  # about its 1 s, timed from when it was handed to its thread
    # The stuck tool's thread, given up at its timeout, ends alone (and the idle ones exit).
    for thread in [t for t in threading.enumerate() if t.name.startswith("moodlemate-tool")]:
        thread.join(5)
        assert not thread.is_alive()


def test_a_raised_tool_error_in_an_async_run_cancels_async_tools_and_waits_for_sync_ones(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.sqlite"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    state = {"cancelled": 0, "sync": 0}

    async def broken() -> str:
        """Fails."""
        await asyncio.sleep(0.05)
        raise RuntimeError("disk on fire")

    async def long_job() -> str:
        """A long job."""
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] += 1
            raise
        return "done"

    def slow() -> str:
        """A sync job."""
        time.sleep(0.3)
        state["sync"] += 1
        return "done"

    server.enqueue(
        _asks(_call("a", "long_job", {}), _call("b", "broken", {}), _call("c", "slow", {}))
    )

    async def main() -> None:
        with pytest.raises(ToolExecutionError, match="disk on fire"):
            await gpt.arun(
                "gpt-4o-mini", "go", tools=[broken, long_job, slow], raise_tool_errors=True
            )

    asyncio.run(main())
    assert state == {"cancelled": 1, "sync": 1}
    (record,) = SpendLog(path).recent(1)
    (row,) = SpendLog(path).with_tool_calls([record])
    assert [(c.name, c.outcome) for c in row.tool_calls] == [
        ("long_job", "cancelled"),
        ("broken", "raised"),
        ("slow", "ok"),
    ]
