"""Batch output under hostile conditions: a disk that fills mid-write, a standard error
whose reader left, device files as OUTPUT, and no key at all. Real files, real pipes,
real subprocesses."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT, EmptyReplyError
from moodlemate.ai.batch import ResultLog, read_items, run_batch
from moodlemate.ai.testing import LoopbackServer, Reply

COMMAND = [sys.executable, "-m", "moodlemate.ai.cli"]


class FullDisk(ResultLog):
    """The real output file, on a disk that fills up at write(2) number ``fail_at``: that
    call stores only part of the line, and the next one fails with ENOSPC. (ResultLog calls
    ``_write_some`` under its lock, so the count is exact with many workers.)"""

    def __init__(self, path: Path, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls = 0
        super().__init__(path)

    def _write_some(self, data: memoryview) -> int:
        self.calls += 1
        if self.calls == self.fail_at:
            return os.write(self._fd, data[: len(data) // 2])  # really on disk: a fragment
        if self.calls == self.fail_at + 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super()._write_some(data)


def _lines(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n")
    return [json.loads(line) for line in raw.splitlines()]


def test_a_write_that_fails_part_way_leaves_only_complete_lines(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with FullDisk(out, fail_at=2) as log:
        log.write({"id": 1, "ok": True, "text": "one"})
        with pytest.raises(OSError, match="No space left"):
            log.write({"id": 2, "ok": True, "text": "two " * 50})
        log.write({"id": 3, "ok": True, "text": "three"})  # the disk has room again
    assert [r["id"] for r in _lines(out)] == [1, 3]
    with ResultLog(out) as reopened:  # a rerun resumes: no damaged line in the middle
        assert reopened.answered == {1, 3}
        assert reopened.dropped_bytes == 0


def test_a_batch_that_hits_a_full_disk_stops_and_a_rerun_finishes_it(
    gpt: GPT, server: LoopbackServer, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "user": f"q{i}"}) + "\n" for i in range(60)))
    items = read_items(source, default_model="gpt-4o-mini")
    out = tmp_path / "out.jsonl"
    server.responder = lambda body: Reply(delay=0.005)
    with FullDisk(out, fail_at=10) as log, pytest.raises(OSError, match="No space left"):
        run_batch(gpt, items, log, concurrency=8)
    first = _lines(out)  # every line whole, even those written after the failure
    assert 9 <= len(first) < 60
    summary = run_batch(gpt, items, out, concurrency=8)
    assert summary.skipped == len(first)
    assert sorted(r["id"] for r in _lines(out) if r["ok"]) == list(range(60))


def _write_input(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"id": f"q{i}", "user": f"q{i}"}) + "\n" for i in range(n)))


def test_a_closed_stderr_pipe_does_not_stop_the_batch(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """`moodlemate-ai batch ... 2>&1 >/dev/null | head -1`: the reader of stderr leaves."""
    _write_input(tmp_path / "in.jsonl", 300)
    server.responder = lambda body: Reply(delay=0.015)  # 300 x 15 ms over 8 workers
    proc = subprocess.Popen(
        [*COMMAND, "batch", "in.jsonl", "-o", "out.jsonl", "--endpoint", server.url, "-c", "8"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # what `head -1` reads ...
    proc.stderr.close()  # ... before it exits, closing the pipe
    assert proc.wait(timeout=60) == 0
    assert first.startswith(b"batch: ")
    records = _lines(tmp_path / "out.jsonl")
    assert len(records) == 300
    assert all(r["ok"] for r in records)
    assert len(server.chat_requests) == 300


def _limit_memory() -> None:
    """Keep a runaway read (the old /dev/zero behaviour) from taking the machine's memory."""
    limit = 2 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("device", ["/dev/full", "/dev/zero", "/dev/null"])
def test_a_device_as_output_is_a_clear_usage_error(
    server: LoopbackServer, tmp_path: Path, device: str
) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    _write_input(tmp_path / "in.jsonl", 5)
    out = subprocess.run(
        [*COMMAND, "batch", "in.jsonl", "-o", device, "--endpoint", server.url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert out.returncode == 2, out.stderr
    assert "character device" in out.stderr
    assert "must be a regular file" in out.stderr
    assert "Traceback" not in out.stderr
    assert server.requests == []


def test_a_batch_without_any_key_exits_2_before_sending_or_writing(tmp_path: Path) -> None:
    _write_input(tmp_path / "in.jsonl", 40)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MOODLEMATE_"))}
    out = subprocess.run(
        [*COMMAND, "batch", "in.jsonl", "-o", "out.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2, out.stderr
    assert "MissingAPIKeyError: no API key for openai" in out.stderr
    assert "nothing was sent" in out.stderr
    assert "finished" not in out.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_an_empty_reply_is_a_failed_record_with_its_usage(
    gpt: GPT, server: LoopbackServer, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "r", "user": "think", "model": "o1", "max_tokens": 50}))
    server.enqueue(
        Reply(text="", finish_reason="length", completion_tokens=50, reasoning_tokens=50)
    )
    out = tmp_path / "out.jsonl"
    summary = run_batch(gpt, read_items(source, default_model="gpt-4o-mini"), out)
    (record,) = _lines(out)
    assert record["ok"] is False
    assert record["error"]["type"] == EmptyReplyError.__name__
    assert "50 reasoning tokens" in record["error"]["message"]
    assert record["usage"]["reasoning_tokens"] == 50
    assert record["cost"] is not None
    assert summary.failed == 1
    assert summary.usage.reasoning_tokens == 50
