"""Remote batches end to end: the Python API and ``moodlemate-ai batch --remote`` against the
loopback server's Batch API, with kills, expiries, cancels, cut downloads and limits."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT
from moodlemate.ai.batch import BatchInterrupted, parse_items
from moodlemate.ai.batch.remote import (
    RemoteBatchError,
    cancel_remote_batch,
    run_remote_batch,
)
from moodlemate.ai.errors import UnsupportedFeatureError, ValidationError
from moodlemate.ai.testing import BatchFate, LoopbackServer

KEY = "sk-test-remote-0123456789abcdef"
COMMAND = [sys.executable, "-m", "moodlemate.ai.cli"]


@pytest.fixture
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer(api_key=KEY) as server:
        server.batches.speed = 100_000.0  # a 10-minute batch takes 6 ms
        yield server


def _gpt(server: LoopbackServer) -> GPT:
    return GPT("openai", endpoint=server.url, api_key=KEY)


def _items(n: int, model: str = "gpt-4o-mini") -> list[Any]:
    lines = [json.dumps({"id": f"q{i}", "user": f"question {i}"}) for i in range(n)]
    return parse_items(lines, default_model=model)


def _write_input(path: Path, n: int) -> list[str]:
    ids = [f"q{i}" for i in range(n)]
    path.write_text("".join(json.dumps({"id": i, "user": f"question {i}"}) + "\n" for i in ids))
    return ids


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _answered(path: Path) -> Counter[Any]:
    return Counter(r["id"] for r in _records(path) if r["ok"])


def _tokens(server: LoopbackServer) -> Counter[str]:
    """How often each part (by its metadata token) was submitted."""
    return Counter(
        str((b["metadata"] or {}).get("moodlemate_part")) for b in server.batches.created
    )


def test_items_are_answered_once_at_batch_prices_into_local_records(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    gpt = _gpt(srv)
    out = tmp_path / "out.jsonl"
    seen: list[tuple[int, int]] = []
    summary = run_remote_batch(
        gpt,
        _items(25),
        out,
        poll_interval=0.01,
        max_requests_per_file=10,
        progress=lambda s: seen.append((s.remote_completed, s.remote_total)),
    )
    assert (summary.succeeded, summary.failed, summary.unanswered) == (25, 0, 0)
    assert (summary.batches, summary.submitted) == (3, 3)
    assert seen
    assert [
        len(json.loads(b"[" + f.content.replace(b"\n", b",").rstrip(b",") + b"]"))
        for f in srv.batches.files.values()
        if f.purpose == "batch"
    ] == [10, 10, 5]
    records = _records(out)
    assert _answered(out) == Counter(f"q{i}" for i in range(25))
    local_keys = {
        "id",
        "ok",
        "text",
        "model",
        "served_by",
        "finish_reason",
        "usage",
        "cost",
        "attempts",
        "seconds",
        "request_id",
        "error",
    }
    assert all(set(r) == local_keys for r in records)
    first = next(r for r in records if r["id"] == "q0")
    assert first["text"] == "Echo: question 0"
    assert first["request_id"].startswith("req_")
    # gpt-4o-mini at batch prices: $0.075 in, $0.30 out per million (half of standard)
    usage = first["usage"]
    expected = (
        Decimal(usage["prompt_tokens"]) * Decimal("0.075")
        + Decimal(usage["completion_tokens"]) * Decimal("0.30")
    ) / 1_000_000
    assert Decimal(first["cost"]) == expected
    assert gpt.ledger.calls == 25
    assert gpt.ledger.cost == summary.cost == sum(Decimal(r["cost"]) for r in records)
    assert not srv.chat_requests  # nothing went through the live endpoint
    assert {b["endpoint"] for b in srv.batches.created} == {"/v1/chat/completions"}
    assert {b["completion_window"] for b in srv.batches.created} == {"24h"}

    again = run_remote_batch(gpt, _items(25), out, poll_interval=0.01)
    assert (again.skipped, again.submitted) == (25, 0)
    assert len(srv.batches.created) == 3
    assert not list(tmp_path.glob("*.part"))  # downloads are removed once collected


def test_reasoning_model_bodies_follow_the_live_mapping(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    lines = [json.dumps({"id": 1, "system": "Be brief.", "user": "hi", "max_tokens": 50})]
    items = parse_items(lines, default_model="o1-mini")
    summary = run_remote_batch(_gpt(srv), items, tmp_path / "o.jsonl", poll_interval=0.01)
    assert summary.succeeded == 1  # the strict server would refuse max_tokens or a system turn
    uploaded = next(f for f in srv.batches.files.values() if f.purpose == "batch")
    body = json.loads(uploaded.content)["body"]
    assert body["max_completion_tokens"] == 50
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert json.loads(uploaded.content)["custom_id"] == "1"
    assert _records(tmp_path / "o.jsonl")[0]["id"] == 1  # the int id comes back as an int


def test_files_stay_within_request_and_byte_limits_one_model_each(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    lines = [
        json.dumps({"id": i, "user": "x" * (i % 7 * 40), "model": ["gpt-4o", "gpt-4o-mini"][i % 2]})
        for i in range(60)
    ]
    items = parse_items(lines, default_model="gpt-4o-mini")
    srv.batches.max_bytes = 2_000
    summary = run_remote_batch(
        _gpt(srv),
        items,
        tmp_path / "o.jsonl",
        poll_interval=0.01,
        max_requests_per_file=8,
        max_bytes_per_file=2_000,
    )
    assert summary.succeeded == 60
    inputs = [f for f in srv.batches.files.values() if f.purpose == "batch"]
    for stored in inputs:
        lines_in = stored.content.splitlines()
        assert len(lines_in) <= 8
        assert len(stored.content) <= 2_000
        assert len({json.loads(line)["body"]["model"] for line in lines_in}) == 1
    assert all(b["status"] != "failed" for b in srv.batches.created)
    with pytest.raises(RemoteBatchError, match="more than one batch input file may hold"):
        run_remote_batch(
            _gpt(srv), _items(1), tmp_path / "p.jsonl", poll_interval=0.01, max_bytes_per_file=50
        )
    with pytest.raises(ValidationError, match="max_requests_per_file"):
        run_remote_batch(
            _gpt(srv),
            _items(1),
            tmp_path / "p.jsonl",
            poll_interval=0.01,
            max_requests_per_file=50_001,
        )


def test_failed_and_cancelled_items_are_recorded_and_resubmitted_by_a_rerun(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"
    srv.batches.script(BatchFate.failed("line 3 is broken", code="invalid_json_line"))
    first = run_remote_batch(
        _gpt(srv), _items(20), out, poll_interval=0.01, max_requests_per_file=10
    )
    assert (first.succeeded, first.failed, first.unanswered) == (10, 10, 10)
    failed = [r for r in _records(out) if not r["ok"]]
    assert {r["error"]["code"] for r in failed} == {"batch_failed"}
    assert all("line 3 is broken" in r["error"]["message"] for r in failed)
    second = run_remote_batch(_gpt(srv), _items(20), out, poll_interval=0.01)
    assert (second.skipped, second.succeeded, second.submitted) == (10, 10, 1)
    assert _answered(out) == Counter(f"q{i}" for i in range(20))
    # the failed batch ran nothing; its items ran once, in the rerun's batch
    assert Counter(srv.batches.submitted_custom_ids()) == Counter(f"q{i}" for i in range(20))
    assert len(srv.batches.created) == 3


def test_cancel_records_the_unfinished_items(srv: LoopbackServer, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    srv.batches.speed = 0.0  # the clock only moves when the test says so
    waited = run_remote_batch(_gpt(srv), _items(10), out, poll_interval=0.01, max_wait=0.05)
    assert waited.timed_out
    assert waited.waiting == 1
    srv.batches.advance(31 + 300)  # half way through
    assert cancel_remote_batch(_gpt(srv), out)[0][1] == "cancelling"
    srv.batches.advance(60)
    done = run_remote_batch(_gpt(srv), _items(10), out, poll_interval=0.01)
    assert (done.succeeded, done.failed, done.submitted) == (5, 5, 0)
    cancelled = [r for r in _records(out) if not r["ok"]]
    assert {r["error"]["code"] for r in cancelled} == {"batch_cancelled"}
    assert cancel_remote_batch(_gpt(srv), out) == []


def test_polling_is_bounded_and_a_rerun_resumes_without_resubmitting(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"
    srv.batches.speed = 1.0  # a real-time batch: it cannot finish while we wait
    started = time.monotonic()
    summary = run_remote_batch(_gpt(srv), _items(5), out, poll_interval=0.05, max_wait=0.3)
    assert time.monotonic() - started < 5
    assert summary.timed_out
    assert summary.succeeded == 0
    polls = [r for r in srv.requests if r.method == "GET" and "/batches/" in r.path]
    assert 2 <= len(polls) <= 10  # every poll_interval, not in a busy loop
    srv.batches.advance(10_000)
    resumed = run_remote_batch(_gpt(srv), _items(5), out, poll_interval=0.05)
    assert (resumed.succeeded, resumed.submitted) == (5, 0)
    assert len(srv.batches.created) == 1
    with pytest.raises(ValidationError, match="poll_interval"):
        run_remote_batch(_gpt(srv), _items(5), out, poll_interval=0)


def test_a_cut_download_resumes_where_it_stopped(srv: LoopbackServer, tmp_path: Path) -> None:
    srv.cut_downloads = 2  # the first attempt and its first retry are both cut
    gpt = GPT("openai", endpoint=srv.url, api_key=KEY, retry=_fast_retry())
    summary = run_remote_batch(gpt, _items(300), tmp_path / "o.jsonl", poll_interval=0.01)
    assert summary.succeeded == 300
    content = [r for r in srv.requests if r.path.endswith("/content")]
    assert len(content) == 3
    assert content[0].headers.get("range") is None
    assert all(r.headers.get("range", "").startswith("bytes=") for r in content[1:])


def test_ctrl_c_while_waiting_keeps_the_state(srv: LoopbackServer, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    srv.batches.speed = 0.0

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted):
        run_remote_batch(_gpt(srv), _items(4), out, poll_interval=0.01, sleep=interrupt)
    state = json.loads(Path(str(out) + ".remote.json").read_text())
    assert state["parts"][0]["batch_id"] == srv.batches.created[0]["id"]
    srv.batches.advance(10_000)
    assert run_remote_batch(_gpt(srv), _items(4), out, poll_interval=0.01).succeeded == 4
    assert len(srv.batches.created) == 1


def test_a_lost_batch_id_is_found_by_its_token_not_submitted_again(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"
    srv.batches.speed = 0.0
    run_remote_batch(_gpt(srv), _items(3), out, poll_interval=0.01, max_wait=0)
    state_file = Path(str(out) + ".remote.json")
    state = json.loads(state_file.read_text())
    state["parts"][0]["batch_id"] = None  # as if killed right after the create request
    state["parts"][0]["status"] = "planned"
    state_file.write_text(json.dumps(state))
    srv.batches.advance(10_000)
    summary = run_remote_batch(_gpt(srv), _items(3), out, poll_interval=0.01, max_wait=5)
    assert (summary.succeeded, summary.submitted) == (3, 0)
    assert len(srv.batches.created) == 1


def test_providers_without_remote_batches_refuse_before_anything(tmp_path: Path) -> None:
    gpt = GPT("openrouter", api_key="sk-or-" + "0" * 40)
    items = _items(2, model="openai/gpt-4o-mini")
    with pytest.raises(UnsupportedFeatureError, match="does not offer remote batches"):
        run_remote_batch(gpt, items, tmp_path / "o.jsonl", poll_interval=0.01)
    assert not Path(str(tmp_path / "o.jsonl") + ".remote.json").exists()


def test_a_damaged_state_file_is_refused(srv: LoopbackServer, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    Path(str(out) + ".remote.json").write_text("{not json")
    from moodlemate.ai.batch import BatchOutputError

    with pytest.raises(BatchOutputError, match="not a remote batch state file"):
        run_remote_batch(_gpt(srv), _items(2), out, poll_interval=0.01)
    assert not srv.requests


def _fast_retry() -> Any:
    from support import FAST_RETRY

    return FAST_RETRY


# -- the command line ------------------------------------------------------------------------


def _env(server: LoopbackServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MOODLEMATE_ENDPOINT=server.url, MOODLEMATE_API_KEY=KEY)
    return env


def _cli(
    server: LoopbackServer, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "batch", "in.jsonl", "-o", "out.jsonl", *args],
        capture_output=True,
        text=True,
        env=_env(server),
        timeout=timeout,
    )


def _usage(raw: dict[str, int]) -> Any:
    from moodlemate.ai._usage import Usage

    return Usage(prompt_tokens=raw["prompt_tokens"], completion_tokens=raw["completion_tokens"])


def test_cli_interrupted_five_times_never_submits_twice_and_loses_nothing(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    ids = _write_input(tmp_path / "in.jsonl", 10_000)
    srv.batches.speed = 400.0  # each batch takes about 1.7 s of real time
    rng = random.Random(18)
    args = ("--remote", "--poll-interval", "0.05", "--max-requests-per-file", "1000")
    env = _env(srv)
    for round_ in range(5):
        child = subprocess.Popen(
            [*COMMAND, "batch", "in.jsonl", "-o", "out.jsonl", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        time.sleep(rng.uniform(0.3, 2.5))
        child.send_signal(signal.SIGKILL if round_ % 2 else signal.SIGINT)
        _, err = child.communicate(timeout=30)
        # -SIGINT: interrupted while the interpreter was still starting, before any handler
        assert child.returncode in (-signal.SIGKILL, -signal.SIGINT, 130, 0, 1), err
    done = _cli(srv, *args)
    assert done.returncode == 0, done.stderr
    assert "at batch prices" in done.stderr
    records = _records(tmp_path / "out.jsonl")
    assert _answered(tmp_path / "out.jsonl") == Counter(ids)  # every id answered exactly once
    assert all(r["ok"] for r in records)
    assert max(_tokens(srv).values()) == 1  # the server's log: no part submitted twice
    assert Counter(srv.batches.submitted_custom_ids()) == Counter(ids)  # no request twice
    assert len(srv.batches.created) == 10
    standard = GPT("openai", api_key=KEY).provider.price("gpt-4o-mini")
    assert standard is not None
    assert (
        sum(Decimal(r["cost"]) for r in records)
        == sum(standard.cost(_usage(r["usage"])) for r in records) / 2
    )  # half of standard, every record


def test_cli_expired_batch_runs_the_unfinished_30_percent_locally(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    ids = _write_input(tmp_path / "in.jsonl", 100)
    srv.batches.script(BatchFate.expired(done=0.7))
    first = _cli(srv, "--remote", "--poll-interval", "0.01")
    assert first.returncode == 1, first.stderr
    assert "failed     30" in first.stderr
    expired = [r for r in _records(tmp_path / "out.jsonl") if not r["ok"]]
    assert {r["error"]["code"] for r in expired} == {"batch_expired"}
    assert not srv.chat_requests
    second = _cli(srv, "--remote", "--retry-failed-locally", "--poll-interval", "0.01")
    assert second.returncode == 0, second.stderr
    assert "locally    30 succeeded" in second.stderr
    asked = [r.body["messages"][-1]["content"] for r in srv.chat_requests]
    assert sorted(asked) == sorted(f"question {r['id']}" for r in expired)
    assert len(srv.batches.created) == 1  # nothing was resubmitted remotely
    assert _answered(tmp_path / "out.jsonl") == Counter(ids)


def test_cli_cancel_and_usage_errors(srv: LoopbackServer, tmp_path: Path) -> None:
    _write_input(tmp_path / "in.jsonl", 10)
    srv.batches.speed = 0.0
    waiting = _cli(srv, "--remote", "--poll-interval", "0.01", "--max-wait", "0.1")
    assert waiting.returncode == 1
    assert "rerun to resume polling" in waiting.stderr
    cancelled = _cli(srv, "--cancel")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelling" in cancelled.stderr
    assert srv.batches.retrieve(srv.batches.created[0]["id"])[1]["status"] == "cancelling"
    lonely = _cli(srv, "--retry-failed-locally")
    assert lonely.returncode == 2
    assert "needs --remote" in lonely.stderr
    env = _env(srv) | {"MOODLEMATE_PROVIDER": "openrouter"}
    refused = subprocess.run(
        [*COMMAND, "batch", "in.jsonl", "-o", "other.jsonl", "--remote", "-m", "openai/gpt-4o"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert "does not offer remote batches" in refused.stderr
    assert not (tmp_path / "other.jsonl").exists()  # nothing sent, nothing left behind
    assert not (tmp_path / "other.jsonl.remote.json").exists()
    assert KEY not in refused.stderr + waiting.stderr + cancelled.stderr
