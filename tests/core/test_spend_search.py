"""The spend log's full-text search and conversation marks (moodlemate.ai._spend_search) on
a real SQLite file written by real calls: additive to the versioned schema, literal words,
and rows that retention removes never come back as hits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from moodlemate.ai import GPT
from moodlemate.ai import _spend_search as search
from moodlemate.ai._spend_log import SCHEMA_VERSION, SpendLog
from moodlemate.ai.testing import LoopbackServer
from support import TEST_KEY


def _calls(server: LoopbackServer, log: Path, *prompts: str) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, log=SpendLog(log, text=True))
    for prompt in prompts:
        gpt.chat_completion("gpt-4o-mini", "You are terse.", prompt)


def test_search_finds_words_of_what_was_asked_or_answered(
    server: LoopbackServer, tmp_path: Path
) -> None:
    log = tmp_path / "logs.db"
    _calls(server, log, "the tortoise and the hare", "a fox", "TORTOISE shells")
    assert sorted(search.search(log, "tortoise", 10)) == [1, 3]  # any case
    assert search.search(log, "hare tortoise", 10) == [1]
    assert search.search(log, "terse", 10) == []  # the system message is not what was asked
    assert search.search(log, "Echo fox", 10) == [2]  # the reply counts
    assert search.search(log, 'fox" OR "hare', 10) == []  # no query language gets through
    assert search.search(log, "   ", 10) == []
    conn = sqlite3.connect(log)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_rows_removed_by_retention_drop_out_and_new_rows_are_found(
    server: LoopbackServer, tmp_path: Path
) -> None:
    log = tmp_path / "logs.db"
    _calls(server, log, "apple one", "apple two", "apple three")
    assert len(search.search(log, "apple", 10)) == 3
    conn = sqlite3.connect(log, isolation_level=None)
    conn.execute("DELETE FROM calls WHERE id IN (1, 3)")  # pruned, the newest included
    conn.close()
    assert search.search(log, "apple", 10) == [2]
    _calls(server, log, "banana four")  # takes id 3 again: must not inherit "apple three"
    assert search.search(log, "apple", 10) == [2]
    assert search.search(log, "banana", 10) == [3]
    assert [r.reply for r in search.records(log, [3, 2, 99])] == [
        "Echo: banana four",
        "Echo: apple two",
    ]
    search.drop(log)
    assert search.search(log, "banana", 10) == [3]  # rebuilt from the rows on demand


def test_conversation_marks(server: LoopbackServer, tmp_path: Path) -> None:
    log = tmp_path / "logs.db"
    _calls(server, log, "first", "second")
    rows = SpendLog(log).recent(2)
    for row in rows:
        assert search.link_conversation(log, "chat-a", row.request_id, row.reply)
    assert search.conversation_ids(log, "chat-a", 10) == [2, 1]
    assert search.conversation_ids(log, "other", 10) == []
    assert not search.link_conversation(log, "chat-a", "no-such-request", "nothing")
