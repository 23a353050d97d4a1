"""A budget shared through the spend log's SQLite file or a real redis-server: 4 real
processes of 8 threads spend at most the budget together, the log holds one row per call
sent, and the store failing (a broken file, Redis frozen mid-run) refuses calls with the typed
error within a bounded time instead of letting them through unaccounted or hanging."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT, BudgetExceededError, BudgetStoreError, Usage, ValidationError
from moodlemate.ai._budget import DEFAULT_OUTPUT_ESTIMATE
from moodlemate.ai._redis_budget import NANO, RedisBudgetStore
from moodlemate.ai._spend_log import SpendLog, totals
from moodlemate.ai.testing import LoopbackServer, Reply
from support import TEST_KEY

INPUT, OUTPUT = Decimal("0.15"), Decimal("0.60")  # gpt-4o-mini, USD per million tokens
REPLY_TOKENS = 4_000  # within the default estimate of 4,096: the bound is then exact

_WORKER = """
import json, sys, threading, time
from moodlemate.ai import GPT, BudgetExceededError, BudgetStoreError, RetryPolicy
endpoint, path, budget, scope, redis, rounds = sys.argv[1:7]
gpt = GPT("openai", endpoint=endpoint, api_key="sk-test-4f1c2e9b7a6d5c3e", log=path,
          budget=budget, budget_scope=scope or None, redis=redis or None, pacing=False,
          retry=RetryPolicy(attempts=1, deadline=30.0, attempt_timeout=10.0))
ends = []
def work():
    for _ in range(int(rounds)):  # bounded: the budget stops each thread long before
        try:
            gpt.complete("gpt-4o-mini", "", "hi")
        except BudgetStoreError:
            ends.append(["store", time.time()])
            return
        except BudgetExceededError:
            ends.append(["budget", time.time()])
            return
    ends.append(["rounds", time.time()])
ts = [threading.Thread(target=work) for _ in range(8)]
for t in ts: t.start()
for t in ts: t.join(90)
print(json.dumps({"calls": gpt.ledger.calls, "cost": str(gpt.ledger.cost),
                  "dropped": gpt.log.dropped, "ends": ends}))
"""


def _honest(server: LoopbackServer) -> tuple[Decimal, Decimal]:
    """Replies that cost what they were reserved for, at most; (real cost, worst case)."""
    prompt = GPT("openai", endpoint=server.url).count_chat_tokens("", "hi")

    def respond(body: dict[str, Any]) -> Reply:
        return Reply(text="ok", prompt_tokens=prompt, completion_tokens=REPLY_TOKENS, delay=0.01)

    server.responder = respond
    real = (prompt * INPUT + REPLY_TOKENS * OUTPUT) / 1_000_000
    worst = (prompt * INPUT + DEFAULT_OUTPUT_ESTIMATE * OUTPUT) / 1_000_000
    return real, worst


def _start_workers(
    server: LoopbackServer,
    path: Path,
    budget: Decimal,
    scope: str,
    redis: str = "",
    rounds: int = 40,
) -> list[subprocess.Popen[str]]:
    argv = [server.url, str(path), str(budget), scope, redis, str(rounds)]
    return [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]


def _reports(workers: list[subprocess.Popen[str]], timeout: float = 120) -> list[Any]:
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=timeout)
        assert worker.returncode == 0, err
        reports.append(json.loads(out))
    return reports


def _check_race(
    server: LoopbackServer, path: Path, budget: Decimal, worst: Decimal, reports: list[Any]
) -> Decimal:
    spent = sum((Decimal(r["cost"]) for r in reports), Decimal(0))
    calls = sum(r["calls"] for r in reports)
    assert spent <= budget  # every reply within its reservation: the bound is exact
    assert spent > budget - 32 * worst  # the budget was used, not refused wholesale
    assert calls == len(server.chat_requests)  # nothing was sent unrecorded
    assert [r["dropped"] for r in reports] == [0, 0, 0, 0]
    assert all(end == "budget" for r in reports for end, _ in r["ends"])
    records = SpendLog(path).calls()
    assert len(records) == calls  # exactly one row per call sent
    assert totals(records, "model")[1].cost == spent  # to the last decimal
    report = subprocess.run(
        [sys.executable, "-m", "moodlemate.ai.cli", "spend", "--log", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    total = json.loads(report.stdout)["total"]
    assert (total["calls"], Decimal(total["cost"])) == (calls, spent)  # as the command says
    return spent


def test_four_processes_of_eight_threads_spend_at_most_one_shared_budget(
    server: LoopbackServer, tmp_path: Path
) -> None:
    real, worst = _honest(server)
    budget = 40 * real
    path = tmp_path / "team.db"
    spent = _check_race(
        server, path, budget, worst, _reports(_start_workers(server, path, budget, "team-a"))
    )
    assert SpendLog(path).spent_shared("team-a", "all") == spent
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM budget_reservations").fetchone()[0] == 0


def test_four_processes_of_eight_threads_share_one_budget_in_redis(
    server: LoopbackServer, tmp_path: Path, redis_url: str
) -> None:
    import redis

    real, worst = _honest(server)
    budget = 40 * real
    path = tmp_path / "fleet.db"  # the spend log only records; the budget lives in Redis
    workers = _start_workers(server, path, budget, "fleet", redis=redis_url)
    spent = _check_race(server, path, budget, worst, _reports(workers))
    store = RedisBudgetStore(redis_url)
    held = store.spent_shared("fleet", "all")
    assert spent <= held < spent + 32 * NANO  # nano-dollars, each call's cost rounded up
    client = redis.Redis.from_url(redis_url)
    assert client.hlen("moodlemate:budget:{fleet|all}:held") == 0  # every reservation settled
    assert SpendLog(path).spent_shared("fleet", "all") == 0  # nothing of it went to the file


@pytest.mark.parametrize("outage", ["frozen", "stopped"])
def test_redis_failing_mid_run_stops_every_worker_with_the_typed_error_in_bounded_time(
    server: LoopbackServer, tmp_path: Path, outage: str
) -> None:
    import redis_server

    own = redis_server.start()  # its own server: freezing it must not touch other tests
    try:
        server.responder = lambda body: Reply(text="ok", delay=0.01)
        path = tmp_path / "outage.db"
        workers = _start_workers(
            server, path, Decimal(1000), "outage", redis=own.url, rounds=100_000
        )
        deadline = time.monotonic() + 60
        while len(server.chat_requests) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.chat_requests) >= 100, "the workers never got going"
        if outage == "frozen":
            own.pause()  # connections stay open and nothing answers: the timeouts must act
        else:
            own.stop()  # connections reset and new ones are refused
        frozen = time.time()
        reports = _reports(workers, timeout=30)  # nothing hangs
    finally:
        own.stop()
    ends = [end for report in reports for end in report["ends"]]
    assert len(ends) == 32
    assert {kind for kind, _ in ends} == {"store"}  # each thread: BudgetStoreError
    # A thread mid-call when Redis froze: its settle times out (1 s), then its next reserve
    # does (1 s); the bound is that, plus one call, plus the process's own slack.
    assert max(at for _, at in ends) - frozen < 5.0
    calls = sum(r["calls"] for r in reports)
    records = SpendLog(path).calls()  # the log stays readable
    # Every call sent has its row, or counts as dropped: a write that waited past the log's
    # busy_timeout (32 writers on a loaded machine can) is dropped by design, never lost unseen.
    dropped = sum(r["dropped"] for r in reports)
    assert len(records) + dropped == calls == len(server.chat_requests)


def test_a_window_counts_only_its_period_and_a_dead_processes_reservation_counts_as_spent(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "window.db"
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        log=path,
        budget="0.01",
        budget_scope="team-b",
        budget_window="day",
    )
    gpt.complete("gpt-4o-mini", "", "creates the file")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO budget_spend VALUES ('team-b', ?, '1000'), ('team-c', 'all', '1000')",
        (yesterday,),
    )
    # A process killed mid-call, an hour ago, holding a reservation it never settled:
    conn.execute(
        "INSERT INTO budget_reservations (scope, period, amount, expires) "
        "VALUES ('team-b', ?, '0.002', ?)",
        (gpt.shared_budget.period() if gpt.shared_budget else "", time.time() - 1),
    )
    conn.close()
    gpt.complete("gpt-4o-mini", "", "today is fresh")  # yesterday does not count
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    store = SpendLog(path)
    # The dead call may have cost its worst case: it counts as spent, for good.
    assert store.spent_shared("team-b", today) == gpt.ledger.cost + Decimal("0.002")
    held = sqlite3.connect(path).execute("SELECT expires FROM budget_reservations").fetchall()
    assert held == [(-1,)]
    assert store.spent_shared("team-b", "all") == 0
    other = GPT("openai", endpoint=server.url, api_key=TEST_KEY, log=path, budget="0.01")
    other.shared_budget = GPT(
        "openai", log=path, budget="0.01", budget_scope="team-c"
    ).shared_budget
    sent = len(server.chat_requests)
    with pytest.raises(BudgetExceededError, match="reached"):
        other.complete("gpt-4o-mini", "", "team-c spent it all")
    assert len(server.chat_requests) == sent


def test_a_broken_store_refuses_the_call_before_sending(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"garbage " * 1024)
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, log=path, budget=1, budget_scope="x")
    with pytest.raises(BudgetStoreError, match="cannot be used"):
        gpt.complete("gpt-4o-mini", "", "hi")
    assert server.chat_requests == []


def test_a_scope_needs_a_store_and_a_known_window() -> None:
    with pytest.raises(ValidationError, match="needs a store"):
        GPT(budget=1, budget_scope="team")
    with pytest.raises(ValidationError, match="budget_window"):
        GPT(log="x.db", budget=1, budget_scope="team", budget_window="week")
    with pytest.raises(ValidationError, match="needs a budget_scope"):
        GPT(budget_window="day")


def test_a_redis_password_never_shows_and_an_unreachable_redis_fails_closed_fast(
    server: LoopbackServer,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://worker:s3cret-Pa55word-77@127.0.0.1:{port}/0"
    gpt = GPT(
        "openai", endpoint=server.url, api_key=TEST_KEY, budget=1, budget_scope="x", redis=url
    )
    assert "s3cret" not in repr(gpt.shared_budget)
    began = time.monotonic()
    with pytest.raises(BudgetStoreError) as caught:
        gpt.complete("gpt-4o-mini", "", "hi")
    assert time.monotonic() - began < 2.5
    assert "s3cret-Pa55word-77" not in str(caught.value)
    assert "worker:***@127.0.0.1" in str(caught.value)
    assert server.chat_requests == []


def test_failing_open_lets_calls_go_on_under_the_local_budget(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        budget="0.0005",
        budget_scope="x",
        budget_fail_open=True,
        redis=f"redis://127.0.0.1:{port}/0",
        pacing=False,
    )
    with caplog.at_level("WARNING", logger="moodlemate.ai._shared_budget"):
        gpt.complete("gpt-4o-mini", "", "hi", max_tokens=100)
        gpt.complete("gpt-4o-mini", "", "hi", max_tokens=100)
    assert gpt.ledger.calls == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # once, not per call
    assert "budget_fail_open" in warnings[0]
    gpt.ledger.record("gpt-4o-mini", Usage(completion_tokens=10_000), Decimal("0.0005"))
    with pytest.raises(BudgetExceededError):  # the local budget still holds
        gpt.complete("gpt-4o-mini", "", "hi", max_tokens=100)
