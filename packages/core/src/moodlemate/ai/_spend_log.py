"""A persistent spend log: one SQLite row per call sent, shared by every process on a machine.

``GPT(log="~/spend.db")`` (or ``log = "..."`` in the config file) records each call the
facade accounts: time, provider, endpoint origin (scheme, host and port only), requested and
served model, tokens, exact cost (Decimal as text, NULL when unknown), attempts, latency,
request id, outcome (``ok`` or the error's type), batch id. Prompt and reply text only with
``SpendLog(path, text=True)`` (the CLI's default). Never a key or header: every string
written passes the key redactor, since a server may echo a key into its model name.

The log holds conversations, so a new file is private: created 0600 (SQLite gives its
-wal, -shm and -journal files the same mode) in directories created 0700. An existing
file or directory keeps the mode it has.

Many processes may write at once: the database is in WAL mode, each write is one short
``BEGIN IMMEDIATE`` transaction, and a writer waits at most ``busy_timeout`` seconds in all,
for this instance's own lock (other threads' writes) and the file's lock together, so a
queue of threads behind a locked file each gives up within the bound. A log that cannot be
written (locked past that bound, read-only, corrupt) never fails the call: the row is
dropped, counted in :attr:`SpendLog.dropped`, and a warning says so once.

Rows older than ``retention_days`` (90) are folded into per-day totals, at most once a
day, in a background thread (:mod:`moodlemate.ai._spend_retention`); ``spend`` totals stay
exact.

The schema is versioned (``PRAGMA user_version``) and migrated forward when opened; a
database written by a newer version is left alone (read-only use still works).

``sqlite3`` is imported only when a log is opened, so ``GPT()`` without a log stays light.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moodlemate.ai._closed_early import closed_early
from moodlemate.ai._spend_retention import DEFAULT_RETENTION_DAYS, Pruned

if TYPE_CHECKING:
    import sqlite3

    from moodlemate.ai._provider import ChatRequest, Completion

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "CallRecord",
    "SpendLog",
    "ToolCallRecord",
    "default_log_path",
]

log = logging.getLogger("moodlemate.ai._spend_log")

DEFAULT_BUSY_TIMEOUT = 1.0
"""Seconds a write waits, in all, for the locks of other threads and processes before the
row is dropped (or a shared budget's reservation fails)."""

# Each entry takes the schema from version i to i + 1; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        provider TEXT NOT NULL,
        endpoint TEXT,
        requested_model TEXT NOT NULL,
        served_model TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost TEXT,
        attempts INTEGER,
        latency_ms REAL,
        request_id TEXT,
        outcome TEXT NOT NULL,
        batch_id TEXT,
        prompt TEXT,
        reply TEXT
    );
    CREATE INDEX calls_time ON calls (time);
    """,
    # 2: budgets shared by every process using the file (moodlemate.ai._shared_budget)
    """
    CREATE TABLE budget_spend (
        scope TEXT NOT NULL,
        period TEXT NOT NULL,
        spent TEXT NOT NULL,
        PRIMARY KEY (scope, period)
    );
    CREATE TABLE budget_reservations (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        period TEXT NOT NULL,
        amount TEXT NOT NULL,
        expires REAL NOT NULL
    );
    CREATE INDEX budget_reservations_scope ON budget_reservations (scope);
    """,
    # 3: remote batches settle once (moodlemate.ai.batch.remote_budget): a settlement per
    # scope and batch, and the calls of a batch found without reading the whole log
    """
    CREATE TABLE budget_settlements (
        scope TEXT NOT NULL,
        period TEXT NOT NULL,
        key TEXT NOT NULL,
        cost TEXT NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX calls_batch ON calls (batch_id) WHERE batch_id IS NOT NULL;
    """,
    # 4: retention (moodlemate.ai._spend_retention): a folded row stands for many calls
    """
    ALTER TABLE calls ADD COLUMN folded INTEGER;
    CREATE TABLE spend_log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 5: tool runs (moodlemate.ai._run): each model turn's row names its run and turn
    """
    ALTER TABLE calls ADD COLUMN run_id TEXT;
    ALTER TABLE calls ADD COLUMN turn INTEGER;
    CREATE INDEX calls_run ON calls (run_id) WHERE run_id IS NOT NULL;
    """,
    # 6: the tool calls each run turn asked for (moodlemate.ai._run): written with the turn's
    # row (outcome 'requested'), their outcome and time once the run knows them; never their
    # arguments or results
    """
    CREATE TABLE tool_calls (
        id INTEGER PRIMARY KEY,
        call_id INTEGER NOT NULL,
        run_id TEXT NOT NULL,
        turn INTEGER NOT NULL,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        outcome TEXT NOT NULL,
        latency_ms REAL
    );
    CREATE INDEX tool_calls_call ON tool_calls (call_id);
    CREATE INDEX tool_calls_run ON tool_calls (run_id, turn);
    """,
    # 7: the prompt and completion pieces priced apart, and what a budget counted for the call
    # (its cost when known; else its reservation or priced pieces, or 0). A row written before
    # has 0 for the pieces; its charged is its cost, 0 for a failed call, NULL when unknown.
    """
    ALTER TABLE calls ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN audio_prompt_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN image_prompt_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN audio_completion_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN charged TEXT;
    UPDATE calls SET charged = cost WHERE cost IS NOT NULL;
    UPDATE calls SET charged = '0' WHERE cost IS NULL AND outcome != 'ok';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

COLUMNS = (
    "time",
    "provider",
    "endpoint",
    "requested_model",
    "served_model",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cost",
    "attempts",
    "latency_ms",
    "request_id",
    "outcome",
    "batch_id",
    "prompt",
    "reply",
    "folded",
    "run_id",
    "turn",
    "cache_write_tokens",
    "audio_prompt_tokens",
    "image_prompt_tokens",
    "audio_completion_tokens",
    "charged",
)

# Built from the constant column names above, never from input.
_INSERT = f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"  # noqa: S608
_SELECT = f"SELECT id, {', '.join(COLUMNS)} FROM calls"  # noqa: S608
_INSERT_TOOL = (
    "INSERT INTO tool_calls (call_id, run_id, turn, position, name, outcome) "
    "VALUES (?, ?, ?, ?, ?, 'requested')"
)
_NAME_KEPT = 64
"""Characters of a tool name kept (a model may send a name of any length)."""


def default_log_path(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/moodlemate-ai/logs.db`` (``~/.local/share`` when unset): the CLI's."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "moodlemate-ai" / "logs.db"


def endpoint_origin(url: str | None) -> str | None:
    """``scheme://host[:port]`` of an endpoint: no path, query or user info (which may hold
    a token) goes into the log."""
    if not url:
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}"


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """A tool call a run turn asked for, as the log keeps it: no arguments, no result."""

    position: int
    """Its place in the turn's reply, from 0."""
    name: str
    outcome: str
    """``ok``; ``unknown_tool``, ``invalid_arguments``, ``refused``, ``timeout``, ``raised``;
    ``not_run`` (the run stopped first), ``cancelled`` (closed or cancelled while it ran), or
    ``requested`` (what came of it was never recorded: the process ended first)."""
    latency_ms: float | None = None
    """How long the function ran (None when it did not run to an end)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "latency_ms": self.latency_ms,
        }


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One row of the log, as read back (cost exact, None when unknown)."""

    id: int
    time: str
    provider: str
    endpoint: str | None
    requested_model: str
    served_model: str | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cost: Decimal | None
    attempts: int | None
    latency_ms: float | None
    request_id: str | None
    outcome: str
    batch_id: str | None
    prompt: str | None
    reply: str | None
    folded: int | None = None
    """How many calls of one day this row stands for, once retention folded it (None: one
    call, as recorded)."""
    run_id: str | None = None
    """The tool run (``Run.id``) this call was a turn of; None for a call of its own."""
    turn: int | None = None
    """Its turn in that run, from 1."""
    cache_write_tokens: int = 0
    """Prompt tokens written to the prompt cache (parts of ``prompt_tokens``, as the next
    three are)."""
    audio_prompt_tokens: int = 0
    image_prompt_tokens: int = 0
    audio_completion_tokens: int = 0
    """Part of ``completion_tokens``."""
    charged: Decimal | None = None
    """What the call counted against a budget: its cost when known; when not, its
    reservation or its priced pieces (see :attr:`Ledger.charged`), or 0 (nothing priced, or
    the call failed). None only in a row an older version wrote whose cost is unknown."""
    tool_calls: tuple[ToolCallRecord, ...] = ()
    """The tool calls the turn asked for, in order (filled by :meth:`SpendLog.with_tool_calls`)."""

    @property
    def calls(self) -> int:
        return self.folded or 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the cost as a decimal string (or None), never a float."""
        data = {name: getattr(self, name) for name in ("id", *COLUMNS)}
        data["cost"] = None if self.cost is None else str(self.cost)
        data["charged"] = None if self.charged is None else str(self.charged)
        data["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        return data


class SpendLog:
    """A spend log in one SQLite file (see the module docstring). Thread-safe; one
    connection per instance, opened on first use."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        text: bool = False,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        retention_days: int | None = DEFAULT_RETENTION_DAYS,
    ) -> None:
        if retention_days is not None and (
            isinstance(retention_days, bool)
            or not isinstance(retention_days, int)
            or retention_days < 1
        ):
            from moodlemate.ai.errors import ValidationError

            raise ValidationError(
                f"retention_days must be whole days >= 1 or None, got {retention_days!r}"
            )
        self.path = Path(os.path.expanduser(os.fspath(path)))
        self.retention_days = retention_days
        """Days kept row by row; older calls are folded into per-day totals, at most once a
        day, in a background thread (None: never)."""
        self.text = text
        """Also record the prompt (messages as JSON) and the reply text."""
        self.busy_timeout = busy_timeout
        self.dropped = 0
        """Rows that could not be written (the call itself went on)."""
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._writable = True
        self._warned = False

    @property
    def where(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"SpendLog({str(self.path)!r}, text={self.text})"

    # -- writing ------------------------------------------------------------------------

    def record_call(
        self,
        *,
        provider: str,
        endpoint: str | None,
        request: ChatRequest,
        completion: Completion | None = None,
        error: BaseException | None = None,
        attempts: int | None = None,
        latency: float | None = None,
        batch_id: str | None = None,
        run_id: str | None = None,
        turn: int | None = None,
        charge: Decimal | None = None,
    ) -> bool:
        """Write one call's row; False (and a warning, once) when it could not be written.
        ``run_id`` and ``turn`` name the tool run and turn the call was; such a turn's row is
        written together with a row for each tool call its reply asks for (name only).
        ``charge``: what a budget counted for a reply of unknown cost (as given to
        :meth:`Ledger.record`), stored as the row's ``charged``."""
        tools = None
        if run_id is not None and turn is not None:
            names = _tool_names(completion)
            tools = (run_id, turn, names) if names else None
        return self._insert(
            [
                self._row(
                    provider=provider,
                    endpoint=endpoint,
                    request=request,
                    completion=completion,
                    error=error,
                    attempts=attempts,
                    latency=latency,
                    batch_id=batch_id,
                    run_id=run_id,
                    turn=turn,
                    charge=charge,
                )
            ],
            tools,
        )

    def record_tool_outcomes(
        self, run_id: str, turn: int, outcomes: Sequence[tuple[int, str, float | None]]
    ) -> bool:
        """What came of turn ``turn``'s tool calls, as (position, outcome, milliseconds), all
        in one transaction; False when the log could not be written."""
        import sqlite3

        try:
            with self._write() as conn:
                conn.executemany(
                    "UPDATE tool_calls SET outcome = ?, latency_ms = ? "
                    "WHERE run_id = ? AND turn = ? AND position = ?",
                    [(outcome, ms, run_id, turn, at) for at, outcome, ms in outcomes],
                )
        except (sqlite3.Error, OSError, _NewerSchemaError) as exc:
            self._drop(exc)
            return False
        return True

    def with_tool_calls(self, records: Sequence[CallRecord]) -> list[CallRecord]:
        """``records``, each with the tool calls its turn asked for."""
        from dataclasses import replace

        ids = [r.id for r in records if r.run_id is not None]
        found: dict[int, list[ToolCallRecord]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = self._read(
                "SELECT call_id, position, name, outcome, latency_ms FROM tool_calls "  # noqa: S608
                f"WHERE call_id IN ({marks}) ORDER BY call_id, position",
                chunk,
            )
            for call_id, *fields in rows:
                found.setdefault(call_id, []).append(ToolCallRecord(*fields))
        return [replace(r, tool_calls=tuple(found[r.id])) if r.id in found else r for r in records]

    def record_calls(self, calls: Sequence[dict[str, Any]]) -> bool:
        """Write many calls (each the keyword arguments of :meth:`record_call`) in one
        transaction: all of them or, when the log cannot be written, none."""
        if not calls:
            return True
        return self._insert([self._row(**call) for call in calls])

    def batch_calls(self, batch_id: str) -> int:
        """How many rows the log holds for remote batch ``batch_id`` (a rerun that collects
        the batch again writes only the rows after these)."""
        import sqlite3

        try:
            rows = self._read("SELECT COUNT(*) FROM calls WHERE batch_id = ?", (batch_id,))
        except sqlite3.Error:
            return 0
        return int(rows[0][0])

    def _row(
        self,
        *,
        provider: str,
        endpoint: str | None,
        request: ChatRequest,
        completion: Completion | None = None,
        error: BaseException | None = None,
        attempts: int | None = None,
        latency: float | None = None,
        batch_id: str | None = None,
        run_id: str | None = None,
        turn: int | None = None,
        charge: Decimal | None = None,
    ) -> tuple[object, ...]:
        usage = completion.usage if completion is not None else None
        cost = completion.cost if completion is not None else None
        charged = _charged(completion, charge)
        from moodlemate.ai._secrets import redact

        served = completion.model if completion is not None else None
        request_id = completion.request_id if completion is not None else None
        reply = completion.text if self.text and completion is not None else None
        return (
            _now(),
            provider,
            endpoint_origin(endpoint),
            request.model,
            None if served is None else redact(served),
            usage.prompt_tokens if usage else 0,
            usage.cached_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            usage.reasoning_tokens if usage else 0,
            None if cost is None else str(cost),
            attempts,
            None if latency is None else round(latency * 1000, 3),
            None if request_id is None else redact(request_id),
            _outcome(error),
            batch_id,
            redact(_prompt_text(request)) if self.text else None,
            None if reply is None else redact(reply),
            None,
            run_id,
            turn,
            usage.cache_write_tokens if usage else 0,
            usage.audio_prompt_tokens if usage else 0,
            usage.image_prompt_tokens if usage else 0,
            usage.audio_completion_tokens if usage else 0,
            str(charged),
        )

    def _insert(
        self,
        rows: Sequence[Sequence[object]],
        tools: tuple[str, int, tuple[str, ...]] | None = None,
    ) -> bool:
        import sqlite3

        try:
            with self._write() as conn:
                if tools is None:
                    conn.executemany(_INSERT, rows)
                else:
                    (row,) = rows
                    call_id = conn.execute(_INSERT, row).lastrowid
                    run_id, turn, names = tools
                    conn.executemany(
                        _INSERT_TOOL,
                        [(call_id, run_id, turn, at, name) for at, name in enumerate(names)],
                    )
        except (sqlite3.Error, OSError, _NewerSchemaError) as exc:
            self._drop(exc)
            return False
        return True

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short IMMEDIATE transaction under this instance's lock (the write lock is
        taken up front, so it never deadlocks upgrading a read); the two waits together
        last at most ``busy_timeout``."""
        with self._locked() as conn:
            if not self._writable:
                raise _NewerSchemaError(f"{self.path} has a newer schema than this version writes")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, held by this thread: waiting for the instance's lock counts
        against ``busy_timeout``, and SQLite's own wait gets what is left of it."""
        import sqlite3

        began = time.monotonic()
        if not self._lock.acquire(timeout=self.busy_timeout):
            raise sqlite3.OperationalError(
                f"database is busy: other threads held it for {self.busy_timeout:g}s"
            )
        try:
            conn = self._connection()
            left = max(0.0, self.busy_timeout - (time.monotonic() - began))
            conn.execute(f"PRAGMA busy_timeout = {int(left * 1000)}")
            yield conn
        finally:
            self._lock.release()

    def _drop(self, exc: BaseException) -> None:
        self.dropped += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "spend log %s cannot be written (%s: %s): calls go on, unrecorded there",
                self.path,
                type(exc).__name__,
                exc,
            )

    # -- the connection and schema ------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        # A forked child (a pre-forking web server's worker) must not use its parent's
        # connection: SQLite's locks would be shared. It opens its own.
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._open()
            self._pid = os.getpid()
            self.prune_soon()
        return self._conn

    # -- retention (see moodlemate.ai._spend_retention) ---------------------------------

    def prune_soon(self) -> bool:
        """Start folding old rows in a background thread, unless this log (any process)
        was pruned in the last day or keeps every row; True when a prune started."""
        from moodlemate.ai._spend_retention import due

        if self.retention_days is None or not self._writable or self._conn is None:
            return False
        if not due(self._conn):  # a read; most openings stop here, with no thread
            return False
        thread = threading.Thread(
            target=self._prune_quietly, name="moodlemate-spend-log-prune", daemon=True
        )
        thread.start()
        return True

    def _prune_quietly(self) -> None:
        import sqlite3

        from moodlemate.ai._spend_retention import GUARD, fold, prune_due, pruned

        assert self.retention_days is not None
        try:
            with GUARD:  # a fork waits for each step; never inherits one half done
                conn = self._raw_connection()
            try:
                with GUARD:
                    claimed = prune_due(conn)
                if claimed:
                    fold(conn, self.retention_days)
                    with GUARD:
                        pruned(conn)
            finally:
                with GUARD:
                    conn.close()
        except (sqlite3.Error, OSError) as exc:  # busy, read-only: the next day tries again
            log.debug("spend log %s not pruned: %s", self.path, exc)

    def prune(self, keep_days: int | None = None, *, vacuum: bool = True) -> Pruned:
        """Fold rows older than ``keep_days`` (the log's ``retention_days`` when None) into
        per-day totals now, then compact the file (``VACUUM``) unless told not to."""
        from moodlemate.ai._spend_retention import fold

        days = keep_days or self.retention_days or DEFAULT_RETENTION_DAYS
        with self._lock:
            self._connection()  # migrated
        conn = self._raw_connection()
        try:
            pruned = fold(conn, days)
            if vacuum:
                conn.execute("VACUUM")
        finally:
            conn.close()
        return pruned

    def _raw_connection(self) -> sqlite3.Connection:
        """A connection of its own (a long pass must not hold the instance's lock)."""
        import sqlite3

        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    def _open(self) -> sqlite3.Connection:
        import sqlite3

        _create_private(self.path)
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL, much faster
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            self._writable = False
            return
        conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others then see it done
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[version:]:
                for statement in step.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {max(version, SCHEMA_VERSION)}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- shared budgets (see moodlemate.ai._shared_budget) --------------------------------

    def reserve_shared(
        self, scope: str, period: str, amount: Decimal, budget: Decimal, ttl: float
    ) -> tuple[int | None, Decimal, Decimal]:
        """In one IMMEDIATE transaction (so atomic across processes): hold ``amount`` for
        ``scope`` unless what ``period`` spent plus the live reservations plus it would cross
        ``budget``. Returns (reservation id or None when refused, spent, reserved).
        A reservation past its ``ttl`` lapses into spent, at its full amount (its process
        died, or cannot reach the file: the call may well have cost that); its row stays,
        marked ``expires = -1``, so a late settle adds only what the call cost beyond it."""
        now = time.time()
        with self._write() as conn:
            lapsed = conn.execute(
                "SELECT scope, period, amount FROM budget_reservations "
                "WHERE expires >= 0 AND expires < ?",
                (now,),
            ).fetchall()
            for lapsed_scope, lapsed_period, lapsed_amount in lapsed:
                _add_spent(conn, lapsed_scope, lapsed_period, Decimal(lapsed_amount))
            conn.execute(
                "UPDATE budget_reservations SET expires = -1 WHERE expires >= 0 AND expires < ?",
                (now,),
            )
            row = conn.execute(
                "SELECT spent FROM budget_spend WHERE scope = ? AND period = ?", (scope, period)
            ).fetchone()
            spent = Decimal(row[0]) if row else Decimal(0)
            held = conn.execute(
                "SELECT amount FROM budget_reservations "
                "WHERE scope = ? AND period = ? AND expires >= 0",
                (scope, period),
            ).fetchall()
            reserved = sum((Decimal(a) for (a,) in held), Decimal(0))
            if spent >= budget or spent + reserved + amount > budget:
                return None, spent, reserved
            cursor = conn.execute(
                "INSERT INTO budget_reservations (scope, period, amount, expires) "
                "VALUES (?, ?, ?, ?)",
                (scope, period, str(amount), now + ttl),
            )
            return cursor.lastrowid, spent, reserved

    def settle_shared(
        self, scope: str, period: str, reservation_id: int, cost: Decimal | None
    ) -> None:
        """Free a reservation and add the call's real cost to its scope and period, in one
        transaction (an unknown cost adds nothing; a lapsed reservation, already counted at
        its amount, adds only what the call cost beyond it)."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT amount, expires FROM budget_reservations WHERE id = ?", (reservation_id,)
            ).fetchone()
            conn.execute("DELETE FROM budget_reservations WHERE id = ?", (reservation_id,))
            if cost is None:
                return
            if row is not None and row[1] < 0:
                cost -= Decimal(row[0])
            if cost > 0:
                _add_spent(conn, scope, period, cost)

    def settle_once(
        self, scope: str, period: str, key: str, reservation_id: int | None, cost: Decimal
    ) -> bool:
        """Like :meth:`settle_shared`, once per ``key`` (a remote batch's id): in one
        transaction the reservation is freed and, unless ``key`` was settled before, the
        cost added (beyond a lapsed reservation's amount, already counted) and the settlement
        recorded. True when this call settled it."""
        with self._write() as conn:
            row = None
            if reservation_id is not None:
                row = conn.execute(
                    "SELECT amount, expires FROM budget_reservations WHERE id = ?",
                    (reservation_id,),
                ).fetchone()
                conn.execute("DELETE FROM budget_reservations WHERE id = ?", (reservation_id,))
            done = conn.execute(
                "SELECT 1 FROM budget_settlements WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
            if done:
                return False
            conn.execute(
                "INSERT INTO budget_settlements (scope, period, key, cost) VALUES (?, ?, ?, ?)",
                (scope, period, key, str(cost)),
            )
            added = cost - Decimal(row[0]) if row is not None and row[1] < 0 else cost
            if added > 0:
                _add_spent(conn, scope, period, added)
            return True

    def spent_shared(self, scope: str, period: str) -> Decimal:
        """What ``scope`` spent in ``period``, every process together."""
        rows = self._read(
            "SELECT spent FROM budget_spend WHERE scope = ? AND period = ?", (scope, period)
        )
        return Decimal(rows[0][0]) if rows else Decimal(0)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- reading ------------------------------------------------------------------------

    def recent(self, limit: int = 20) -> list[CallRecord]:
        """The last ``limit`` calls, newest first."""
        rows = self._read(_SELECT + " ORDER BY id DESC LIMIT ?", (limit,))
        return [_record(row) for row in rows]

    def calls(self, since: datetime | None = None) -> list[CallRecord]:
        """Every call from ``since`` (UTC) on, oldest first."""
        where, params = ("WHERE time >= ?", (_stamp(since),)) if since is not None else ("", ())
        rows = self._read(f"{_SELECT} {where} ORDER BY id", params)
        return [_record(row) for row in rows]

    def run_calls(self, run_id: str) -> list[CallRecord]:
        """The rows of tool run ``run_id`` (``Run.id``), one per model turn, in turn order."""
        rows = self._read(f"{_SELECT} WHERE run_id = ? ORDER BY turn, id", (run_id,))
        return [_record(row) for row in rows]

    def _read(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        with self._locked() as conn:
            return conn.execute(sql, params).fetchall()


def _add_spent(conn: sqlite3.Connection, scope: str, period: str, amount: Decimal) -> None:
    old = conn.execute(
        "SELECT spent FROM budget_spend WHERE scope = ? AND period = ?", (scope, period)
    ).fetchone()
    spent = (Decimal(old[0]) if old else Decimal(0)) + amount
    conn.execute(
        "INSERT OR REPLACE INTO budget_spend (scope, period, spent) VALUES (?, ?, ?)",
        (scope, period, str(spent)),
    )


class _NewerSchemaError(Exception):
    """The file was written by a newer moodlemate-ai; this one only reads it."""


@dataclass(slots=True)
class SpendTotal:
    """Totals for one group of calls; ``cost`` is None when no call in it had a known cost."""

    key: str
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    known_cost: Decimal = Decimal(0)
    unpriced_calls: int = 0
    charged: Decimal = Decimal(0)
    """What the calls counted against budgets: the known cost plus :attr:`charged_unpriced`."""
    charged_unpriced: Decimal = Decimal(0)
    """What calls of unknown cost counted (their reservations or priced pieces)."""

    def add(self, record: CallRecord) -> None:
        calls = record.calls  # a folded row stands for many
        self.calls += calls
        self.errors += calls if record.outcome != "ok" else 0
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        with localcontext() as ctx:
            ctx.prec = 60  # exact for any realistic sum of price-list costs
            if record.cost is None:
                self.unpriced_calls += calls if record.outcome == "ok" else 0
                self.charged_unpriced += record.charged or 0
            else:
                self.known_cost += record.cost
            # A row an older version wrote holds no charge: its known cost is what counted.
            charged = record.charged if record.charged is not None else record.cost
            self.charged += charged or 0

    @property
    def cost(self) -> Decimal | None:
        priced = self.calls - self.errors - self.unpriced_calls
        return None if priced == 0 and self.unpriced_calls else self.known_cost

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "calls": self.calls,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": None if self.cost is None else str(self.cost),
            "unpriced_calls": self.unpriced_calls,
            "charged": str(self.charged),
            "charged_unpriced": str(self.charged_unpriced),
        }


GROUPINGS = ("day", "model", "provider")


def totals(records: Sequence[CallRecord], by: str) -> tuple[list[SpendTotal], SpendTotal]:
    """Per-group and overall totals, exact (Decimal), grouped by day (UTC), served model
    (the requested one when none was served) or provider."""
    groups: dict[str, SpendTotal] = {}
    overall = SpendTotal("total")
    for record in records:
        if by == "day":
            key = record.time[:10]
        elif by == "model":
            key = record.served_model or record.requested_model
        else:
            key = record.provider
        group = groups.get(key)
        if group is None:
            group = groups[key] = SpendTotal(key)
        group.add(record)
        overall.add(record)
    return [groups[k] for k in sorted(groups)], overall


def _create_private(path: Path) -> None:
    """Create ``path`` (and its missing directories) readable by its owner only, unless it
    exists: SQLite then opens it as it is."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with suppress(FileExistsError):  # another process created it meanwhile
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _charged(completion: Completion | None, charge: Decimal | None) -> Decimal:
    """What a budget counted for a call, as the ledger does: the cost when known; else the
    charge for a reply of unknown cost; nothing for a call that failed (its reservation was
    freed) or that nothing priced."""
    if completion is None:
        return Decimal(0)
    if completion.cost is not None:
        return completion.cost
    return charge or Decimal(0)


def _record(row: tuple[Any, ...]) -> CallRecord:
    values = list(row)
    for name in ("cost", "charged"):
        at = 1 + COLUMNS.index(name)
        values[at] = _stored_cost(values[at])
    return CallRecord(*values)


def _stored_cost(text: object) -> Decimal | None:
    """A row's cost as money (see :func:`moodlemate.ai._pricing.to_money`): a row an older
    version wrote with an absurd figure (``1e-999999999``) reads as its rounded amount, or
    as unknown, never as a million digits."""
    from decimal import InvalidOperation

    from moodlemate.ai._pricing import to_money

    if text is None:
        return None
    try:
        return to_money(Decimal(str(text)))
    except InvalidOperation:
        return None


def _tool_names(completion: Completion | None) -> tuple[str, ...]:
    """The names of the tool calls a reply asks for, in the run's order, cut and redacted
    (they are untrusted)."""
    if completion is None or not completion.tool_calls:
        return ()
    from moodlemate.ai._secrets import redact_cut

    return tuple(redact_cut(call.name, _NAME_KEPT) or "?" for call in completion.message.tool_calls)


def _prompt_text(request: ChatRequest) -> str:
    import json

    from moodlemate.ai._message_dicts import message_record

    return json.dumps([message_record(m) for m in request.messages])


def _now() -> str:
    return _stamp(datetime.now(UTC))


def _stamp(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds: sorts as text, so ``time >= ?`` works in SQL."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _outcome(error: BaseException | None) -> str:
    """``ok``, ``cancelled`` (a stream closed early, a task cancelled), or the error's type."""
    if error is None:
        return "ok"
    if closed_early(error):
        return "cancelled"
    return type(error).__name__
