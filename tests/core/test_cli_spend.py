"""``moodlemate-ai logs`` and ``spend``, and the CLI's default spend log, run as real
subprocesses against a loopback server (the log lands in the test's own XDG_DATA_HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from moodlemate.ai.testing import LoopbackServer, Reply
from support import TEST_KEY

COMMAND = [sys.executable, "-m", "moodlemate.ai.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, env=dict(os.environ), timeout=60
    )


@pytest.fixture
def logged(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three chats (two priced, one on an unpriced model) in the CLI's default log."""
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", server.url)
    monkeypatch.setenv("MOODLEMATE_API_KEY", TEST_KEY)
    server.responder = lambda body: Reply(
        model=body["model"], prompt_tokens=250, completion_tokens=333
    )
    for model, prompt in (("gpt-4o-mini", "one"), ("gpt-4o", "two"), ("no-price", "three")):
        out = run_cli("chat", "--model", model, prompt)
        assert out.returncode == 0, out.stderr
    return Path(os.environ["XDG_DATA_HOME"]) / "moodlemate-ai" / "logs.db"


def test_the_cli_logs_each_chat_with_its_text_unless_told_not_to(logged: Path) -> None:
    assert logged.is_file()
    out = run_cli("chat", "--no-log", "--model", "gpt-4o-mini", "unlogged")
    assert out.returncode == 0, out.stderr
    out = run_cli("logs", "--json")
    rows = json.loads(out.stdout)
    assert [r["requested_model"] for r in rows] == ["no-price", "gpt-4o", "gpt-4o-mini"]
    assert json.loads(rows[0]["prompt"])[-1]["content"] == "three"
    assert rows[0]["reply"] == "Echo: three"
    assert rows[0]["cost"] is None
    assert Decimal(rows[2]["cost"]) == (250 * Decimal("0.15") + 333 * Decimal("0.6")) / 10**6
    assert TEST_KEY not in logged.read_bytes().decode("latin-1")
    table = run_cli("logs", "-n", "1").stdout.splitlines()
    assert table[0].split()[:3] == ["TIME", "PROVIDER", "MODEL"]
    assert len(table) == 2
    assert "no-price" in table[1]
    assert "unknown" in table[1]


def test_spend_totals_are_exact_unknown_where_unpriced_and_filtered_by_since(logged: Path) -> None:
    out = run_cli("spend", "--by", "model", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    groups = {g["key"]: g for g in report["groups"]}
    mini = (250 * Decimal("0.15") + 333 * Decimal("0.6")) / 10**6
    full = (250 * Decimal("2.5") + 333 * Decimal("10")) / 10**6
    assert Decimal(groups["gpt-4o-mini"]["cost"]) == mini
    assert groups["no-price"]["cost"] is None
    assert Decimal(report["total"]["cost"]) == mini + full
    assert (report["total"]["calls"], report["total"]["unpriced_calls"]) == (3, 1)
    text = run_cli("spend", "--by", "provider").stdout
    assert f"${format(mini + full, 'f')}" in text  # every digit, not rounded
    day = json.loads(run_cli("spend", "--json").stdout)
    assert [g["calls"] for g in day["groups"]] == [3]
    later = json.loads(run_cli("spend", "--since", "2999-01-01", "--json").stdout)
    assert later["total"]["calls"] == 0
    assert later["groups"] == []
    recent = json.loads(run_cli("spend", "--since", "1h", "--json").stdout)
    assert recent["total"]["calls"] == 3
    bad = run_cli("spend", "--since", "last tuesday")
    assert bad.returncode == 2
    assert "not a time" in bad.stderr


def test_no_log_yet_is_said_not_an_error(tmp_path: Path) -> None:
    out = run_cli("logs", "--log", str(tmp_path / "none.db"), "--json")
    assert (out.returncode, json.loads(out.stdout)) == (0, [])
    assert "no spend log" in out.stderr
    out = run_cli("spend", "--log", str(tmp_path / "none.db"))
    assert out.returncode == 0
    assert "total" in out.stdout


def _weather(city: str) -> str:
    """Current temperature in a city."""
    return {"Oslo": "4C"}.get(city, "19C")


def test_logs_show_the_run_and_turn_of_a_tool_runs_calls(
    server: LoopbackServer, tmp_path: Path
) -> None:
    from moodlemate.ai import GPT

    path = tmp_path / "runs.db"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, log=path)
    gpt.complete("gpt-4o-mini", "", "a call of its own")
    call = {"type": "function", "function": {"name": "_weather", "arguments": '{"city": "Oslo"}'}}
    server.enqueue(
        Reply(tool_calls=[{"id": "c1", **call}], finish_reason="tool_calls"),
        Reply(text="Cold."),
    )
    run = gpt.run("gpt-4o-mini", "Oslo?", tools=[_weather])
    rows = json.loads(run_cli("logs", "--log", str(path), "--json").stdout)
    assert [(r["run_id"], r["turn"]) for r in rows] == [(run.id, 2), (run.id, 1), (None, None)]
    table = run_cli("logs", "--log", str(path)).stdout.splitlines()
    assert "RUN/TURN" in table[0].split()
    assert f"{run.id}/2" in table[1]
    assert f"{run.id}/1" in table[2]
    assert run.id not in table[3]
    only = json.loads(run_cli("logs", "--log", str(path), "--run", run.id, "--json").stdout)
    assert [r["turn"] for r in only] == [1, 2]
    assert sum(Decimal(r["cost"]) for r in only) == run.cost
    assert (
        json.loads(run_cli("logs", "--log", str(path), "--run", "run_none", "--json").stdout) == []
    )
