"""Remote batches on the Responses API: Responses-only models, ``api="responses"`` lines and
settings go to batches on ``/v1/responses`` with the body a live call sends, their results read
by the live Responses parser and priced at the batch tier from the Responses usage object; a
file mixing both APIs becomes one batch per endpoint, tracked and collected together. Over
real HTTP to the loopback server's Batch API, through the openai SDK's file and batch calls."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT
from moodlemate.ai.batch import parse_items
from moodlemate.ai.batch.remote import run_remote_batch
from moodlemate.ai.testing import Fault, LoopbackServer, Reply

KEY = "sk-test-remote-0123456789abcdef"
CHAT, RESPONSES = "/v1/chat/completions", "/v1/responses"
# gpt-4o-mini at the batch tier, USD per 1M tokens: half of $0.15 / $0.075 cached / $0.60.
BATCH_IN, BATCH_CACHED, BATCH_OUT = Decimal("0.075"), Decimal("0.0375"), Decimal("0.30")


@pytest.fixture
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer(api_key=KEY) as server:
        server.batches.speed = 100_000.0
        yield server


def _gpt(server: LoopbackServer, **settings: Any) -> GPT:
    return GPT("openai", endpoint=server.url, api_key=KEY, **settings)


def _records(path: Path) -> dict[Any, dict[str, Any]]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _lines_by_batch(server: LoopbackServer) -> dict[str, list[dict[str, Any]]]:
    """Each created batch's endpoint and the request lines of its input file."""
    files = server.batches.files
    return {
        batch["endpoint"]: [
            json.loads(line) for line in files[batch["input_file_id"]].content.splitlines()
        ]
        for batch in server.batches.created
    }


def test_a_responses_only_models_batch_goes_to_v1_responses_with_the_live_body(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    gpt = _gpt(srv)
    lines = [
        json.dumps({"id": 1, "system": "Be brief.", "user": "hi", "max_tokens": 400}),
        json.dumps({"id": 2, "user": "why?", "options": {"reasoning_effort": "high"}}),
    ]
    items = parse_items(lines, default_model="o3-pro")
    srv.enqueue(
        Reply(
            text="hello",
            reasoning="greeting",
            prompt_tokens=12,
            completion_tokens=40,
            reasoning_tokens=30,
        ),
        Reply(text="because", prompt_tokens=9, completion_tokens=5),
    )
    summary = run_remote_batch(gpt, items, tmp_path / "out.jsonl", poll_interval=0.01)
    assert (summary.succeeded, summary.failed) == (2, 0)
    assert [b["endpoint"] for b in srv.batches.created] == [RESPONSES]
    sent = _lines_by_batch(srv)[RESPONSES]
    assert {line["url"] for line in sent} == {RESPONSES}
    records = _records(tmp_path / "out.jsonl")
    assert records[1]["text"] == "hello"  # the reasoning summary stays out of the answer
    assert records[1]["usage"]["reasoning_tokens"] == 30
    assert records[1]["usage"]["completion_tokens"] == 40
    assert records[2]["text"] == "because"
    # o3-pro has no published batch price: its cost is unknown, never guessed.
    assert records[1]["cost"] is None
    assert summary.unpriced == 2
    assert not srv.chat_requests
    assert not srv.response_requests
    # The same lines as live calls send the same bodies.
    gpt.complete("o3-pro", "Be brief.", "hi", max_tokens=400)
    gpt.complete("o3-pro", "", "why?", options={"reasoning_effort": "high"})
    live = [r.body for r in srv.response_requests]
    assert [line["body"] for line in sent] == live
    assert live[1]["reasoning"] == {"effort": "high"}


def test_api_responses_lines_and_settings_are_priced_exactly_at_the_batch_tier(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    lines = [
        json.dumps({"id": "a", "user": "hi " * 150, "options": {"api": "responses"}}),
        json.dumps({"id": "b", "user": "hi"}),
    ]
    srv.enqueue(
        Reply(text="one", prompt_tokens=300, cached_tokens=256, completion_tokens=70),
        Reply(text="two", prompt_tokens=20, completion_tokens=9),
    )
    gpt = _gpt(srv)
    summary = run_remote_batch(
        gpt,
        parse_items(lines, default_model="gpt-4o-mini"),
        tmp_path / "o.jsonl",
        poll_interval=0.01,
    )
    assert summary.succeeded == 2
    assert [b["endpoint"] for b in srv.batches.created] == [RESPONSES, CHAT]
    records = _records(tmp_path / "o.jsonl")
    assert records["a"]["usage"]["cached_tokens"] == 256
    exact = (44 * BATCH_IN + 256 * BATCH_CACHED + 70 * BATCH_OUT) / 1_000_000
    assert Decimal(records["a"]["cost"]) == exact
    assert Decimal(records["b"]["cost"]) == (20 * BATCH_IN + 9 * BATCH_OUT) / 1_000_000
    assert gpt.ledger.cost == summary.cost == exact + Decimal(records["b"]["cost"])

    # GPT(api="responses") sends every line there, as it does every live call.
    created = len(srv.batches.created)
    every = _gpt(srv, api="responses")
    run_remote_batch(
        every,
        parse_items(lines, default_model="gpt-4o-mini"),
        tmp_path / "p.jsonl",
        poll_interval=0.01,
    )
    assert [b["endpoint"] for b in srv.batches.created[created:]] == [RESPONSES]


def test_a_responses_only_model_with_a_schema_gets_its_strict_text_format(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    items = parse_items(
        [json.dumps({"id": i, "user": f"count {i}"}) for i in range(3)],
        default_model="o3-pro",
        schema=schema,
    )
    srv.enqueue(Reply(text='{"n": 0}'), Reply(text='{"n": "zero"}'), Reply(refusal="No."))
    gpt = _gpt(srv)
    summary = run_remote_batch(gpt, items, tmp_path / "o.jsonl", poll_interval=0.01)
    assert (summary.succeeded, summary.failed, summary.invalid) == (1, 2, 1)
    records = _records(tmp_path / "o.jsonl")
    assert records[0]["answer"] == {"n": 0}
    assert records[1]["error"]["problems"] == [["n: 'zero' is not of type 'integer'"]]
    assert records[2]["error"]["type"] == "RefusalError"
    body = _lines_by_batch(srv)[RESPONSES][0]["body"]
    fmt = body["text"]["format"]
    assert (fmt["type"], fmt["strict"]) == ("json_schema", True)
    assert fmt["schema"]["additionalProperties"] is False
    assert "response_format" not in body
    srv.enqueue(Reply(text='{"n": 0}'))
    gpt.parse("o3-pro", "", "count 0", schema, temperature=0.7)
    assert srv.response_requests[-1].body == body


def test_a_mixed_file_becomes_one_batch_per_endpoint_tracked_and_collected_together(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    lines = []
    for i in range(30):
        model = ("gpt-4o-mini", "o3-pro", "gpt-4o-mini")[i % 3]
        options = {"api": "responses"} if i % 3 == 2 else None
        lines.append(json.dumps({"id": i, "user": f"q{i}", "model": model, "options": options}))
    items = parse_items(lines, default_model="gpt-4o-mini")
    out = tmp_path / "out.jsonl"
    srv.batches.speed = 0.0  # wait, then collect in a rerun
    waiting = run_remote_batch(_gpt(srv), items, out, poll_interval=0.01, max_wait=0)
    assert (waiting.batches, waiting.waiting) == (3, 3)
    state = json.loads(Path(f"{out}.remote.json").read_text())["parts"]
    assert sorted((p["model"], p["endpoint"]) for p in state) == [
        ("gpt-4o-mini", CHAT),
        ("gpt-4o-mini", RESPONSES),
        ("o3-pro", RESPONSES),
    ]
    for endpoint, requests in _lines_by_batch(srv).items():
        assert {r["url"] for r in requests} == {endpoint}
        assert len({r["body"]["model"] for r in requests}) == 1
    srv.batches.advance(10_000)
    done = run_remote_batch(_gpt(srv), items, out, poll_interval=0.01)
    assert (done.succeeded, done.submitted, done.unanswered) == (30, 0, 0)
    records = _records(out)
    assert all(records[i]["text"] == f"Echo: q{i}" for i in range(30))
    assert Counter(srv.batches.submitted_custom_ids()) == Counter(str(i) for i in range(30))


def test_a_failed_response_in_a_batch_is_recorded_and_submitted_again(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    items = parse_items(
        [json.dumps({"id": i, "user": f"q{i}"}) for i in range(2)], default_model="o3-pro"
    )
    srv.enqueue(Fault.response_failed("server_error", "The model failed."), Reply(text="fine"))
    out = tmp_path / "o.jsonl"
    first = run_remote_batch(_gpt(srv), items, out, poll_interval=0.01)
    assert (first.succeeded, first.failed) == (1, 1)
    failed = _records(out)[0]
    assert failed["ok"] is False
    assert "The model failed." in failed["error"]["message"]
    again = run_remote_batch(_gpt(srv), items, out, poll_interval=0.01)
    assert (again.skipped, again.succeeded) == (1, 1)


def test_a_state_file_from_before_responses_batches_resumes_as_chat(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    """Parts saved without an endpoint (every part before batches had two) are chat
    completions batches: a rerun collects them as such."""
    items = parse_items([json.dumps({"id": 1, "user": "q"})], default_model="gpt-4o-mini")
    out = tmp_path / "o.jsonl"
    srv.batches.speed = 0.0
    run_remote_batch(_gpt(srv), items, out, poll_interval=0.01, max_wait=0)
    state_file = Path(f"{out}.remote.json")
    state = json.loads(state_file.read_text())
    del state["parts"][0]["endpoint"]
    state_file.write_text(json.dumps(state))
    srv.batches.advance(10_000)
    done = run_remote_batch(_gpt(srv), items, out, poll_interval=0.01)
    assert (done.succeeded, done.submitted) == (1, 0)
    assert _records(out)[1]["text"] == "Echo: q"


def test_a_part_planned_for_one_endpoint_is_not_sent_to_another(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    """A run died after planning a part and before uploading it; the rerun's api setting now
    sends its lines elsewhere: refused before anything is uploaded, with the way out."""
    from moodlemate.ai.batch.remote import RemoteBatchError

    items = parse_items([json.dumps({"id": 1, "user": "q"})], default_model="gpt-4o-mini")
    out = tmp_path / "o.jsonl"
    srv.batches.speed = 0.0
    run_remote_batch(_gpt(srv), items, out, poll_interval=0.01, max_wait=0)
    state_file = Path(f"{out}.remote.json")
    state = json.loads(state_file.read_text())
    part = state["parts"][0]
    part.update(file_id=None, batch_id=None, creating=False, status="planned")
    state_file.write_text(json.dumps(state))
    uploads = len(srv.batches.files)
    with pytest.raises(RemoteBatchError, match="planned for /v1/chat/completions"):
        run_remote_batch(_gpt(srv, api="responses"), items, out, poll_interval=0.01)
    assert len(srv.batches.files) == uploads
