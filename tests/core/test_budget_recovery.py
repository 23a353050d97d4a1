"""A shared budget keeps its bound when its store or its workers fail mid-call.

Real worker processes share one budget through a real redis-server or the spend log's
SQLite file, against the loopback server; every reply costs the same, so what the server
served is what was spent. Redis restarting empty with calls in flight, a worker SIGKILLed
mid-call, a settle refused by a write-locked file: none of them lets the scope spend more
than its budget (plus, for a Redis restart, the documented margin)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT, RetryPolicy
from moodlemate.ai._budget import DEFAULT_OUTPUT_ESTIMATE
from moodlemate.ai._spend_log import SpendLog
from moodlemate.testing import LoopbackServer, Reply
from support import TEST_KEY

INPUT, OUTPUT = Decimal("0.15"), Decimal("0.60")  # gpt-4o-mini, USD per million tokens
REPLY_TOKENS = 4_000  # within the default estimate of 4,096: each call fits its reservation

_WORKER = """
import json, sys, threading, time
import moodlemate.ai._shared_budget as shared
from moodlemate.ai import GPT, BudgetExceededError, BudgetStoreError, RetryPolicy
endpoint, log, budget, scope, redis, seconds, ttl = sys.argv[1:8]
shared.RESERVATION_TTL = float(ttl)  # a killed worker's reservations lapse within the test
gpt = GPT("openai", endpoint=endpoint, api_key="sk-test-4f1c2e9b7a6d5c3e", log=log or None,
          budget=budget, budget_scope=scope, redis=redis or None, pacing=False,
          retry=RetryPolicy(attempts=1, deadline=30.0, attempt_timeout=10.0))
outcomes = {"ok": 0, "store": 0, "budget": 0}
gpt.complete("gpt-4o-mini", "", "hi")  # loads the HTTP stack before the clock starts
outcomes["ok"] += 1
until = time.monotonic() + float(seconds)
def work():
    while time.monotonic() < until:
        try:
            gpt.complete("gpt-4o-mini", "", "hi")
            outcomes["ok"] += 1
        except BudgetStoreError:
            outcomes["store"] += 1
            time.sleep(0.05)
        except BudgetExceededError:  # others' reservations may yet lapse or settle: go on
            outcomes["budget"] += 1
            time.sleep(0.1)
ts = [threading.Thread(target=work) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join(120)
print(json.dumps({"calls": gpt.ledger.calls, "cost": str(gpt.ledger.cost), **outcomes}))
"""


def _priced(server: LoopbackServer, delay: float) -> tuple[Decimal, Decimal]:
    """Every reply costs the same; (its cost, its reservation)."""
    prompt = GPT("openai", endpoint=server.url).count_chat_tokens("", "hi")
    server.responder = lambda body: Reply(
        text="ok", prompt_tokens=prompt, completion_tokens=REPLY_TOKENS, delay=delay
    )
    real = (prompt * INPUT + REPLY_TOKENS * OUTPUT) / 1_000_000
    worst = (prompt * INPUT + DEFAULT_OUTPUT_ESTIMATE * OUTPUT) / 1_000_000
    return real, worst


def _workers(
    server: LoopbackServer,
    count: int,
    budget: Decimal,
    *,
    log: Path | None = None,
    redis: str = "",
    seconds: float = 10.0,
    ttl: float = 3600.0,
) -> list[subprocess.Popen[str]]:
    argv = [server.url, str(log or ""), str(budget), "fleet", redis, str(seconds), str(ttl)]
    return [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def _reports(workers: list[subprocess.Popen[str]]) -> list[Any]:
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=180)
        if worker.returncode == -signal.SIGKILL:
            continue
        assert worker.returncode == 0, err
        reports.append(json.loads(out))
    return reports


def _served_at_least(server: LoopbackServer, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(server.chat_requests) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(server.chat_requests) >= count, "the workers never got going"


def test_redis_restarting_empty_with_calls_in_flight_does_not_reopen_the_budget(
    server: LoopbackServer,
) -> None:
    import redis_server

    real, worst = _priced(server, delay=0.3)
    budget = 60 * real
    own = redis_server.start()  # its own server: the test restarts it
    try:
        workers = _workers(server, 4, budget, redis=own.url, seconds=15.0)
        _served_at_least(server, 36)  # well into the budget, 16 calls in flight
        own.restart(down=0.3)  # no persistence: it comes back empty
        reports = _reports(workers)
    finally:
        own.stop()
    spent = len(server.chat_requests) * real
    print(f"\n  Redis restarted empty mid-run: {spent / budget:.3f}x the budget spent")
    # Every live worker restores the total it saw and its calls in flight on its next call;
    # until the last has, the first may admit at most what the others had in flight (3 x 4).
    assert spent <= budget + 12 * worst, f"{spent / budget:.2f}x the budget"
    assert spent > budget - 16 * worst  # the budget was used, not refused wholesale
    assert sum(r["calls"] for r in reports) == len(server.chat_requests)
    assert sum(r["store"] for r in reports) >= 1  # the outage was met, and refused calls


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_a_worker_killed_mid_call_has_its_reservations_counted_as_spent(
    server: LoopbackServer, tmp_path: Path, redis_url: str, store: str
) -> None:
    real, _ = _priced(server, delay=0.5)
    budget = 30 * real
    where: dict[str, Any] = (
        {"log": tmp_path / "fleet.db"} if store == "sqlite" else {"redis": redis_url}
    )
    workers = _workers(server, 3, budget, seconds=12.0, ttl=2.0, **where)
    _served_at_least(server, 8)
    victim = workers[0]
    victim.send_signal(signal.SIGKILL)  # four calls in flight, reserved, never to be settled
    victim.wait(10)
    reports = _reports(workers)
    assert len(reports) == 2
    spent = len(server.chat_requests) * real  # the server served the victim's last calls too
    print(f"\n  a worker SIGKILLed mid-call ({store}): {spent / budget:.3f}x the budget spent")
    assert spent <= budget, f"{spent / budget:.3f}x the budget"
    # The survivors kept trying past the lapse: the victim's reservations stayed spent.
    assert all(r["budget"] > 0 for r in reports), reports


_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def _lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert locker.stdout is not None
    assert locker.stdout.readline().strip() == "locked"
    return locker


def test_a_settle_the_locked_file_refused_is_replayed_by_the_next_call(
    server: LoopbackServer, tmp_path: Path
) -> None:
    import threading

    real, _ = _priced(server, delay=0.8)
    path = tmp_path / "team.db"
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        log=path,
        budget=1,
        budget_scope="team",
        retry=RetryPolicy(attempts=1, deadline=30.0, attempt_timeout=10.0),
        pacing=False,
    )
    gpt.complete("gpt-4o-mini", "", "creates the file")
    call = threading.Thread(target=gpt.complete, args=("gpt-4o-mini", "", "settles late"))
    call.start()
    _served_at_least(server, 2)
    locker = _lock(path, 2.5)  # the call's settle waits its second, and gives up
    call.join(30)
    assert gpt.shared_budget is not None
    assert gpt.shared_budget.pending == 1
    locker.wait(30)
    time.sleep(1.0)  # past the pause after a failed settle
    gpt.complete("gpt-4o-mini", "", "replays it first")
    assert gpt.shared_budget.pending == 0
    store = SpendLog(path)
    assert store.spent_shared("team", "all") == gpt.ledger.cost == 3 * real
    assert store.recent(1)[0].outcome == "ok"


_EXITING = """
import json, sys, threading
from moodlemate.ai import GPT, RetryPolicy
endpoint, path = sys.argv[1:3]
gpt = GPT("openai", endpoint=endpoint, api_key="sk-test-4f1c2e9b7a6d5c3e", log=path, budget=1,
          budget_scope="team", pacing=False,
          retry=RetryPolicy(attempts=1, deadline=30.0, attempt_timeout=10.0))
gpt.complete("gpt-4o-mini", "", "creates the file")
print("ready", flush=True)
gpt.complete("gpt-4o-mini", "", "settles late")
print(json.dumps({"pending": gpt.shared_budget.pending, "cost": str(gpt.ledger.cost)}), flush=True)
sys.stdin.readline()  # exits when told: the lock is gone by then
"""


def test_a_settle_still_pending_at_exit_is_replayed_as_the_process_ends(
    server: LoopbackServer, tmp_path: Path
) -> None:
    _priced(server, delay=0.8)
    path = tmp_path / "team.db"
    worker = subprocess.Popen(
        [sys.executable, "-c", _EXITING, server.url, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert worker.stdin is not None
    assert worker.stdout.readline().strip() == "ready"
    _served_at_least(server, 2)
    locker = _lock(path, 2.0)
    report = json.loads(worker.stdout.readline())
    assert report["pending"] == 1
    locker.wait(30)
    worker.stdin.write("exit\n")
    worker.stdin.flush()
    worker.wait(30)
    assert worker.returncode == 0
    assert SpendLog(path).spent_shared("team", "all") == Decimal(report["cost"])
