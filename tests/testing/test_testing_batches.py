"""The loopback server's Files and Batch APIs, driven by the official openai SDK unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from moodlemate.ai.testing import BatchFate, Fault, LoopbackServer, Reply

KEY = "sk-test-batches-0123456789"


@pytest.fixture
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def client(srv: LoopbackServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key=KEY, max_retries=0)


def _lines(n: int, model: str = "gpt-4o-mini", **extra: object) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": f"q {i}"}]}
                | extra,
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


def _create(client: openai.OpenAI, content: bytes) -> str:
    uploaded = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "validating"
    return batch.id


def test_a_batch_walks_validating_in_progress_finalizing_completed(srv, client) -> None:
    uploaded = client.files.create(file=("in.jsonl", _lines(10)), purpose="batch")
    assert client.files.retrieve(uploaded.id).bytes == len(_lines(10))
    batch_id = _create(client, _lines(10))
    seen = []
    for seconds in (91, 300, 250, 31):
        srv.batches.advance(seconds)
        batch = client.batches.retrieve(batch_id)
        seen.append((batch.status, batch.request_counts.completed))
    assert [s for s, _ in seen] == ["in_progress", "in_progress", "finalizing", "completed"]
    assert 0 < seen[0][1] < seen[1][1] < 10
    assert seen[2][1] == 10
    assert batch.output_file_id
    assert batch.error_file_id is None
    assert batch.completed_at
    assert batch.finalizing_at
    assert batch.in_progress_at
    lines = [json.loads(line) for line in client.files.content(batch.output_file_id).iter_lines()]
    assert [line["custom_id"] for line in lines] == [f"r{i}" for i in range(10)]
    assert lines[0]["response"]["status_code"] == 200
    assert lines[0]["response"]["body"]["choices"][0]["message"]["content"] == "Echo: q 0"
    assert [b.id for b in client.batches.list()] == [batch_id]


def test_per_request_failures_land_in_the_error_file(srv, client) -> None:
    srv.enqueue(Reply(text="one"), Fault.status(500), Reply(text="three"))
    batch_id = _create(client, _lines(3))
    srv.batches.advance(10_000)
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    errors = [json.loads(x) for x in client.files.content(batch.error_file_id).iter_lines()]
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("r1", 500)]


def test_reasoning_model_rules_apply_inside_a_batch(srv, client) -> None:
    batch_id = _create(client, _lines(2, model="o3-mini", max_tokens=5))
    srv.batches.advance(10_000)
    batch = client.batches.retrieve(batch_id)
    assert batch.request_counts.failed == 2
    error = json.loads(next(client.files.content(batch.error_file_id).iter_lines()))
    assert error["response"]["body"]["error"]["param"] == "max_tokens"


def test_expiry_leaves_the_unfinished_requests_in_the_error_file(srv, client) -> None:
    srv.batches.script(BatchFate.expired(done=0.7))
    batch_id = _create(client, _lines(10))
    srv.batches.advance(3600)
    assert client.batches.retrieve(batch_id).status == "in_progress"
    srv.batches.advance(24 * 3600)
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "expired"
    assert batch.expired_at
    assert batch.request_counts.completed == 7
    errors = [json.loads(x) for x in client.files.content(batch.error_file_id).iter_lines()]
    assert [e["custom_id"] for e in errors] == ["r7", "r8", "r9"]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}


def test_validation_failures_fail_the_batch(srv, client) -> None:
    mixed = _lines(1) + _lines(1, model="gpt-4o").replace(b'"r0"', b'"x0"')
    batch_id = _create(client, mixed)
    srv.batches.script(BatchFate.failed("no", code="scripted"))
    scripted = _create(client, _lines(1))
    srv.batches.advance(31)
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "failed"
    assert batch.failed_at
    assert [e.code for e in batch.errors.data] == ["mismatched_model"]
    assert [e.code for e in client.batches.retrieve(scripted).errors.data] == ["scripted"]
    srv.batches.max_requests = 2
    too_many = _create(client, _lines(3))
    srv.batches.advance(31)
    assert client.batches.retrieve(too_many).errors.data[0].code == "too_many_requests"


def test_cancel_goes_through_cancelling_and_reports_the_rest(srv, client) -> None:
    batch_id = _create(client, _lines(4))
    srv.batches.advance(31 + 300)  # half way through
    assert client.batches.cancel(batch_id).status == "cancelling"
    srv.batches.advance(31)
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "cancelled"
    assert batch.cancelled_at
    done = [
        json.loads(x)["custom_id"] for x in client.files.content(batch.output_file_id).iter_lines()
    ]
    rest = [json.loads(x) for x in client.files.content(batch.error_file_id).iter_lines()]
    assert done == ["r0", "r1"]
    assert [(e["custom_id"], e["error"]["code"]) for e in rest] == [
        ("r2", "batch_cancelled"),
        ("r3", "batch_cancelled"),
    ]
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch_id)


def test_list_pages_newest_first(srv, client) -> None:
    ids = []
    for _ in range(3):
        ids.append(_create(client, _lines(1)))
        srv.batches.advance(1)
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2]
    assert page.has_more
    assert [b.id for b in client.batches.list(limit=2, after=ids[1])] == [ids[0]]
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]


def test_content_honours_range_and_can_cut_a_download(srv, client) -> None:
    uploaded = client.files.create(file=("in.jsonl", _lines(5)), purpose="batch")
    whole = _lines(5)
    part = client.files.content(uploaded.id, extra_headers={"Range": "bytes=10-"})
    assert part.response.status_code == 206
    assert part.content == whole[10:]
    srv.cut_downloads = 1
    with pytest.raises(openai.APIConnectionError):
        client.files.content(uploaded.id)
    assert client.files.content(uploaded.id).content == whole


def test_bad_uploads_and_unknown_ids_are_refused(srv, client) -> None:
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.txt", b"x"), purpose="batch")
    srv.batches.max_bytes = 10
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.jsonl", _lines(1)), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=srv.url, api_key="sk-wrong", max_retries=0).batches.list()
