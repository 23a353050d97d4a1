"""The spend log's schema 7: the token pieces priced apart (cache writes, audio, images) and what
a budget was charged for each call, written with its row for live calls, streams, tool-run turns
and remote batch results; a v6 file migrates, reads and prunes; ``logs`` and ``spend`` (run as
subprocesses) tell the known cost from what was charged."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT, BudgetExceededError, SpendLog
from moodlemate.ai._spend_log import COLUMNS, MIGRATIONS, SCHEMA_VERSION
from moodlemate.ai.batch import parse_items
from moodlemate.ai.batch.remote import run_remote_batch
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

LONG = "Say it aloud. " * 150  # a prompt 1000 reported prompt tokens can plausibly come from
AUDIO = {
    "prompt_tokens": 1000,
    "audio_prompt_tokens": 600,
    "completion_tokens": 500,
    "audio_completion_tokens": 400,
}
PIECES = ("cache_write_tokens", "audio_prompt_tokens", "image_prompt_tokens")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "moodlemate.ai.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def _rows(path: Path) -> list[dict[str, Any]]:
    """The calls table as SQLite holds it (no reading code of ours in between)."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        conn.close()


def _budgeted(server: LoopbackServer, path: Path, **options: Any) -> GPT:
    options = {"budget": "0.05", **options}
    return GPT(
        "openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path, **options
    )


# -- live calls and streams ------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_unpriced_audio_is_logged_as_unknown_cost_and_what_the_budget_charged(
    server: LoopbackServer, tmp_path: Path, stream: bool
) -> None:
    """gpt-audio-mini lists no audio price: the cost is unknown (NULL), and the row's charged
    is exactly what the ledger counted for it (its reservation or its priced pieces)."""
    path = tmp_path / "spend.db"
    gpt = _budgeted(server, path)
    server.responder = lambda request: Reply(text="ok", **AUDIO)
    charged = []
    for _ in range(3):
        before = gpt.ledger.charged
        if stream:
            with gpt.stream("gpt-audio-mini", LONG, "x", max_tokens=1000) as deltas:
                assert "".join(deltas) == "ok"
            assert deltas.completion is not None
            assert deltas.completion.cost is None
        else:
            assert gpt.complete("gpt-audio-mini", LONG, "x", max_tokens=1000).cost is None
        charged.append(gpt.ledger.charged - before)
    rows = _rows(path)
    assert [row["cost"] for row in rows] == [None] * 3
    assert [Decimal(row["charged"]) for row in rows] == charged
    assert all(c > Decimal("0.0024") for c in charged)  # at least 1000 output tokens at $2.40
    assert sum(charged) == gpt.ledger.charged
    assert gpt.ledger.cost == 0
    for row in rows:
        assert (row["prompt_tokens"], row["audio_prompt_tokens"]) == (1000, 600)
        assert (row["completion_tokens"], row["audio_completion_tokens"]) == (500, 400)
        assert (row["cache_write_tokens"], row["image_prompt_tokens"]) == (0, 0)
    read = SpendLog(path).recent(3)
    assert [r.charged for r in reversed(read)] == charged
    assert TEST_KEY not in path.read_bytes().decode("latin-1")


def test_a_priced_call_is_charged_its_cost_and_a_failed_one_nothing(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.db"
    gpt = _budgeted(server, path)
    server.enqueue(
        Reply(text="ok", prompt_tokens=1000, completion_tokens=10, cache_write_tokens=300),
        Fault.status(400, message="bad request"),
    )
    completion = gpt.complete("gpt-4o-mini", LONG, "x")
    with pytest.raises(Exception, match="bad request"):
        gpt.complete("gpt-4o-mini", LONG, "y")
    priced, failed = _rows(path)
    assert completion.cost is not None
    assert priced["cost"] == priced["charged"] == str(completion.cost)
    assert priced["cache_write_tokens"] == 300
    assert failed["cost"] is None
    assert failed["charged"] == "0"  # its reservation was freed: nothing counted
    assert gpt.ledger.charged == 0


def test_without_a_budget_an_unknown_cost_is_charged_its_priced_pieces(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """No reservation was held, so what counts is what the priced pieces came to, as the ledger
    has it; image tokens gpt-4o prices apart from nothing leave the cost unknown."""
    path = tmp_path / "spend.db"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    server.enqueue(
        Reply(text="ok", prompt_tokens=1000, image_prompt_tokens=765, completion_tokens=10)
    )
    completion = gpt.complete("gpt-4o", LONG, "x")
    assert completion.cost is None
    assert completion.cost_breakdown is not None
    (row,) = _rows(path)
    assert row["cost"] is None
    assert row["image_prompt_tokens"] == 765
    assert Decimal(row["charged"]) == completion.cost_breakdown.known == gpt.ledger.charged > 0


def test_a_local_model_without_any_price_is_charged_nothing(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.db"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    server.enqueue(Reply(text="ok", prompt_tokens=10, completion_tokens=3))
    assert gpt.complete("my-local-model", "", "x").cost is None
    (row,) = _rows(path)
    assert (row["cost"], row["charged"]) == (None, "0")


# -- tool runs and remote batches ------------------------------------------------------------


def weather(city: str) -> str:
    """Current temperature in a city."""
    return "4C"


def test_each_tool_run_turn_is_logged_with_what_it_charged(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.db"
    gpt = _budgeted(server, path, budget="5")  # gpt-4o's worst case is large
    call = {"id": "a", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    server.enqueue(
        Reply(tool_calls=[call], finish_reason="tool_calls", image_prompt_tokens=5),
        Reply(text="4C in Oslo", prompt_tokens=40, completion_tokens=5),
    )
    run = gpt.run("gpt-4o", "Oslo?", tools=[weather])
    first, second = _rows(path)
    assert (first["run_id"], first["turn"], second["turn"]) == (run.id, 1, 2)
    assert first["cost"] is None  # image tokens without a price
    assert Decimal(first["charged"]) == gpt.ledger.charged > 0
    assert second["cost"] is not None
    assert second["charged"] == second["cost"]


def test_remote_batch_results_are_logged_with_what_they_charged(tmp_path: Path) -> None:
    key = "sk-test-remote-0123456789abcdef"
    with LoopbackServer(api_key=key) as srv:
        srv.batches.speed = 100_000.0
        srv.responder = lambda body: Reply(
            text="ok", prompt_tokens=50, image_prompt_tokens=20, completion_tokens=10
        )
        path = tmp_path / "spend.db"
        gpt = GPT("openai", endpoint=srv.url, api_key=key, budget="1", log=path, pacing=False)
        lines = [json.dumps({"id": f"q{i}", "user": f"question {i}"}) for i in range(3)]
        items = parse_items(lines, default_model="gpt-4o-mini")
        summary = run_remote_batch(gpt, items, tmp_path / "out.jsonl", poll_interval=0.01)
    assert summary.unpriced == 3
    rows = _rows(path)
    assert len(rows) == 3
    assert all(row["batch_id"] for row in rows)
    assert [row["cost"] for row in rows] == [None] * 3
    assert [row["image_prompt_tokens"] for row in rows] == [20] * 3
    assert sum(Decimal(row["charged"]) for row in rows) == gpt.ledger.charged > 0


# -- the command line ------------------------------------------------------------------------


def test_logs_and_spend_tell_the_known_cost_from_what_was_charged(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.db"
    gpt = _budgeted(server, path)
    server.enqueue(
        Reply(text="ok", prompt_tokens=1000, completion_tokens=10),
        Reply(text="ok", **AUDIO),
    )
    priced = gpt.complete("gpt-4o-mini", LONG, "x").cost
    assert priced is not None
    gpt.complete("gpt-audio-mini", LONG, "x", max_tokens=1000)
    charged = gpt.ledger.charged
    assert charged > 0

    newest, oldest = json.loads(_cli("logs", "--log", str(path), "--json").stdout)
    assert newest["cost"] is None
    assert newest["charged"] == str(charged)
    assert (newest["audio_prompt_tokens"], newest["audio_completion_tokens"]) == (600, 400)
    assert newest["cache_write_tokens"] == newest["image_prompt_tokens"] == 0
    assert oldest["cost"] == oldest["charged"] == str(priced)

    table = _cli("logs", "--log", str(path)).stdout
    assert f"~${charged:.6f}" in table.splitlines()[1]
    assert f"${priced:.6f}" in table.splitlines()[2]
    assert f"known cost ${priced:.6f}; charged ${priced + charged:.6f}" in table
    assert f"~${charged:.6f} for 1 replies of unknown cost" in table

    total = json.loads(_cli("spend", "--log", str(path), "--json").stdout)["total"]
    assert total["cost"] == str(priced)
    assert Decimal(total["charged"]) == priced + charged
    assert Decimal(total["charged_unpriced"]) == charged
    assert "CHARGED" in _cli("spend", "--log", str(path)).stdout
    assert TEST_KEY not in path.read_bytes().decode("latin-1")


# -- a version 6 file ------------------------------------------------------------------------

V6_COLUMNS = COLUMNS[: COLUMNS.index("turn") + 1]


def _v6(path: Path, rows: list[dict[str, Any]]) -> None:
    """A log as the previous version made it: its migrations, its columns."""
    conn = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:6]:
        for statement in step.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 6")
    for row in rows:
        values = {"provider": "openai", "requested_model": "gpt-4o-mini", **row}
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        conn.execute(f"INSERT INTO calls ({names}) VALUES ({marks})", tuple(values.values()))  # noqa: S608
    conn.close()


def _old(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_version_6_log_migrates_reads_and_prunes(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == 7
    assert set(V6_COLUMNS) < set(COLUMNS)
    path = tmp_path / "old.db"
    long_ago, recent = _old(200), _old(1)
    _v6(
        path,
        [
            {"time": long_ago, "prompt_tokens": 10, "cost": "0.001", "outcome": "ok"},
            {"time": long_ago, "prompt_tokens": 20, "cost": "0.002", "outcome": "ok"},
            {"time": long_ago, "prompt_tokens": 5, "cost": None, "outcome": "ok"},
            {"time": long_ago, "cost": None, "outcome": "APITimeoutError"},
            {"time": recent, "prompt_tokens": 7, "cost": "0.0005", "outcome": "ok"},
            {"time": recent, "prompt_tokens": 9, "cost": None, "outcome": "ok", "run_id": "r"},
        ],
    )
    listed = json.loads(_cli("logs", "--log", str(path), "--json").stdout)
    assert len(listed) == 6
    assert [r["charged"] for r in reversed(listed)] == [
        "0.001",  # a known cost is what counted
        "0.002",
        None,  # unknown cost: what counted was never recorded
        "0",  # a failed call counted nothing
        "0.0005",
        None,
    ]
    assert all(r["audio_prompt_tokens"] == 0 for r in listed)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    conn.close()

    # Opening the log may already have folded the old rows (at most once a day, by itself).
    assert "daily rows" in _cli("logs", "prune", "--log", str(path)).stdout
    rows = _rows(path)
    folded = [r for r in rows if r["folded"]]
    assert len(rows) == 5
    assert sorted(r["folded"] for r in folded) == [1, 1, 2]
    by_outcome = {(r["outcome"], r["cost"] is None): r for r in folded}
    assert by_outcome["ok", False]["charged"] == "0.003"
    assert by_outcome["ok", False]["prompt_tokens"] == 30
    assert by_outcome["ok", True]["charged"] is None
    assert by_outcome["APITimeoutError", True]["charged"] == "0"
    total = json.loads(_cli("spend", "--log", str(path), "--json").stdout)["total"]
    assert total["calls"] == 6
    assert total["cost"] == "0.0035"
    assert total["charged"] == "0.0035"  # rows without a recorded charge add none


def test_folding_keeps_new_charges_apart_from_unrecorded_ones(tmp_path: Path) -> None:
    """An unpriced row of version 6 (charge unknown) and one of version 7 (charge recorded) of
    the same day and model fold into two rows: a sum is never part known, part missing."""
    path = tmp_path / "old.db"
    day = _old(200)
    _v6(path, [{"time": day, "cost": None, "outcome": "ok", "prompt_tokens": 3}])
    log = SpendLog(path, retention_days=None)
    log.recent(1)  # migrates
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO calls (time, provider, requested_model, outcome, audio_prompt_tokens, "
        "charged) VALUES (?, 'openai', 'gpt-4o-mini', 'ok', 11, '0.25')",
        (day,),
    )
    conn.close()
    assert log.prune(30).rows == 2
    folded = {r["charged"]: r for r in _rows(path)}
    assert set(folded) == {None, "0.25"}
    assert folded["0.25"]["audio_prompt_tokens"] == 11
    log.close()


def test_a_budget_refuses_once_the_logged_charges_reach_it(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """What the log says was charged is what the budget counted: their sum never crosses it."""
    path = tmp_path / "spend.db"
    gpt = _budgeted(server, path, budget_scope="audio")
    server.responder = lambda request: Reply(text="ok", **AUDIO)

    def spend() -> None:
        for _ in range(40):
            gpt.complete("gpt-audio-mini", LONG, "x", max_tokens=1000)

    with pytest.raises(BudgetExceededError):
        spend()
    rows = _rows(path)
    assert rows
    logged = sum(Decimal(row["charged"]) for row in rows)
    assert logged == gpt.ledger.charged
    assert gpt.shared_budget is not None
    assert gpt.shared_budget.spent == logged <= Decimal("0.05")


def test_a_charged_figure_that_is_no_money_reads_as_unknown_or_rounded(tmp_path: Path) -> None:
    """The file is data, not trusted code: a damaged or hand-edited charged column reads as
    unknown (not a number) or as its rounded amount, and never breaks ``logs`` or ``spend``."""
    path = tmp_path / "spend.db"
    log = SpendLog(path, retention_days=None)
    log.recent(1)  # creates the file at schema 7
    log.close()
    conn = sqlite3.connect(path, isolation_level=None)
    for charged in ("not money", "1e-999999999", "NaN", "0.25"):
        conn.execute(
            "INSERT INTO calls (time, provider, requested_model, outcome, charged) "
            "VALUES (?, 'openai', 'gpt-4o-mini', 'ok', ?)",
            (_old(1), charged),
        )
    conn.close()
    listed = json.loads(_cli("logs", "--log", str(path), "--json").stdout)
    assert [r["charged"] for r in reversed(listed)] == [None, "0", None, "0.25"]
    assert "~$0.250000" in _cli("logs", "--log", str(path)).stdout
    total = json.loads(_cli("spend", "--log", str(path), "--json").stdout)["total"]
    assert (total["cost"], total["charged"], total["charged_unpriced"]) == (None, "0.25", "0.25")
