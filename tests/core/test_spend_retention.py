"""Spend-log retention: old calls folded into per-day totals keep the file bounded over a
long run while ``moodlemate-ai spend`` adds up exactly as before; a log prunes itself at
most once a day; shared budgets keep counting what was spent. Real SQLite files, the CLI
as a subprocess."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

from moodlemate.ai import _spend_retention
from moodlemate.ai._spend_log import SpendLog, totals

COMMAND = [sys.executable, "-m", "moodlemate.ai.cli"]
MODELS = ("gpt-4o-mini", "gpt-4o", "local-model")
OUTCOMES = ("ok", "ok", "ok", "ok", "ServerError")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120
    )


def _simulate(path: Path, first_day: datetime, days: int, per_day: int, seed: int) -> None:
    """``per_day`` calls a day for ``days`` days, as the library writes them (priced models
    with exact decimal costs, an unpriced one with none, some errors, prompts and replies)."""
    rng = random.Random(seed)
    rows = []
    for day in range(days):
        start = first_day + timedelta(days=day)
        for n in range(per_day):
            model = MODELS[rng.randrange(3)]
            outcome = OUTCOMES[rng.randrange(5)]
            prompt, completion = rng.randrange(5, 3000), rng.randrange(0, 800)
            cost = None
            if model != "local-model" and outcome == "ok":
                rate_in, rate_out = (
                    (Decimal("0.15"), Decimal("0.6"))
                    if model == "gpt-4o-mini"
                    else (Decimal("2.5"), Decimal(10))
                )
                cost = str((prompt * rate_in + completion * rate_out) / 10**6)
            moment = start + timedelta(seconds=n * 86_000 // per_day)
            rows.append(
                (
                    moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "openai",
                    "https://api.openai.com",
                    model,
                    model,
                    prompt,
                    completion,
                    cost,
                    1,
                    123.4,
                    f"req-{seed}-{day}-{n}",
                    outcome,
                    "question " * 20,
                    "answer " * 40,
                )
            )
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO calls (time, provider, endpoint, requested_model, served_model, "
            "prompt_tokens, completion_tokens, cost, attempts, latency_ms, request_id, "
            "outcome, prompt, reply) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def _spend(path: Path, by: str) -> dict[str, object]:
    out = run_cli("spend", "--log", str(path), "--by", by, "--json")
    assert out.returncode == 0, out.stderr
    document: dict[str, object] = json.loads(out.stdout)
    return document


def test_the_file_stays_bounded_over_a_long_run_and_spend_adds_up_exactly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spend.db"
    SpendLog(path, retention_days=None).recent()  # created, migrated; nothing pruned
    with sqlite3.connect(path, isolation_level=None) as conn:
        # Today's automatic prune is claimed: the simulated seasons below prune themselves
        # at their own "now", and the CLI's own opening of the log must not meanwhile.
        assert _spend_retention.prune_due(conn) is True
    conn.close()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    log = SpendLog(path, retention_days=None)
    sizes = []
    totals_before = []
    # Four seasons of 120 days, 300 calls a day; after each, keep 30 days row by row.
    for season in range(4):
        _simulate(path, start + timedelta(days=120 * season), 120, 300, seed=season)
        totals_before = [_spend(path, by) for by in ("day", "model", "provider")]
        now = start + timedelta(days=120 * (season + 1))
        with sqlite3.connect(path, isolation_level=None) as conn:
            pruned = _spend_retention.fold(conn, 30, now=now)
        conn.close()
        assert pruned.calls == 300 * (90 if season == 0 else 120)
        log.prune(10_000)  # nothing older than that: only compacts the file
        sizes.append(path.stat().st_size)
        totals_after = [_spend(path, by) for by in ("day", "model", "provider")]
        assert totals_after == totals_before  # every group, to the last decimal
    # 144,000 calls of about 700 bytes written (100 MB); the file holds 30 days of rows
    # (9,000) plus a few folded rows a day, and grows by those alone.
    assert max(sizes) < 10 * 1024 * 1024
    growth = [later - earlier for earlier, later in pairwise(sizes)]
    assert max(growth) < 256 * 1024  # 120 days of per-day totals, not 36,000 calls
    records = log.calls()
    assert sum(r.calls for r in records) == 4 * 120 * 300
    overall = totals(records, "model")[1]
    assert overall.cost == Decimal(str(totals_before[1]["total"]["cost"]))  # type: ignore[index]
    assert len(records) < 30 * 300 + 3 * 5 * 4 * 120


def test_a_log_prunes_itself_once_a_day_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    SpendLog(path, retention_days=None).recent()
    _simulate(path, datetime.now(UTC) - timedelta(days=200), 50, 40, seed=7)
    before = _spend(path, "model")
    log = SpendLog(path)  # the default: 90 days
    log.recent()  # opening it starts the prune
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with sqlite3.connect(path) as conn:
            (folded,) = conn.execute("SELECT count(*) FROM calls WHERE folded IS NULL").fetchone()
        conn.close()
        if folded == 0:
            break
        time.sleep(0.05)
    assert folded == 0
    assert _spend(path, "model") == before
    again = SpendLog(path)
    again.recent()
    with sqlite3.connect(path, isolation_level=None) as conn:
        assert _spend_retention.prune_due(conn) is False  # pruned within the day, by any process
    conn.close()


def test_logs_prune_folds_and_compacts_and_budgets_keep_their_spend(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    log = SpendLog(path, retention_days=None)
    reservation, _, _ = log.reserve_shared("team", "2026-03", Decimal("0.5"), Decimal(10), ttl=60)
    assert reservation is not None
    log.settle_shared("team", "2026-03", reservation, Decimal("0.1234567891"))
    _simulate(path, datetime.now(UTC) - timedelta(days=60), 60, 100, seed=3)
    before = _spend(path, "day")
    size = path.stat().st_size
    out = run_cli("logs", "prune", "--keep", "7", "--log", str(path))
    assert out.returncode == 0, out.stderr
    assert "folded" in out.stdout
    after = _spend(path, "day")
    assert after == before
    assert path.stat().st_size < size / 3
    assert log.spent_shared("team", "2026-03") == Decimal("0.1234567891")
    listing = run_cli("logs", "--log", str(path), "-n", "5")
    assert listing.returncode == 0, listing.stderr
