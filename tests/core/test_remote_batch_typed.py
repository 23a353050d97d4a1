"""Remote batch lines with a schema: sent as a live typed call's first attempt is, every reply
checked by the live validator, invalid answers counted and recorded with their problems and
cost (a batch cannot ask again), and the schema counted in the budget's hold. Over real HTTP
to the loopback server's Batch API, through the openai SDK's file and batch calls."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jsonschema")

from moodlemate.ai import GPT
from moodlemate.ai.batch import parse_items
from moodlemate.ai.batch.remote import run_remote_batch
from moodlemate.ai.errors import BudgetExceededError
from moodlemate.ai.testing import LoopbackServer, Reply

KEY = "sk-test-remote-0123456789abcdef"
COMMAND = [sys.executable, "-m", "moodlemate.ai.cli", "batch"]
POLL = ["--poll-interval", "0.01"]
BATCH_IN, BATCH_OUT = Decimal("0.075"), Decimal("0.30")  # gpt-4o-mini batch, USD per 1M
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.fixture
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer(api_key=KEY) as server:
        server.batches.speed = 100_000.0
        yield server


def _records(path: Path) -> dict[Any, dict[str, Any]]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _uploaded(server: LoopbackServer) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for stored in server.batches.files.values()
        if stored.purpose == "batch"
        for line in stored.content.splitlines()
    ]


def _batch_cost(usage: dict[str, int]) -> Decimal:
    return (
        Decimal(usage["prompt_tokens"]) * BATCH_IN + Decimal(usage["completion_tokens"]) * BATCH_OUT
    ) / 1_000_000


def test_valid_invalid_wrong_type_and_refused_lines_are_checked_counted_and_costed(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    log = tmp_path / "spend.db"
    gpt = GPT("openai", endpoint=srv.url, api_key=KEY, log=log)
    lines = [
        json.dumps({"id": name, "user": f"Who is {name}?", "schema": PERSON}) for name in "abcd"
    ]
    lines.append(json.dumps({"id": "plain", "user": "no schema here"}))
    items = parse_items(lines, default_model="gpt-4o-mini")
    srv.enqueue(
        Reply(text='{"name": "Ann", "age": 41}', prompt_tokens=90, completion_tokens=12),
        Reply(text='{"name": "Bo", "age": ', prompt_tokens=91, completion_tokens=7),
        Reply(text='{"name": "Cy", "age": "old"}', prompt_tokens=92, completion_tokens=11),
        Reply(refusal="I can't help with that.", prompt_tokens=93, completion_tokens=6),
    )
    summary = run_remote_batch(gpt, items, tmp_path / "out.jsonl", poll_interval=0.01)

    assert (summary.succeeded, summary.failed, summary.invalid) == (2, 3, 2)
    records = _records(tmp_path / "out.jsonl")
    assert records["a"]["ok"] is True
    assert records["a"]["answer"] == {"name": "Ann", "age": 41}
    assert records["a"]["replies"] == 1
    assert records["plain"]["ok"] is True
    assert "answer" not in records["plain"]  # a line without a schema: a text answer
    bad_json, wrong_type, refused = records["b"], records["c"], records["d"]
    assert bad_json["error"]["type"] == "StructuredOutputError"
    assert bad_json["error"]["problems"][0][0].startswith("the answer: not valid JSON")
    assert wrong_type["error"]["type"] == "StructuredOutputError"
    assert wrong_type["error"]["problems"] == [["age: 'old' is not of type 'integer'"]]
    assert refused["error"]["type"] == "RefusalError"
    assert "problems" not in refused["error"]
    # Every reply was billed at the batch price, answered or not, and the record says so.
    for record in (records[i] for i in "abcd"):
        assert Decimal(record["cost"]) == _batch_cost(record["usage"])
    assert Decimal(bad_json["cost"]) == (91 * BATCH_IN + 7 * BATCH_OUT) / 1_000_000
    total = sum((Decimal(r["cost"]) for r in records.values()), Decimal(0))
    assert summary.cost == gpt.ledger.cost == total
    assert gpt.ledger.calls == 5
    assert summary.usage.prompt_tokens == sum(r["usage"]["prompt_tokens"] for r in records.values())
    with sqlite3.connect(log) as db:
        rows = db.execute("SELECT cost, batch_id FROM calls WHERE batch_id IS NOT NULL").fetchall()
    assert len(rows) == 5
    assert sum(Decimal(cost) for cost, _ in rows) == total
    assert {batch for _, batch in rows} == {srv.batches.created[0]["id"]}
    assert not srv.chat_requests  # no re-ask went live

    # A rerun submits only what has no answer; the valid ones are not paid for twice.
    srv.enqueue(*(Reply(text='{"name": "Z", "age": 1}') for _ in range(3)))
    again = run_remote_batch(gpt, items, tmp_path / "out.jsonl", poll_interval=0.01)
    assert (again.skipped, again.succeeded, again.invalid) == (2, 3, 0)
    assert sorted(srv.batches.submitted_custom_ids()) == sorted([*"abcd", "plain", *"bcd"])


def test_each_line_is_sent_as_the_live_typed_call_sends_it(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    """Strict json_schema for a model that takes it, json_object plus the schema in the
    instructions for one that takes only JSON mode: byte for byte the live first attempt."""
    gpt = GPT("openai", endpoint=srv.url, api_key=KEY)
    lines = [
        json.dumps({"id": 1, "system": "Be exact.", "user": "Ann, 41", "model": "gpt-4o-mini"}),
        json.dumps({"id": 2, "system": "Be exact.", "user": "Ann, 41", "model": "gpt-3.5-turbo"}),
    ]
    items = parse_items(lines, default_model="gpt-4o-mini", schema=PERSON)
    srv.enqueue(*(Reply(text='{"name": "Ann", "age": 41}') for _ in items))
    summary = run_remote_batch(gpt, items, tmp_path / "out.jsonl", poll_interval=0.01)
    assert summary.succeeded == 2
    assert len(srv.batches.created) == 2  # one model per batch
    sent = {line["custom_id"]: line["body"] for line in _uploaded(srv)}
    for custom_id, model in (("1", "gpt-4o-mini"), ("2", "gpt-3.5-turbo")):
        srv.enqueue(Reply(text='{"name": "Ann", "age": 41}'))
        gpt.parse(model, "Be exact.", "Ann, 41", PERSON, temperature=0.7)
        assert sent[custom_id] == srv.chat_requests[-1].body
    strict = sent["1"]["response_format"]
    assert strict["type"] == "json_schema"
    assert strict["json_schema"]["strict"] is True
    assert strict["json_schema"]["schema"]["additionalProperties"] is False
    assert sent["2"]["response_format"] == {"type": "json_object"}
    assert '"required":["name","age"]' in sent["2"]["messages"][0]["content"]


def test_the_budget_hold_counts_what_the_schema_adds_to_each_prompt(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    """A budget that holds 200 plain lines refuses the same lines with a large schema:
    the schema travels with every request and is billed as prompt tokens."""
    wide = {
        "type": "object",
        "properties": {
            f"field_{n}": {"type": "string", "description": "x" * 40} for n in range(40)
        },
        "required": [f"field_{n}" for n in range(40)],
    }
    lines = [json.dumps({"id": i, "user": "hi", "max_tokens": 20}) for i in range(200)]
    srv.batches.speed = 0.0  # nothing finishes: the holds stay in the state files

    def held(schema: dict[str, Any] | None, out: str) -> Decimal:
        gpt = GPT("openai", endpoint=srv.url, api_key=KEY, budget="10")
        items = parse_items(lines, default_model="gpt-4o-mini", schema=schema)
        run_remote_batch(gpt, items, tmp_path / out, poll_interval=0.01, max_wait=0)
        state = json.loads((tmp_path / f"{out}.remote.json").read_text())
        return Decimal(state["parts"][0]["reserved"])

    plain, typed = held(None, "plain.jsonl"), held(wide, "typed.jsonl")
    from moodlemate.ai.batch import parse_items as parse

    schema_tokens = GPT("openai", api_key=KEY).count_tokens(json.dumps(wide), "gpt-4o-mini")
    # At least most of the schema's tokens per line (its strict form drops the spaces)...
    assert typed - plain >= 200 * Decimal(schema_tokens // 2) * BATCH_IN / 1_000_000
    budget = (plain + typed) / 2
    created = len(srv.batches.created)
    gpt = GPT("openai", endpoint=srv.url, api_key=KEY, budget=str(budget))
    with pytest.raises(BudgetExceededError, match="nothing of it was submitted"):
        run_remote_batch(
            gpt,
            parse(lines, default_model="gpt-4o-mini", schema=wide),
            tmp_path / "refused.jsonl",
            poll_interval=0.01,
            max_wait=0,
        )
    assert len(srv.batches.created) == created  # nothing uploaded or submitted
    assert not (tmp_path / "refused.jsonl.remote.json").exists()
    fits = run_remote_batch(
        gpt,
        parse(lines, default_model="gpt-4o-mini"),
        tmp_path / "fits.jsonl",
        poll_interval=0.01,
        max_wait=0,
    )
    assert fits.submitted == 1  # ...and without the schema the same lines fit


def test_the_command_line_runs_a_schema_batch_remotely(srv: LoopbackServer, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"id": 1, "user": "Ann, 41"}) + "\n" + json.dumps({"id": 2, "user": "Bo"}) + "\n"
    )
    srv.enqueue(Reply(text='{"name": "Ann", "age": 41}'), Reply(text='{"name": "Bo"}'))
    env = dict(os.environ, MOODLEMATE_ENDPOINT=srv.url, MOODLEMATE_API_KEY=KEY)
    done = subprocess.run(
        [*COMMAND, "in.jsonl", "-o", "out.jsonl", "--remote", "--schema", "name, age int", *POLL],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr  # one line has no valid answer
    assert "invalid    1" in done.stderr
    records = _records(tmp_path / "out.jsonl")
    assert records[1]["answer"] == {"name": "Ann", "age": 41}
    assert records[2]["error"]["problems"] == [["age: Field required"]]
    assert not srv.chat_requests
    assert KEY not in done.stderr


STANDARD_IN, STANDARD_OUT = Decimal("0.15"), Decimal("0.60")  # gpt-4o-mini, USD per 1M


def test_reask_goes_on_live_from_each_invalid_batch_reply(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    log = tmp_path / "spend.db"
    gpt = GPT("openai", endpoint=srv.url, api_key=KEY, log=log)
    items = parse_items(
        [json.dumps({"id": name, "user": f"Who is {name}?"}) for name in "abc"],
        default_model="gpt-4o-mini",
        schema=PERSON,
    )
    srv.enqueue(
        Reply(text='{"name": "Ann", "age": 41}', prompt_tokens=30, completion_tokens=10),
        Reply(text="not json", prompt_tokens=31, completion_tokens=3),
        Reply(text='{"name": "Cy"}', prompt_tokens=32, completion_tokens=5),
    )
    # The live re-asks, one line at a time: b is fixed at once, c never complies.
    srv.enqueue(
        Reply(text='{"name": "Bo", "age": 7}', prompt_tokens=80, completion_tokens=10),
        Reply(text='{"name": "Cy", "age": "x"}', prompt_tokens=81, completion_tokens=11),
        Reply(text='{"age": 3}', prompt_tokens=82, completion_tokens=12),
    )
    out = tmp_path / "out.jsonl"
    summary = run_remote_batch(gpt, items, out, poll_interval=0.01, reask=True, concurrency=1)

    assert (summary.succeeded, summary.failed, summary.invalid) == (1, 2, 2)
    reasked = summary.reasked
    assert reasked is not None
    assert (reasked.succeeded, reasked.failed) == (1, 1)
    assert summary.unanswered == 1
    first = srv.chat_requests[0].body["messages"]
    assert first[-2] == {"role": "assistant", "content": "not json"}  # the batch's reply
    assert first[-1]["role"] == "user"
    assert "not valid JSON" in first[-1]["content"]
    assert len(srv.chat_requests) == 3  # c took its 3 replies: the batch's and 2 live ones

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    fixed = lines[-2] if lines[-2]["id"] == "b" else lines[-1]
    assert fixed["ok"] is True
    assert fixed["answer"] == {"name": "Bo", "age": 7}
    assert fixed["replies"] == 2
    batch_b = (31 * BATCH_IN + 3 * BATCH_OUT) / 1_000_000
    live_b = (80 * STANDARD_IN + 10 * STANDARD_OUT) / 1_000_000
    assert Decimal(fixed["cost"]) == batch_b + live_b
    failed = next(r for r in reversed(lines) if r["id"] == "c")
    assert failed["error"]["type"] == "StructuredOutputError"
    assert len(failed["error"]["problems"]) == 3
    assert failed["attempts"] == 3
    live_c = (81 * STANDARD_IN + 11 * STANDARD_OUT + 82 * STANDARD_IN + 12 * STANDARD_OUT) / 10**6
    assert Decimal(failed["cost"]) == (32 * BATCH_IN + 5 * BATCH_OUT) / 1_000_000 + live_c
    assert reasked.cost == live_b + live_c
    assert gpt.ledger.cost == summary.cost + reasked.cost
    with sqlite3.connect(log) as db:
        batch_rows, live_rows = db.execute(
            "SELECT SUM(batch_id IS NOT NULL), SUM(batch_id IS NULL) FROM calls"
        ).fetchone()
    assert (batch_rows, live_rows) == (3, 3)
    # A rerun sends only c again, in a new batch: a and b are answered.
    srv.enqueue(Reply(text='{"name": "Cy", "age": 9}'))
    again = run_remote_batch(gpt, items, out, poll_interval=0.01, reask=True)
    assert (again.skipped, again.succeeded, again.reasked) == (2, 1, None)


def test_a_reask_the_budget_cannot_afford_is_recorded_unsent(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    """The batch's hold fits (batch prices); a live re-ask's worst case at standard prices
    does not: it is refused before sending, recorded, and the batch's reply stays paid once."""
    items = parse_items(
        [json.dumps({"id": 1, "user": "Who?", "max_tokens": 1000})],
        default_model="gpt-4o-mini",
        schema=PERSON,
    )
    srv.enqueue(Reply(text="nope", prompt_tokens=10, completion_tokens=2))
    gpt = GPT("openai", endpoint=srv.url, api_key=KEY, budget="0.00045")
    summary = run_remote_batch(gpt, items, tmp_path / "o.jsonl", poll_interval=0.01, reask=True)
    reasked = summary.reasked
    assert reasked is not None
    assert (reasked.succeeded, reasked.failed) == (0, 1)
    assert isinstance(reasked.stopped_by, BudgetExceededError)
    assert not srv.chat_requests
    last = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[-1])
    assert last["error"]["type"] == "BudgetExceededError"
    assert gpt.ledger.cost == (10 * BATCH_IN + 2 * BATCH_OUT) / 1_000_000


def test_reask_needs_remote_on_the_command_line(srv: LoopbackServer, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": 1, "user": "Ann"}) + "\n")
    env = dict(os.environ, MOODLEMATE_ENDPOINT=srv.url, MOODLEMATE_API_KEY=KEY)
    refused = subprocess.run(
        [*COMMAND, "in.jsonl", "-o", "out.jsonl", "--reask"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "--reask needs --remote" in refused.stderr
    srv.enqueue(Reply(text='{"name": "Ann"}'), Reply(text='{"name": "Ann", "age": 41}'))
    done = subprocess.run(
        [
            *COMMAND,
            "in.jsonl",
            "-o",
            "out.jsonl",
            "--remote",
            "--reask",
            "--schema",
            "name, age int",
            *POLL,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "reasked    1 answered, 0 failed" in done.stderr
    assert _records(tmp_path / "out.jsonl")[1]["answer"] == {"name": "Ann", "age": 41}
