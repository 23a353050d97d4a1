"""What a remote batch sends, and what the loopback server answers, conform to OpenAI's
published OpenAPI spec (../shared/openai-openapi/openapi.yaml), checked with jsonschema.

Loading the whole 3 MB spec costs seconds, so only the schemas these checks reach (and the
schemas they refer to) are cut out of it and parsed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")

from moodlemate.ai import GPT  # noqa: E402
from moodlemate.ai.batch import parse_items  # noqa: E402
from moodlemate.ai.batch.remote import run_remote_batch  # noqa: E402
from moodlemate.ai.testing import LoopbackServer  # noqa: E402
from moodlemate.testing._batches import _multipart  # noqa: E402
from openai_spec import check, present, requires_spec  # noqa: E402

pytestmark = requires_spec
KEY = "sk-test-spec-0123456789abcdef"


def test_remote_batch_requests_and_server_answers_follow_the_spec(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": 1, "system": "Be brief.", "user": "hi", "temperature": 0.2}),
        json.dumps({"id": 2, "user": "hi", "model": "o3-mini", "max_tokens": 30}),
        json.dumps({"id": 3, "system": "S", "user": "hi", "model": "o1-mini"}),
    ]
    items = parse_items(lines, default_model="gpt-4o-mini")
    with LoopbackServer(api_key=KEY) as server:
        server.batches.speed = 100_000.0
        gpt = GPT("openai", endpoint=server.url, api_key=KEY)
        summary = run_remote_batch(gpt, items, tmp_path / "o.jsonl", poll_interval=0.01)
        assert summary.succeeded == 3
        log = server.requests
        files = server.batches.files

    uploads = [r for r in log if r.method == "POST" and r.path.endswith("/files")]
    assert len(uploads) == 3  # one model per file
    for upload in uploads:
        fields = _multipart(upload.headers["content-type"], upload.raw)
        assert fields is not None
        assert set(fields) == {"file", "purpose"}
        check("CreateFileRequest", {"purpose": fields["purpose"][0].decode(), "file": "<binary>"})
        assert fields["file"][1].endswith(".jsonl")
        for line in fields["file"][0].splitlines():
            request = json.loads(line)
            assert set(request) == {"custom_id", "method", "url", "body"}
            assert request["method"] == "POST"
            assert request["url"] == "/v1/chat/completions"
            check("CreateChatCompletionRequest", request["body"])

    creates = [r for r in log if r.method == "POST" and r.path.endswith("/batches")]
    assert len(creates) == 3
    for create in creates:
        check("CreateBatchRequest", create.body)

    models = {
        json.loads(line)["body"]["model"]
        for f in files.values()
        if f.purpose == "batch"
        for line in f.content.splitlines()
    }
    assert models == {"gpt-4o-mini", "o3-mini", "o1-mini"}
    with LoopbackServer(api_key=KEY) as server:
        server.batches.speed = 100_000.0
        run_remote_batch(
            GPT("openai", endpoint=server.url, api_key=KEY),
            items[:1],
            tmp_path / "p.jsonl",
            poll_interval=0.01,
        )
        batch = server.batches.created[0]
        check("Batch", present(batch))
        _, done = server.batches.retrieve(batch["id"])
        assert done["status"] == "completed"
        check("Batch", present(done))
        listed = server.batches.list({})[1]
        check("ListBatchesResponse", {**listed, "data": [present(b) for b in listed["data"]]})
        check("OpenAIFile", present(server.batches.file(batch["input_file_id"])[1]))
