"""Full-text search over the spend log's prompts and replies, and which conversation each
call belonged to: tables of their own beside the log's versioned schema.

The index (SQLite FTS5, ``calls_text``) is brought up to date when a search runs, from the
rows written since the last one, so writing a call costs nothing more. It is additive: a log
without these tables is a complete log, rows that retention removes drop out of results
(every hit is joined back to ``calls``), and :func:`drop` removes it all again.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moodlemate.ai._spend_log import CallRecord

__all__ = [
    "conversation_ids",
    "drop",
    "link_conversation",
    "prompt_words",
    "records",
    "search",
]

_SCHEMA = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS calls_text USING fts5(prompt, reply)",
    "CREATE TABLE IF NOT EXISTS calls_text_state "
    "(id INTEGER PRIMARY KEY CHECK (id = 1), indexed INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS conversation_calls "
    "(call_id INTEGER PRIMARY KEY, conversation TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS conversation_calls_name ON conversation_calls (conversation)",
)
_BATCH = 500


def prompt_words(prompt_json: str | None) -> str:
    """What was asked this time: the text of the last message of a logged prompt (a JSON
    list of messages; a conversation's earlier turns are their own rows)."""
    if not prompt_json:
        return ""
    try:
        messages = json.loads(prompt_json)
    except ValueError:
        return prompt_json
    if isinstance(messages, list):
        messages = messages[-1:]
    return "\n".join(_texts(messages))


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for name in ("content", "text"):
            yield from _texts(value.get(name))


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    return conn


def _ensure(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)


def _catch_up(conn: sqlite3.Connection) -> None:
    """Index the rows written since the last search (one IMMEDIATE transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _ensure(conn)
        row = conn.execute("SELECT indexed FROM calls_text_state WHERE id = 1").fetchone()
        done = row[0] if row else 0
        newest = conn.execute("SELECT coalesce(max(id), 0) FROM calls").fetchone()[0]
        if newest < done:  # the newest rows were removed: their ids may be used again
            conn.execute("DELETE FROM calls_text WHERE rowid > ?", (newest,))
            done = newest
        while True:
            rows = conn.execute(
                "SELECT id, prompt, reply FROM calls WHERE id > ? ORDER BY id LIMIT ?",
                (done, _BATCH),
            ).fetchall()
            if not rows:
                break
            conn.executemany(
                "INSERT INTO calls_text (rowid, prompt, reply) VALUES (?, ?, ?)",
                [(i, prompt_words(p), r or "") for i, p, r in rows if p or r],
            )
            done = rows[-1][0]
        conn.execute(
            "INSERT INTO calls_text_state (id, indexed) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET indexed = excluded.indexed",
            (done,),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def search(
    path: str | os.PathLike[str], query: str, limit: int, busy_timeout: float = 1.0
) -> list[int]:
    """Ids of the calls whose prompt or reply match ``query`` (words, all of them, any
    order; a quoted phrase; FTS5 syntax is not exposed), best match first, newest first
    among equals."""
    words = [w for w in query.replace('"', " ").split() if w]
    if not words:
        return []
    match = " ".join(f'"{w}"' for w in words)  # each word a literal: no operators injected
    conn = _connect(Path(path), busy_timeout)
    try:
        _catch_up(conn)
        rows = conn.execute(
            "SELECT calls.id FROM calls_text JOIN calls ON calls.id = calls_text.rowid "
            "WHERE calls_text MATCH ? ORDER BY bm25(calls_text), calls.id DESC LIMIT ?",
            (match, limit),
        ).fetchall()
    finally:
        conn.close()
    return [row[0] for row in rows]


def link_conversation(
    path: str | os.PathLike[str],
    conversation: str,
    request_id: str | None,
    reply: str | None,
    busy_timeout: float = 1.0,
) -> bool:
    """Mark the newest call with this request id and reply as a turn of ``conversation``
    (the CLI's, for ``logs --cid``). False when no such row was written."""
    conn = _connect(Path(path), busy_timeout)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _ensure(conn)
            row = conn.execute(
                "SELECT max(id) FROM calls WHERE request_id IS ? AND reply IS ?",
                (request_id, reply),
            ).fetchone()
            if row[0] is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO conversation_calls (call_id, conversation) "
                    "VALUES (?, ?)",
                    (row[0], conversation),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()
    return row[0] is not None


def conversation_ids(path: str | os.PathLike[str], conversation: str, limit: int) -> list[int]:
    """Ids of the calls of ``conversation``, newest first."""
    conn = _connect(Path(path), 1.0)
    try:
        _ensure(conn)
        rows = conn.execute(
            "SELECT call_id FROM conversation_calls WHERE conversation = ? "
            "ORDER BY call_id DESC LIMIT ?",
            (conversation, limit),
        ).fetchall()
    finally:
        conn.close()
    return [row[0] for row in rows]


def drop(path: str | os.PathLike[str]) -> None:
    """Remove the index and the conversation links (the log's rows stay)."""
    conn = _connect(Path(path), 1.0)
    try:
        for table in ("calls_text", "calls_text_state", "conversation_calls"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        conn.close()


def records(path: str | os.PathLike[str], ids: Sequence[int]) -> list[CallRecord]:
    """The log's rows with these ids, in the order given (removed ones left out)."""
    from moodlemate.ai._spend_log import _SELECT, _record

    if not ids:
        return []
    conn = _connect(Path(path), 1.0)
    try:
        marks = ", ".join("?" for _ in ids)
        rows = conn.execute(f"{_SELECT} WHERE id IN ({marks})", tuple(ids)).fetchall()
    finally:
        conn.close()
    found = {row[0]: _record(row) for row in rows}
    return [found[i] for i in ids if i in found]
