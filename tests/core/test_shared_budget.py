"""A budget shared through the spend log's SQLite file: 4 real processes of 8 threads spend
at most the budget together, the log holds one row per call sent, and the store failing
refuses calls instead of letting them through unaccounted."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT, BudgetExceededError, ValidationError
from moodlemate.ai._budget import DEFAULT_OUTPUT_ESTIMATE
from moodlemate.ai._spend_log import SpendLog, totals
from moodlemate.ai.testing import LoopbackServer, Reply
from support import TEST_KEY

INPUT, OUTPUT = Decimal("0.15"), Decimal("0.60")  # gpt-4o-mini, USD per million tokens
REPLY_TOKENS = 4_000  # within the default estimate of 4,096: the bound is then exact

_WORKER = """
import json, sys, threading
from moodlemate.ai import GPT, BudgetExceededError, RetryPolicy
endpoint, path, budget, scope = sys.argv[1:5]
gpt = GPT("openai", endpoint=endpoint, api_key="sk-test-4f1c2e9b7a6d5c3e", log=path,
          budget=budget, budget_scope=scope or None,
          retry=RetryPolicy(attempts=1, deadline=30.0, attempt_timeout=10.0))
def work():
    for _ in range(40):  # bounded: the budget stops each thread long before
        try:
            gpt.complete("gpt-4o-mini", "", "hi")
        except BudgetExceededError:
            return
ts = [threading.Thread(target=work) for _ in range(8)]
for t in ts: t.start()
for t in ts: t.join(90)
print(json.dumps({"calls": gpt.ledger.calls, "cost": str(gpt.ledger.cost),
                  "dropped": gpt.log.dropped}))
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


def _run_workers(server: LoopbackServer, path: Path, budget: Decimal, scope: str) -> list[Any]:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, server.url, str(path), str(budget), scope],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        reports.append(json.loads(out))
    return reports


def test_four_processes_of_eight_threads_spend_at_most_one_shared_budget(
    server: LoopbackServer, tmp_path: Path
) -> None:
    real, worst = _honest(server)
    budget = 40 * real
    path = tmp_path / "team.db"
    reports = _run_workers(server, path, budget, "team-a")
    spent = sum((Decimal(r["cost"]) for r in reports), Decimal(0))
    calls = sum(r["calls"] for r in reports)
    assert spent <= budget  # every reply within its reservation: the bound is exact
    assert spent > budget - 32 * worst  # the budget was used, not refused wholesale
    assert calls == len(server.chat_requests)  # nothing was sent unrecorded
    assert [r["dropped"] for r in reports] == [0, 0, 0, 0]
    store = SpendLog(path)
    records = store.calls()
    assert len(records) == calls  # exactly one row per call sent
    assert totals(records, "model")[1].cost == spent  # to the last decimal
    assert store.spent_shared("team-a", "all") == spent
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM budget_reservations").fetchone()[0] == 0


def test_a_window_counts_only_its_period_and_stale_reservations_expire(
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
    # A process that died holding a big reservation, an hour ago:
    conn.execute(
        "INSERT INTO budget_reservations (scope, period, amount, expires) "
        "VALUES ('team-b', ?, '1000', ?)",
        (gpt.shared_budget.period() if gpt.shared_budget else "", time.time() - 1),
    )
    conn.close()
    gpt.complete("gpt-4o-mini", "", "today is fresh")  # neither yesterday nor the dead count
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    store = SpendLog(path)
    assert store.spent_shared("team-b", today) == gpt.ledger.cost
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
    with pytest.raises(BudgetExceededError, match="cannot be used"):
        gpt.complete("gpt-4o-mini", "", "hi")
    assert server.chat_requests == []


def test_a_scope_needs_a_log_and_a_known_window() -> None:
    with pytest.raises(ValidationError, match="needs a log"):
        GPT(budget=1, budget_scope="team")
    with pytest.raises(ValidationError, match="budget_window"):
        GPT(log="x.db", budget=1, budget_scope="team", budget_window="week")
    with pytest.raises(ValidationError, match="needs a budget_scope"):
        GPT(budget_window="day")
