"""The provider contract's remote batches: OpenAI's implementation against the loopback
server, and a clear refusal from providers that have none."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from moodlemate.ai import GPT
from moodlemate.ai._provider import ChatRequest, Message, Provider
from moodlemate.ai.errors import (
    AuthenticationError,
    NotFoundError,
    ProviderError,
    UnsupportedFeatureError,
)
from moodlemate.ai.testing import BatchFate, LoopbackServer

KEY = "sk-test-contract-0123456789"


@pytest.fixture
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer(api_key=KEY) as server:
        server.batches.speed = 1.0
        yield server


def _request(model: str = "gpt-4o-mini", **kwargs: object) -> ChatRequest:
    messages = (Message("system", "Be brief."), Message("user", "Hi"))
    return ChatRequest(model=model, messages=messages, **kwargs)  # type: ignore[arg-type]


def test_a_batch_round_trip_through_the_provider(srv: LoopbackServer, tmp_path: Path) -> None:
    provider, connection, _ = GPT("openai", endpoint=srv.url, api_key=KEY).provider_connection()
    api = provider.remote_batches()
    data = b"".join(api.request_line(f"c{i}", _request(temperature=0.2)) for i in range(3))
    file_id = api.upload(connection, "part-0.jsonl", data)
    batch = api.create(connection, file_id, {"moodlemate": "token-1"})
    assert (batch.status, batch.total) == ("validating", 3)
    assert api.find(connection, "moodlemate", "token-1") == api.retrieve(connection, batch.id)
    assert api.find(connection, "moodlemate", "token-2") is None
    srv.batches.advance(10_000)
    done = api.retrieve(connection, batch.id)
    assert done.terminal
    assert (done.status, done.completed, done.failed) == ("completed", 3, 0)
    path = tmp_path / "out.jsonl"
    srv.cut_downloads = 1
    with pytest.raises(ProviderError):
        api.download(connection, done.output_file_id, path)
    assert 0 < path.stat().st_size < len(srv.batches.content(done.output_file_id))
    api.download(connection, done.output_file_id, path)  # resumes with Range
    assert path.read_bytes() == srv.batches.content(done.output_file_id)
    ranged = [r for r in srv.requests if r.headers.get("range")]
    assert len(ranged) == 1
    results = [api.parse_line(line, "gpt-4o-mini") for line in path.read_bytes().splitlines()]
    assert [r.custom_id for r in results] == ["c0", "c1", "c2"]
    assert results[0].completion is not None
    assert results[0].completion.text == "Echo: Hi"
    assert results[0].completion.request_id


def test_request_lines_use_the_live_request_mapping() -> None:
    provider = GPT("openai", api_key=KEY).provider
    api = provider.remote_batches()
    line = json.loads(api.request_line("x", _request("o1-mini", temperature=0.7, max_tokens=9)))
    assert line["url"] == "/v1/chat/completions"
    assert line["method"] == "POST"
    body = line["body"]
    assert body == provider.body(_request("o1-mini", temperature=0.7, max_tokens=9))  # type: ignore[attr-defined]
    assert body["max_completion_tokens"] == 9
    assert "temperature" not in body
    assert "max_tokens" not in body
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_error_lines_become_typed_errors(srv: LoopbackServer) -> None:
    provider, connection, _ = GPT("openai", endpoint=srv.url, api_key=KEY).provider_connection()
    api = provider.remote_batches()
    expired = api.parse_line(
        b'{"id":"b","custom_id":"c","response":null,'
        b'"error":{"code":"batch_expired","message":"too late"}}',
        "gpt-4o-mini",
    )
    assert expired.error is not None
    assert expired.error.code == "batch_expired"
    status = api.parse_line(
        b'{"id":"b","custom_id":"d","response":{"status_code":404,"request_id":"r",'
        b'"body":{"error":{"message":"no model","code":"model_not_found"}}},"error":null}',
        "gpt-4o-mini",
    )
    assert isinstance(status.error, NotFoundError)
    assert status.error.code == "model_not_found"
    with pytest.raises(NotFoundError):
        api.retrieve(connection, "batch_missing")
    srv.batches.script(BatchFate.failed("bad file", code="invalid_json_line"))
    file_id = api.upload(connection, "x.jsonl", api.request_line("c", _request()))
    batch = api.create(connection, file_id, {})
    srv.batches.advance(60)
    assert api.retrieve(connection, batch.id).errors == ("invalid_json_line: bad file",)


def test_a_wrong_key_is_an_authentication_error_without_the_key(srv: LoopbackServer) -> None:
    provider, connection, _ = GPT(
        "openai", endpoint=srv.url, api_key="sk-wrong-key-0123456789"
    ).provider_connection()
    with pytest.raises(AuthenticationError) as caught:
        provider.remote_batches().upload(connection, "x.jsonl", b"{}\n")
    assert "sk-wrong-key-0123456789" not in str(caught.value)


def test_batch_prices_are_half_the_standard_ones_with_their_source() -> None:
    from moodlemate.providers.openai.pricing import openai_prices

    provider = GPT("openai", api_key=KEY).provider
    standard = provider.price("gpt-4o-mini")
    batch = provider.remote_batches().price("gpt-4o-mini-2024-07-18")
    assert standard is not None
    assert batch is not None
    assert batch.input == standard.input / 2
    assert batch.output == standard.output / 2
    assert batch.cached_input == Decimal("0.0375")
    info = openai_prices().batch("gpt-4o")
    assert info is not None
    assert "Batch" in (info.source or "")
    assert provider.remote_batches().price("no-such-model") is None


def test_openrouter_and_plain_plugins_say_they_have_no_remote_batches() -> None:
    openrouter = GPT("openrouter", api_key="sk-or-" + "0" * 30).provider
    with pytest.raises(UnsupportedFeatureError, match="'openrouter' does not offer remote"):
        openrouter.remote_batches()

    class Plain(Provider):
        name = "plain"
        default_endpoint = "http://127.0.0.1:9/v1"

        def execute(self, connection, request):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def count_tokens(self, text: str, model: str) -> int:
            return 0

    with pytest.raises(UnsupportedFeatureError, match="'plain' does not offer remote"):
        Plain().remote_batches()


class _NoFilesAPI(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat server (vLLM, llama.cpp) that has no /v1/files."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"error":{"message":"Not Found","type":"invalid_request_error"}}'
        self.send_response(404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_custom_endpoint_without_a_files_api_says_so() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NoFilesAPI)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        provider, connection, _ = GPT(
            "openai", endpoint=endpoint, api_key=KEY
        ).provider_connection()
        with pytest.raises(UnsupportedFeatureError, match="does not serve OpenAI's Files API"):
            provider.remote_batches().upload(connection, "x.jsonl", b"{}\n")
    finally:
        httpd.shutdown()
        httpd.server_close()
