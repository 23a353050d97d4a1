"""Retention for the spend log: old rows folded into per-day totals, so the file stays
bounded and ``moodlemate-ai spend`` still adds up to the last decimal.

A row older than the retention period (:data:`DEFAULT_RETENTION_DAYS`, counted in whole
UTC days) is folded with the other old rows of its day, provider, endpoint, requested
and served model, outcome and priced-or-not into one row whose ``folded`` column says how
many calls it stands for: tokens, attempts, the exact cost and what a budget was
charged are summed; time of day,
latency, request id, batch id, prompt and reply are dropped. Shared budgets keep their
own per-period totals (``budget_spend``), which folding never touches.

Folding works in transactions of at most :data:`CHUNK` rows, so another process writing
a call waits for one short transaction, never for the whole pass. A log prunes itself at
most once a day, in a background thread, when it is opened
(:meth:`~moodlemate.ai._spend_log.SpendLog.prune_soon`); ``moodlemate-ai logs prune``
does it now and compacts the file.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "CHUNK",
    "DEFAULT_RETENTION_DAYS",
    "GUARD",
    "PRUNE_EVERY",
    "Pruned",
    "due",
    "fold",
    "prune_due",
    "pruned",
]

DEFAULT_RETENTION_DAYS = 90
"""Days of calls kept row by row; older ones are folded into per-day totals."""
PRUNE_EVERY = 86_400.0
"""Seconds between automatic prunes of one log (every process sharing it together)."""
CHUNK = 2_000
"""Rows folded per transaction."""

_LAST_PRUNE = "last_prune"

GUARD = threading.Lock()
"""Held by a background prune around each transaction, and by ``os.fork()`` (a
pre-forking server's workers): a child never inherits a prune in the middle of SQLite."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=GUARD.acquire, after_in_parent=GUARD.release, after_in_child=GUARD.release
    )


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pass did: calls folded, and the per-day rows they became."""

    calls: int = 0
    rows: int = 0


def cutoff(keep_days: int, now: datetime | None = None) -> str:
    """The first moment kept row by row: midnight UTC ``keep_days`` days before today."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return (start - timedelta(days=keep_days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def due(conn: sqlite3.Connection, every: float = PRUNE_EVERY) -> bool:
    """Whether no prune ran in the last ``every`` seconds (a read: no lock taken)."""
    return _due(conn, every)


def prune_due(conn: sqlite3.Connection, every: float = PRUNE_EVERY) -> bool:
    """Claim the next automatic prune, in one transaction: True when none ran in the last
    ``every`` seconds (by any process) and no live process is running one; the claim is
    recorded with this process's id. Not due is told by a read alone: most openings take no
    write lock. :func:`pruned` marks the claim done; a claim whose process ended first (a
    short command that exited mid-prune) is taken over by the next opening."""
    if not _due(conn, every):
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        due = _due(conn, every)  # again: another process may have claimed it meanwhile
        if due:
            _mark(conn, f"{time.time()!r} {os.getpid()}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return due


def pruned(conn: sqlite3.Connection) -> None:
    """Record that the claimed prune finished (the next is due a period from now)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _mark(conn, repr(time.time()))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _mark(conn: sqlite3.Connection, value: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO spend_log_meta (key, value) VALUES (?, ?)", (_LAST_PRUNE, value)
    )


def _due(conn: sqlite3.Connection, every: float) -> bool:
    row = conn.execute("SELECT value FROM spend_log_meta WHERE key = ?", (_LAST_PRUNE,)).fetchone()
    if row is None:
        return True
    stamp, _, owner = str(row[0]).partition(" ")
    if owner and owner.isdigit() and not _alive(int(owner)):
        return True  # claimed by a process that ended before it finished
    return time.time() - float(stamp) >= every


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, another user's
    return True


_TOKENS = (
    "prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, cache_write_tokens, "
    "audio_prompt_tokens, image_prompt_tokens, audio_completion_tokens"
)
_TOKEN_COLUMNS = _TOKENS.count(",") + 1
_SELECT_OLD = (
    "SELECT id, time, provider, endpoint, requested_model, served_model, outcome, "  # noqa: S608
    f"{_TOKENS}, cost, attempts, charged FROM calls "
    "WHERE time < ? AND folded IS NULL ORDER BY time LIMIT ?"
)
_INSERT_FOLDED = (
    "INSERT INTO calls (time, provider, endpoint, requested_model, served_model, outcome, "  # noqa: S608
    f"{_TOKENS}, cost, attempts, charged, folded) "
    f"VALUES ({', '.join('?' for _ in range(_TOKEN_COLUMNS + 10))})"
)


def fold(conn: sqlite3.Connection, keep_days: int, now: datetime | None = None) -> Pruned:
    """Fold every row older than ``keep_days`` whole UTC days into per-day rows."""
    before = cutoff(keep_days, now)
    calls = rows = 0
    while True:
        with GUARD:
            pruned = _fold_chunk(conn, before)
        if pruned is None:
            return Pruned(calls, rows)
        calls += pruned.calls
        rows += pruned.rows


def _fold_chunk(conn: sqlite3.Connection, before: str) -> Pruned | None:
    """Fold up to CHUNK rows older than ``before`` in one transaction; None when none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = conn.execute(_SELECT_OLD, (before, CHUNK)).fetchall()
        if not old:
            conn.execute("COMMIT")
            return None
        groups = _groups(old)
        conn.executemany("DELETE FROM calls WHERE id = ?", [(row[0],) for row in old])
        conn.executemany("DELETE FROM tool_calls WHERE call_id = ?", [(row[0],) for row in old])
        conn.executemany(_INSERT_FOLDED, groups)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return Pruned(len(old), len(groups))


def _groups(old: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One row per day and group, with the sums of the rows it stands for. Rows whose charge
    is not known (written before the log kept it) are folded apart, so a sum is never part
    known."""
    totals: dict[tuple[Any, ...], list[Any]] = {}
    with localcontext() as ctx:
        ctx.prec = 60  # exact for any realistic sum of recorded costs
        for row in old:
            (_, stamp, provider, endpoint, requested, served, outcome) = row[:7]
            tokens = row[7 : 7 + _TOKEN_COLUMNS]
            cost, attempts, charged = row[7 + _TOKEN_COLUMNS :]
            key = (
                stamp[:10],
                provider,
                endpoint,
                requested,
                served,
                outcome,
                cost is None,
                charged is None,
            )
            total = totals.get(key)
            if total is None:
                total = totals[key] = [[0] * _TOKEN_COLUMNS, None, None, None, 0]
            total[0] = [a + b for a, b in zip(total[0], tokens, strict=True)]
            if cost is not None:
                total[1] = (total[1] or Decimal(0)) + Decimal(cost)
            if attempts is not None:
                total[2] = (total[2] or 0) + attempts
            if charged is not None:
                total[3] = (total[3] or Decimal(0)) + Decimal(charged)
            total[4] += 1
    return [
        (
            f"{key[0]}T00:00:00.000000Z",
            *key[1:6],
            *total[0],
            None if total[1] is None else str(total[1]),
            total[2],
            None if total[3] is None else str(total[3]),
            total[4],
        )
        for key, total in totals.items()
    ]
