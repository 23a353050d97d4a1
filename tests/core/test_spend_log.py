"""The persistent spend log: one SQLite row per call sent, from every path, written safely by
many real processes at once, and never failing or stalling a call when the log is broken."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from moodlemate.ai import GPT, BadRequestError
from moodlemate.ai._spend_log import SCHEMA_VERSION, SpendLog, totals
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY


def _rows(path: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM calls ORDER BY id").fetchall()
    finally:
        conn.close()


def _file_bytes(path: Path) -> bytes:
    """The database and its WAL: everything a key could have leaked into."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_no_log_by_default_and_sqlite3_is_not_imported() -> None:
    code = (
        "import sys; from moodlemate.ai import GPT; g = GPT(); assert g.log is None; "
        "g2 = GPT(log='x.db'); sys.exit('sqlite3' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_each_call_is_one_row_with_its_facts_and_never_the_key(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.db"
    gpt = GPT("openai", endpoint=server.url + "/", api_key=TEST_KEY, retry=FAST_RETRY, log=path)
    server.enqueue(Fault.status(503), Reply(text="a", prompt_tokens=11, completion_tokens=7))
    completion = gpt.complete("gpt-4o-mini", "sys", "first")
    assert "".join(gpt.stream("gpt-4o-mini", "", "second")) != ""
    asyncio.run(gpt.acomplete("gpt-4o-mini", "", "third"))
    server.enqueue(Fault.status(400))
    with pytest.raises(BadRequestError):
        gpt.complete("gpt-4o-mini", "", "fourth")
    server.enqueue(Reply(text="?", model="my-local-model"))
    gpt.complete("my-local-model", "", "fifth")

    rows = _rows(path)
    assert len(rows) == len(server.chat_requests) - 1  # the 503 was a retry of the first call
    first, streamed, awaited, failed, unpriced = rows
    assert first["provider"] == "openai"
    assert first["endpoint"] == server.origin  # the origin only: no path
    assert (first["requested_model"], first["served_model"]) == ("gpt-4o-mini", "gpt-4o-mini")
    assert (first["prompt_tokens"], first["completion_tokens"]) == (11, 7)
    assert Decimal(first["cost"]) == completion.cost  # exact, as text
    assert first["attempts"] == 2
    assert first["outcome"] == "ok"
    assert first["request_id"] == completion.request_id
    assert first["latency_ms"] > 0
    assert first["time"].endswith("Z")
    assert first["prompt"] is None
    assert first["reply"] is None
    assert streamed["outcome"] == awaited["outcome"] == "ok"
    assert failed["outcome"] == "BadRequestError"
    assert failed["cost"] is None
    assert unpriced["outcome"] == "ok"
    assert unpriced["cost"] is None
    assert TEST_KEY.encode() not in _file_bytes(path)


def test_the_config_file_names_the_log_and_text_is_opt_in(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "from-config.db"
    config = tmp_path / "xdg-config" / "moodlemate-ai" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'log = "{path}"\n')
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY)
    assert gpt.log is not None
    assert gpt.log.path == path
    gpt.log.text = True
    gpt.chat_completion("gpt-4o-mini", "be brief", "hello there")
    (row,) = _rows(path)
    assert json.loads(row["prompt"])[-1] == {"role": "user", "content": "hello there"}
    assert row["reply"] == "Echo: hello there"
    assert GPT("openai", endpoint=server.url, log=False).log is None


_WORKER = """
import json, sys, threading
from moodlemate.ai import GPT, RetryPolicy
endpoint, path, threads, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
gpt = GPT("openai", endpoint=endpoint, api_key="sk-test-4f1c2e9b7a6d5c3e", log=path,
          retry=RetryPolicy(attempts=1, deadline=30.0, attempt_timeout=10.0))
def work(n):
    for i in range(calls):
        gpt.complete("gpt-4o-mini", "", f"worker {n} call {i}")
ts = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
for t in ts: t.start()
for t in ts: t.join(60)
print(json.dumps({"calls": gpt.ledger.calls, "cost": str(gpt.ledger.cost),
                  "dropped": gpt.log.dropped}))
"""


def test_four_processes_of_eight_threads_write_one_log_completely(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """A fresh file: the workers also race to create and migrate it."""
    path = tmp_path / "shared.db"
    server.responder = lambda body: Reply(prompt_tokens=123, completion_tokens=45)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, server.url, str(path), "8", "10"],
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
        assert "spend log" not in err  # no write was dropped, so no warning
        reports.append(json.loads(out))
    assert [r["dropped"] for r in reports] == [0, 0, 0, 0]
    assert sum(r["calls"] for r in reports) == 320 == len(server.chat_requests)
    spend_log = SpendLog(path)
    records = spend_log.calls()
    assert len(records) == 320
    _, total = totals(records, "day")
    assert total.cost == sum((Decimal(r["cost"]) for r in reports), Decimal(0))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_locked_log_delays_a_call_by_at_most_its_busy_timeout_and_warns_once(
    server: LoopbackServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "locked.db"
    spend_log = SpendLog(path, busy_timeout=0.3)
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, log=spend_log)
    gpt.complete("gpt-4o-mini", "", "before")  # creates the file
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in a long write
    try:
        with caplog.at_level(logging.WARNING, logger="moodlemate.ai._spend_log"):
            started = time.monotonic()
            for _ in range(3):
                assert gpt.chat_completion("gpt-4o-mini", "", "during") == "Echo: during"
            elapsed = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert elapsed < 3 * 0.3 + 2.0  # each waits its busy timeout, no longer
    assert spend_log.dropped == 3
    warnings = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1
    gpt.complete("gpt-4o-mini", "", "after")
    assert [r["outcome"] for r in _rows(path)] == ["ok", "ok"]


def test_a_corrupt_or_unwritable_log_never_fails_a_call(
    server: LoopbackServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database, " * 512)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    for target in (corrupt, blocked / "sub" / "x.db"):
        spend_log = SpendLog(target)
        gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, log=spend_log)
        with caplog.at_level(logging.WARNING, logger="moodlemate.ai._spend_log"):
            assert gpt.chat_completion("gpt-4o-mini", "", "answered") == "Echo: answered"
        assert spend_log.dropped == 1
    assert corrupt.read_bytes().startswith(b"not a database")  # left as it was


def test_a_newer_schema_is_read_but_not_written(server: LoopbackServer, tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, log=path)
    gpt.complete("gpt-4o-mini", "", "one")
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    newer = SpendLog(path)
    gpt.log = newer
    gpt.complete("gpt-4o-mini", "", "two")
    assert newer.dropped == 1
    assert [r.outcome for r in newer.recent(5)] == ["ok"]


def test_threads_in_one_process_share_one_log(server: LoopbackServer, tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, log=path)

    def work() -> None:
        for _ in range(10):
            gpt.complete("gpt-4o-mini", "", "hi")

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(_rows(path)) == 160 == gpt.ledger.calls
    assert gpt.log is not None
    assert gpt.log.dropped == 0


def test_exact_totals_say_unknown_for_unpriced_groups(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "totals.db"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, log=path)
    for _ in range(3):
        gpt.complete("gpt-4o-mini", "", "a b c")
    server.responder = lambda body: Reply(model=body["model"])
    gpt.complete("local-thing", "", "x")
    groups, total = totals(SpendLog(path).calls(), "model")
    by_key = {g.key: g for g in groups}
    assert by_key["local-thing"].cost is None
    assert by_key["gpt-4o-mini"].cost == gpt.ledger.cost == total.cost
    assert total.unpriced_calls == 1
    assert os.path.getsize(path) > 0


def test_remote_batch_answers_are_logged_with_their_batch_id(tmp_path: Path) -> None:
    from moodlemate.ai.batch import parse_items
    from moodlemate.ai.batch.remote import run_remote_batch

    key = "sk-test-remote-0123456789abcdef"
    lines = [json.dumps({"id": f"q{i}", "user": f"question {i}"}) for i in range(7)]
    with LoopbackServer(api_key=key) as srv:
        srv.batches.speed = 100_000.0
        path = tmp_path / "batch.db"
        gpt = GPT("openai", endpoint=srv.url, api_key=key, log=path)
        items = parse_items(lines, default_model="gpt-4o-mini")
        run_remote_batch(
            gpt, items, tmp_path / "out.jsonl", poll_interval=0.01, max_requests_per_file=4
        )
        batch_ids = {b["id"] for b in srv.batches.created}
    rows = _rows(path)
    assert len(rows) == 7
    assert {r["batch_id"] for r in rows} == batch_ids
    assert len(batch_ids) == 2
    assert sum(Decimal(r["cost"]) for r in rows) == gpt.ledger.cost  # at batch prices
    assert {r["outcome"] for r in rows} == {"ok"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_opens_its_own_connection(tmp_path: Path) -> None:
    """As a pre-forking web server's workers would, after the parent wrote (and so opened)."""
    from moodlemate.ai._provider import ChatRequest, Completion, Message

    spend_log = SpendLog(tmp_path / "forked.db")
    request = ChatRequest(model="gpt-4o-mini", messages=(Message("user", "hi"),))
    done = Completion(text="ok", model="gpt-4o-mini", provider="openai", cost=Decimal("0.001"))
    assert spend_log.record_call(provider="openai", endpoint=None, request=request, completion=done)
    parent_connection = spend_log._connection()
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            if spend_log._connection() is parent_connection:
                os._exit(2)  # SQLite forbids carrying a connection across fork()
            ok = all(
                spend_log.record_call(
                    provider="openai", endpoint=None, request=request, completion=done
                )
                for _ in range(5)
            )
            os._exit(0 if ok else 3)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert codes == [0, 0, 0]
    assert spend_log.record_call(provider="openai", endpoint=None, request=request, completion=done)
    assert len(spend_log.calls()) == 17
