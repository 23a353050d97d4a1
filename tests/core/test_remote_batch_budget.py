"""Remote batches under a budget: each part's worst case at batch prices is reserved before it
is sent (a part that cannot fit is refused unsent), its real cost is settled from the output
file once per batch, and the scope every process shares (the spend log's SQLite file, or a
real redis-server) sees it: across processes, reruns and SIGKILLs."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT
from moodlemate.ai.batch import parse_items
from moodlemate.ai.batch.remote import run_remote_batch
from moodlemate.ai.errors import BudgetExceededError
from moodlemate.ai.testing import LoopbackServer, Reply

KEY = "sk-test-remote-0123456789abcdef"
COMMAND = [sys.executable, "-m", "moodlemate.ai.cli"]
BATCH_IN, BATCH_OUT = Decimal("0.075"), Decimal("0.30")  # gpt-4o-mini batch, USD per 1M
SCOPE = "team"


@pytest.fixture
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer(api_key=KEY) as server:
        server.batches.speed = 100_000.0
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest) -> str | None:
    """None: the scope lives in the spend log's SQLite file; else this Redis URL."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("redis_url"))


def _gpt(server: LoopbackServer, log: Path, budget: Any, redis: str | None) -> GPT:
    return GPT(
        "openai",
        endpoint=server.url,
        api_key=KEY,
        budget=budget,
        budget_scope=SCOPE,
        log=log,
        redis=redis,
        pacing=False,
    )


def _items(n: int, max_tokens: int | None = None) -> list[Any]:
    lines = [
        json.dumps({"id": f"q{i}", "user": f"question {i}", "max_tokens": max_tokens})
        for i in range(n)
    ]
    return parse_items(lines, default_model="gpt-4o-mini")


def _output_file_cost(server: LoopbackServer) -> Decimal:
    """What the server's output files bill at batch prices, read from the files themselves."""
    total = Decimal(0)
    for stored in server.batches.files.values():
        if stored.purpose != "batch_output":
            continue
        for line in stored.content.splitlines():
            usage = json.loads(line)["response"]["body"]["usage"]
            total += (
                usage["prompt_tokens"] * BATCH_IN + usage["completion_tokens"] * BATCH_OUT
            ) / 1_000_000
    return total


def _held(log: Path, redis: str | None) -> Decimal:
    """What the scope's store holds in reservations right now."""
    if redis is None:
        with sqlite3.connect(log) as conn:
            rows = conn.execute(
                "SELECT amount FROM budget_reservations WHERE scope = ?", (SCOPE,)
            ).fetchall()
        return sum((Decimal(a) for (a,) in rows), Decimal(0))
    import redis as redis_py

    client = redis_py.Redis.from_url(redis)
    values = client.hvals(f"moodlemate:budget:{{{SCOPE}|all}}:held")
    client.close()
    return sum((int(v) for v in values), 0) * Decimal("0.000000001")


_OTHER_PROCESS = """
import json, sys
from moodlemate.ai import GPT, BudgetExceededError
endpoint, log, budget, redis = sys.argv[1:5]
gpt = GPT("openai", endpoint=endpoint, api_key="sk-test-remote-0123456789abcdef", log=log,
          budget=budget, budget_scope="team", redis=redis or None, pacing=False)
try:
    gpt.chat_completion("gpt-4o-mini", "", "hi", max_tokens=1000)
    outcome = "sent"
except BudgetExceededError as exc:
    outcome = str(exc)
print(json.dumps({"spent": str(gpt.shared_budget.spent), "outcome": outcome,
                  "cost": str(gpt.ledger.cost)}))
"""


def _other_process(server: LoopbackServer, log: Path, budget: Any, redis: str | None) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, server.url, str(log), str(budget), redis or ""],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_cent_refuses_a_2000_item_batch_before_anything_is_sent(
    srv: LoopbackServer, tmp_path: Path, store: str | None
) -> None:
    log = tmp_path / "spend.db"
    gpt = _gpt(srv, log, "0.01", store)
    out = tmp_path / "out.jsonl"
    with pytest.raises(BudgetExceededError, match=r"2000 requests.*nothing of it was submitted"):
        run_remote_batch(gpt, _items(2000), out, poll_interval=0.01)
    assert srv.batches.created == []  # the server saw no batch, and no upload either
    assert srv.batches.files == {}
    assert not Path(str(out) + ".remote.json").exists()
    assert _held(log, store) == 0
    assert gpt.shared_budget is not None
    assert gpt.shared_budget.spent == 0


def test_the_command_line_refuses_too_and_leaves_nothing_behind(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"id": i, "user": f"question {i}"}) + "\n" for i in range(2000))
    )
    env = dict(os.environ, MOODLEMATE_ENDPOINT=srv.url, MOODLEMATE_API_KEY=KEY)
    args = ["--remote", "--budget", "0.01", "--budget-scope", SCOPE, "--poll-interval", "0.01"]
    done = subprocess.run(
        [*COMMAND, "batch", "in.jsonl", "-o", "out.jsonl", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "BudgetExceededError" in done.stderr
    assert "nothing of it was submitted" in done.stderr
    assert srv.batches.created == []
    assert not (tmp_path / "out.jsonl").exists()
    assert KEY not in done.stderr


def test_a_fitting_batch_is_reserved_then_settled_to_the_exact_cost_of_its_output(
    srv: LoopbackServer, tmp_path: Path, store: str | None
) -> None:
    log = tmp_path / "spend.db"
    out = tmp_path / "out.jsonl"
    items = _items(20, max_tokens=50)
    gpt = _gpt(srv, log, "1", store)
    srv.batches.speed = 0.0  # the batch waits until the test moves the clock
    waiting = run_remote_batch(gpt, items, out, poll_interval=0.01, max_wait=0)
    assert waiting.timed_out
    assert len(srv.batches.created) == 1
    state = json.loads(Path(str(out) + ".remote.json").read_text())["parts"][0]
    worst = Decimal(state["reserved"])
    assert worst > 0
    assert _held(log, store) == worst  # held in the store while the batch runs
    # Another process on the same scope sees the hold: a budget just above it leaves no room
    # for a live call's worst case (1,000 output tokens at $0.60/M: $0.0006).
    other = _other_process(srv, log, worst + Decimal("0.0001"), store)
    assert Decimal(other["spent"]) == 0
    assert "reserved" in other["outcome"], other
    assert not srv.chat_requests

    srv.batches.advance(10_000)
    done = run_remote_batch(_gpt(srv, log, "1", store), items, out, poll_interval=0.01)
    assert (done.succeeded, done.submitted) == (20, 0)
    exact = _output_file_cost(srv)
    assert exact > 0
    assert done.cost == exact
    assert worst >= exact  # the reservation was a true upper bound
    assert _held(log, store) == 0
    after = _other_process(srv, log, "1", store)
    assert Decimal(after["spent"]) == exact + Decimal(after["cost"])  # the batch, its own call
    assert after["outcome"] == "sent"
    rows = sqlite3.connect(log).execute("SELECT COUNT(*) FROM calls WHERE batch_id IS NOT NULL")
    assert rows.fetchone()[0] == 20
    state = json.loads(Path(str(out) + ".remote.json").read_text())["parts"][0]
    assert state["settled"]
    assert Decimal(state["cost"]) == exact


def _cli_env(server: LoopbackServer, redis: str | None) -> dict[str, str]:
    env = dict(os.environ, MOODLEMATE_ENDPOINT=server.url, MOODLEMATE_API_KEY=KEY)
    if redis is not None:
        env["MOODLEMATE_REDIS_URL"] = redis
    return env


def _spent(log: Path, redis: str | None) -> Decimal:
    gpt = GPT("openai", api_key=KEY, log=log, budget=1, budget_scope=SCOPE, redis=redis)
    assert gpt.shared_budget is not None
    return gpt.shared_budget.spent


def test_a_rerun_after_sigkill_charges_the_scope_exactly_once(
    srv: LoopbackServer, tmp_path: Path, store: str | None
) -> None:
    (tmp_path / "in.jsonl").write_text(
        "".join(
            json.dumps({"id": i, "user": f"question {i}", "max_tokens": 40}) + "\n"
            for i in range(300)
        )
    )
    log = tmp_path / "xdg-data" / "moodlemate-ai" / "logs.db"  # the command's default log
    state_file = tmp_path / "out.jsonl.remote.json"
    env = _cli_env(srv, store)
    args = ["--remote", "--budget", "2", "--budget-scope", SCOPE, "--poll-interval", "0.02"]
    args += ["--max-requests-per-file", "100"]
    command = [*COMMAND, "batch", "in.jsonl", "-o", "out.jsonl", *args]
    srv.batches.speed = 0.0
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # submitted: all three parts have their batch
            if len(srv.batches.created) == 3 and state_file.exists():
                parts = json.loads(state_file.read_text())["parts"]
                if all(p["batch_id"] for p in parts):
                    break
            time.sleep(0.02)
        else:
            pytest.fail("the batches were not submitted in time")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert _held(log, store) > 0
    assert _spent(log, store) == 0

    srv.batches.advance(10_000)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    exact = _output_file_cost(srv)
    assert _spent(log, store) == exact
    assert _held(log, store) == 0

    # Killed again after the scope was charged but before the state said so: the rerun
    # collects every part again and charges (and logs) nothing twice.
    state = json.loads(state_file.read_text())
    for part in state["parts"]:
        part.update(collected=False, settled=False, downloaded=[], cost=None)
    state_file.write_text(json.dumps(state))
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert _spent(log, store) == exact
    assert len(srv.batches.created) == 3
    with sqlite3.connect(log) as conn:
        logged = conn.execute(
            "SELECT batch_id, COUNT(*) FROM calls WHERE batch_id IS NOT NULL GROUP BY batch_id"
        ).fetchall()
    assert sorted(n for _, n in logged) == [100, 100, 100]
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert Counter(r["id"] for r in records) == Counter(range(300))
    assert sum(Decimal(r["cost"]) for r in records) == exact


def test_a_store_down_at_settling_time_is_settled_by_the_next_run(
    srv: LoopbackServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import redis_server

    own = redis_server.start()  # its own server: freezing it must not touch other tests
    try:
        log, out = tmp_path / "spend.db", tmp_path / "out.jsonl"
        items = _items(10, max_tokens=30)
        srv.batches.speed = 0.0
        run_remote_batch(_gpt(srv, log, "1", own.url), items, out, poll_interval=0.01, max_wait=0)
        assert _held(log, own.url) > 0
        srv.batches.advance(10_000)
        own.pause()  # frozen while the results are collected
        with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
            done = run_remote_batch(_gpt(srv, log, "1", own.url), items, out, poll_interval=0.01)
        assert done.succeeded == 10
        assert "the next run settles it" in caplog.text
        part = json.loads(Path(str(out) + ".remote.json").read_text())["parts"][0]
        assert part["collected"]
        assert not part["settled"]
        exact = _output_file_cost(srv)
        assert Decimal(part["cost"]) == exact
        own.resume()
        again = run_remote_batch(_gpt(srv, log, "1", own.url), items, out, poll_interval=0.01)
        assert (again.skipped, again.submitted) == (10, 0)
        assert _spent(log, own.url) == exact
        assert _held(log, own.url) == 0
        assert json.loads(Path(str(out) + ".remote.json").read_text())["parts"][0]["settled"]
        run_remote_batch(_gpt(srv, log, "1", own.url), items, out, poll_interval=0.01)
        assert _spent(log, own.url) == exact  # and once only
    finally:
        own.stop()


def test_budget_options_that_cannot_work_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": 1, "user": "hi"}\n')
    base = [*COMMAND, "batch", "in.jsonl", "-o", "out.jsonl", "--remote"]
    for extra, message in (
        (["--budget", "ten"], "budget must be a number of US dollars"),
        (["--budget-window", "day"], "--budget-window needs a --budget-scope"),
        (["--budget-scope", SCOPE, "--no-log"], "--budget-scope needs a store"),
    ):
        done = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("scoped", [False, True])
def test_answers_that_cannot_be_priced_still_count_against_the_budget(
    srv: LoopbackServer, tmp_path: Path, scoped: bool
) -> None:
    """Each reply reports image tokens gpt-4o-mini lists no price for, so its cost is unknown:
    as a live call's, it counts at its worst case (its share of the part's hold), never at 0,
    in the instance's ledger and in the scope's store."""
    srv.responder = lambda body: Reply(
        text="ok", prompt_tokens=50, image_prompt_tokens=20, completion_tokens=10
    )
    log = tmp_path / "spend.db"
    if scoped:
        gpt = _gpt(srv, log, "1", None)
    else:
        gpt = GPT("openai", endpoint=srv.url, api_key=KEY, budget="1", log=log, pacing=False)
    summary = run_remote_batch(
        gpt, _items(3, max_tokens=20), tmp_path / "out.jsonl", poll_interval=0.01
    )
    assert summary.succeeded == 3
    assert summary.unpriced == 3
    assert gpt.ledger.cost == 0
    assert gpt.ledger.charged > 0
    if scoped:
        assert gpt.shared_budget is not None
        assert gpt.shared_budget.spent == gpt.ledger.charged
