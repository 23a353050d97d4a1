"""Remote batch result files larger than one response body: streamed to disk in chunks and
collected in one run, with memory that does not grow with the file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT, ResponseLimits
from moodlemate.ai.batch import parse_items
from moodlemate.ai.batch.remote import run_remote_batch
from moodlemate.ai.testing import LoopbackServer, Reply

KEY = "sk-test-remote-0123456789abcdef"
LONG = 60_000  # characters per reply: 300 of them make an 18 MB output file


@pytest.fixture
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer(api_key=KEY) as server:
        server.batches.speed = 100_000.0
        yield server


def _items(n: int, prefix: str = "q") -> list[Any]:
    lines = [json.dumps({"id": f"{prefix}{i}", "user": f"question {i}"}) for i in range(n)]
    return parse_items(lines, default_model="gpt-4o-mini")


def _long_replies(server: LoopbackServer) -> None:
    server.responder = lambda body: Reply(text="y" * LONG, completion_tokens=LONG // 4)


def _output_sizes(server: LoopbackServer) -> list[int]:
    return [len(f.content) for f in server.batches.files.values() if f.purpose == "batch_output"]


def _downloads(server: LoopbackServer) -> list[Any]:
    return [r for r in server.requests if r.path.endswith("/content")]


def test_an_18_mb_output_file_is_collected_in_one_run(srv: LoopbackServer, tmp_path: Path) -> None:
    _long_replies(srv)
    gpt = GPT("openai", endpoint=srv.url, api_key=KEY)
    out = tmp_path / "out.jsonl"
    summary = run_remote_batch(gpt, _items(300), out, poll_interval=0.01)
    assert _output_sizes(srv)[0] > 18_000_000 > gpt.limits.max_body_bytes
    assert (summary.succeeded, summary.unanswered, summary.timed_out) == (300, 0, False)
    assert len(_downloads(srv)) == 1  # one request, read to the end
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 300
    assert all(r["ok"] and len(r["text"]) == LONG for r in records)


def test_a_lowered_body_limit_still_collects_everything_in_one_run(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    gpt = GPT("openai", endpoint=srv.url, api_key=KEY, limits=ResponseLimits(max_body_bytes=4096))
    summary = run_remote_batch(gpt, _items(500), tmp_path / "out.jsonl", poll_interval=0.01)
    assert _output_sizes(srv)[0] > 50 * 4096
    assert (summary.succeeded, summary.unanswered) == (500, 0)
    assert len(_downloads(srv)) == 1


def test_a_result_line_longer_than_any_honest_one_is_skipped_in_bounded_reads(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    _long_replies(srv)  # 60 KB lines against a 4 KiB body limit (plus 64 KiB of envelope)
    srv.responder = lambda body: Reply(
        text="z" * (200_000 if body["messages"][-1]["content"] == "question 1" else 10)
    )
    gpt = GPT("openai", endpoint=srv.url, api_key=KEY, limits=ResponseLimits(max_body_bytes=4096))
    out = tmp_path / "out.jsonl"
    summary = run_remote_batch(gpt, _items(3), out, poll_interval=0.01)
    assert (summary.succeeded, summary.failed) == (2, 1)
    failed = [json.loads(x) for x in out.read_text().splitlines() if not json.loads(x)["ok"]]
    assert [r["id"] for r in failed] == ["q1"]


_MEASURED = """
import json, resource, sys
from moodlemate.ai import GPT
from moodlemate.ai.batch import parse_items
from moodlemate.ai.batch.remote import run_remote_batch
endpoint, key, out = sys.argv[1:4]
def items(n, prefix):
    return parse_items([json.dumps({"id": f"{prefix}{i}", "user": f"question {i}"})
                        for i in range(n)], default_model="gpt-4o-mini")
gpt = GPT("openai", endpoint=endpoint, api_key=key)
run_remote_batch(gpt, items(20, "warm"), out + ".warm", poll_interval=0.01)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
summary = run_remote_batch(gpt, items(300, "q"), out, poll_interval=0.01)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"succeeded": summary.succeeded, "grew_kib": after - before}))
"""


def test_collecting_an_18_mb_file_does_not_hold_it_in_memory(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    _long_replies(srv)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, srv.url, KEY, str(tmp_path / "out.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["succeeded"] == 300
    assert sum(_output_sizes(srv)) > 18_000_000
    # Holding the file (or its 300 replies) at once would add at least 18 MB to the peak.
    assert measured["grew_kib"] < 8 * 1024, measured
