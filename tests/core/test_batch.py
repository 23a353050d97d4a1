"""The batch engine used from Python (the CLI tests drive the same code through the command)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from moodlemate.ai import GPT, InvalidAPIKeyError, ValidationError
from moodlemate.ai.batch import (
    BatchInputError,
    BatchOutputError,
    ResultLog,
    parse_items,
    read_items,
    run_batch,
)
from moodlemate.ai.testing import Fault, LoopbackServer


def _input(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": i, "user": f"q{i}"}) + "\n" for i in range(n)))
    return path


def test_run_batch_answers_reports_progress_and_resumes(
    gpt: GPT, server: LoopbackServer, tmp_path: Path
) -> None:
    items = read_items(_input(tmp_path / "in.jsonl", 10), default_model="gpt-4o-mini")
    server.enqueue(Fault.status(400))
    progress: list[int] = []
    summary = run_batch(
        gpt,
        items,
        tmp_path / "out.jsonl",
        concurrency=4,
        progress=lambda s: progress.append(s.calls),
    )
    assert (summary.succeeded, summary.failed, summary.skipped, summary.remaining) == (9, 1, 0, 0)
    assert sorted(progress) == list(range(1, 11))
    assert summary.usage.total_tokens == sum(
        r["usage"]["total_tokens"]
        for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
        if r["ok"]
    )

    again = run_batch(gpt, items, tmp_path / "out.jsonl")
    assert (again.succeeded, again.failed, again.skipped) == (1, 0, 9)
    assert len(server.chat_requests) == 11


def test_a_malformed_key_in_the_environment_stops_the_batch_before_any_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "pk-not-an-openai-key-123")
    items = read_items(_input(tmp_path / "in.jsonl", 50), default_model="gpt-4o-mini")
    with pytest.raises(InvalidAPIKeyError):
        run_batch(GPT(), items, tmp_path / "out.jsonl", concurrency=2)
    assert (tmp_path / "out.jsonl").read_bytes() == b""  # nothing recorded as failed


def test_parse_items_reports_every_problem_with_its_line() -> None:
    lines = [b'{"id": 1}', b'{"id": 1, "user": "x"}', b"", b'{"id": 1, "user": "y"}', b"\xff"]
    with pytest.raises(BatchInputError) as caught:
        parse_items(lines, default_model="gpt-4o-mini", source="in.jsonl")
    assert caught.value.problems == [
        (1, "missing 'user'"),
        (4, "duplicate id 1 (first on line 2)"),
        (5, "not UTF-8 text (byte 1)"),
    ]
    assert str(caught.value).startswith("in.jsonl: 3 problems, nothing was sent:")


def test_result_log_keeps_an_intact_last_line_without_its_newline(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "ok": true}\n{"id": "b", "ok": true}')
    with ResultLog(out) as log:
        assert log.answered == {"a", "b"}
        assert log.dropped_bytes == 0
        log.write({"id": "c", "ok": False})
    assert out.read_text().splitlines()[-1] == '{"id":"c","ok":false}'
    with pytest.raises(BatchOutputError, match="in use by another batch run"), ResultLog(out):
        ResultLog(out)


def test_run_batch_rejects_a_bad_concurrency(gpt: GPT, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="concurrency must be between 1 and 256"):
        run_batch(gpt, [], tmp_path / "out.jsonl", concurrency=0)


def test_result_log_drops_a_garbled_last_line(tmp_path: Path) -> None:
    """After a power loss the tail of a file can read back as NULs, newline included."""
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "a", "ok": true}\n' + b"\x00" * 7 + b"\n\n")
    with ResultLog(out) as log:
        assert (log.answered, log.dropped_bytes) == ({"a"}, 9)
    assert out.read_bytes() == b'{"id": "a", "ok": true}\n'
