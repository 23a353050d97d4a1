"""What a remote batch sends, and what the loopback server answers, conform to OpenAI's
published OpenAPI spec (../shared/openai-openapi/openapi.yaml), checked with jsonschema.

Loading the whole 3 MB spec costs seconds, so only the schemas these checks reach (and the
schemas they refer to) are cut out of it and parsed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("yaml")
pytest.importorskip("jsonschema")

from moodlemate.ai import GPT
from moodlemate.ai.batch import parse_items
from moodlemate.ai.batch.remote import run_remote_batch
from moodlemate.ai.testing import LoopbackServer
from moodlemate.testing._batches import _multipart
from openapi_spec import SPEC, check_schema

pytestmark = pytest.mark.skipif(SPEC is None, reason="the OpenAPI spec is not present")
KEY = "sk-test-spec-0123456789abcdef"


def _present(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields that are not null. The spec's own example Batch carries null timestamps
    and file ids (as the real API sends them) while its schema types them non-nullable."""
    return {k: v for k, v in obj.items() if v is not None}


_check = check_schema


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
        _check("CreateFileRequest", {"purpose": fields["purpose"][0].decode(), "file": "<binary>"})
        assert fields["file"][1].endswith(".jsonl")
        for line in fields["file"][0].splitlines():
            request = json.loads(line)
            assert set(request) == {"custom_id", "method", "url", "body"}
            assert request["method"] == "POST"
            assert request["url"] == "/v1/chat/completions"
            _check("CreateChatCompletionRequest", request["body"])

    creates = [r for r in log if r.method == "POST" and r.path.endswith("/batches")]
    assert len(creates) == 3
    for create in creates:
        _check("CreateBatchRequest", create.body)

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
        _check("Batch", _present(batch))
        _, done = server.batches.retrieve(batch["id"])
        assert done["status"] == "completed"
        _check("Batch", _present(done))
        listed = server.batches.list({})[1]
        _check("ListBatchesResponse", {**listed, "data": [_present(b) for b in listed["data"]]})
        _check("OpenAIFile", _present(server.batches.file(batch["input_file_id"])[1]))


def test_chat_requests_with_parts_tools_and_every_option_follow_the_spec() -> None:
    """Each request shape the message model adds, as the provider puts it on the wire (the
    test server records the body), validates against CreateChatCompletionRequest, and the
    server's replies (tool calls, refusal, audio) against CreateChatCompletionResponse."""
    from moodlemate.ai import AudioPart, FilePart, ImagePart, Message, TextPart, ToolCall
    from moodlemate.ai.testing import Reply
    from support import pdf_bytes, png_bytes, wav_bytes

    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": False,
        },
    }
    history = [
        Message("developer", "Answer in English."),
        Message(
            "user",
            (
                TextPart("Compare"),
                ImagePart(png_bytes(), detail="low"),
                ImagePart("https://example.org/a.png", detail="high"),
                FilePart(pdf_bytes(), filename="a.pdf"),
                FilePart(file_id="file-abc123"),
            ),
            name="ann",
        ),
        Message("assistant", "", tool_calls=(ToolCall("call_1", "weather", '{"city":"Oslo"}'),)),
        Message("tool", "12 C", tool_call_id="call_1"),
        Message("assistant", "Oslo is 12 C."),
        Message("user", "And Rome?"),
    ]
    options = {
        "top_p": 0.9,
        "seed": 1,
        "stop": ["\n\n"],
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "logit_bias": {"50256": -100},
        "user": "u-1",
        "metadata": {"k": "v"},
        "store": False,
        "service_tier": "auto",
        "prompt_cache_key": "key-1",
        "parallel_tool_calls": True,
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "tools": [tool],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": False},
        },
    }
    audio_reply = {"id": "audio_1", "data": "UklGRg==", "transcript": "Hi", "expires_at": 1}
    with LoopbackServer(api_key=KEY) as server:
        gpt = GPT("openai", endpoint=server.url, api_key=KEY)
        server.enqueue(
            Reply(
                tool_calls=[
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "weather", "arguments": "{}"},
                    }
                ],
                finish_reason="tool_calls",
            ),
            Reply(refusal="No."),
            Reply(text="Hi", audio=audio_reply),
        )
        gpt.complete("gpt-4o", "Be brief.", messages=history, max_tokens=50, options=options)
        gpt.complete(
            "o3-mini", messages=history[:1] + history[-1:], options={"reasoning_effort": "high"}
        )
        gpt.complete(
            "gpt-4o-audio-preview",
            messages=[Message("user", (TextPart("Hear this"), AudioPart(wav_bytes())))],
            options={"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        )
        "".join(gpt.stream("gpt-4o-mini", messages=history, options={"seed": 2, "tools": [tool]}))
        bodies = [r.body for r in server.chat_requests]
        replies = server.chat_requests
    assert len(replies) == 4
    for body in bodies:
        _check("CreateChatCompletionRequest", body)
    assert {k for k in bodies[0] if k in options} == set(options)


def test_server_replies_with_tool_calls_refusals_and_audio_follow_the_spec() -> None:
    from moodlemate.ai.testing import Reply

    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    audio = {"id": "audio_1", "data": "UklGRg==", "transcript": "Hi", "expires_at": 1}
    import urllib.request

    with LoopbackServer(api_key=KEY) as server:
        server.enqueue(
            Reply(tool_calls=[call], finish_reason="tool_calls"),
            Reply(refusal="No."),
            Reply(text="Hi", audio=audio),
        )
        for _ in range(3):
            request = urllib.request.Request(
                server.url + "/chat/completions",
                data=json.dumps(
                    {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
                ).encode(),
                headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                _check("CreateChatCompletionResponse", json.loads(response.read()))


def test_responses_and_schema_batches_follow_the_spec(tmp_path: Path) -> None:
    """Lines for /v1/responses (a Responses-only model, api="responses", with and without a
    schema) and chat lines with a schema: each request line against its endpoint's request
    schema, each create against CreateBatchRequest, each Response the server wrote into an
    output file against the spec's Response."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    lines = [
        json.dumps({"id": 1, "system": "Be brief.", "user": "hi", "model": "o3-pro"}),
        json.dumps({"id": 2, "user": "n?", "model": "o3-pro", "schema": schema}),
        json.dumps({"id": 3, "user": "hi", "options": {"api": "responses"}, "max_tokens": 5}),
        json.dumps({"id": 4, "user": "n?", "schema": schema}),
        json.dumps({"id": 5, "user": "n?", "model": "gpt-3.5-turbo", "schema": schema}),
    ]
    items = parse_items(lines, default_model="gpt-4o-mini")
    with LoopbackServer(api_key=KEY) as server:
        server.batches.speed = 100_000.0
        gpt = GPT("openai", endpoint=server.url, api_key=KEY)
        run_remote_batch(gpt, items, tmp_path / "o.jsonl", poll_interval=0.01)
        log = server.requests
        files = server.batches.files
        created = server.batches.created

    request_schema = {
        "/v1/responses": "CreateResponse",
        "/v1/chat/completions": "CreateChatCompletionRequest",
    }
    assert sorted(b["endpoint"] for b in created) == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/responses",
    ]
    for batch in created:
        for line in files[batch["input_file_id"]].content.splitlines():
            request = json.loads(line)
            assert request["url"] == batch["endpoint"]
            _check(request_schema[batch["endpoint"]], request["body"])
    creates = [r for r in log if r.method == "POST" and r.path.endswith("/batches")]
    assert len(creates) == 4
    for create in creates:
        _check("CreateBatchRequest", create.body)
    responses = [
        json.loads(line)["response"]["body"]
        for f in files.values()
        if f.purpose == "batch_output"
        for line in f.content.splitlines()
    ]
    shaped = [body for body in responses if body.get("object") == "response"]
    assert len(shaped) == 3
    for body in shaped:
        _check("Response", body)
