"""JSON nested 100k levels deep, wherever the library reads JSON it did not write itself:
a typed error (or a damaged line), never a bare RecursionError."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from moodlemate.ai import GPT, MalformedResponseError, ValidationError
from moodlemate.ai.batch import BatchInputError, BatchOutputError, ResultLog, read_items

DEEP = "[" * 100_000 + "]" * 100_000


def test_a_deep_batch_input_line_is_reported_with_its_number(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "user": "hi"}\n' + DEEP + "\n")
    with pytest.raises(BatchInputError) as caught:
        read_items(source, default_model="gpt-4o-mini")
    assert caught.value.problems == [(2, "JSON nested too deeply to read")]


def test_a_deep_line_inside_a_batch_output_is_damage(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 1, "ok": true}\n' + DEEP + '\n{"id": 2, "ok": true}\n')
    with pytest.raises(BatchOutputError, match=r"out\.jsonl:2: not a batch result line"):
        ResultLog(out)


def test_a_deep_last_line_of_a_batch_output_is_dropped_as_torn(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 1, "ok": true}\n' + DEEP)
    with ResultLog(out) as log:
        assert log.answered == {1}
        assert log.dropped_bytes == len(DEEP)


def test_a_deep_conversation_document_is_a_validation_error() -> None:
    chat = GPT().conversation()
    with pytest.raises(ValidationError, match="nested too deeply"):
        chat.load_json(DEEP)
    assert chat.history == ()


class _DeepModels(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = ('{"data": ' + DEEP + "}").encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def deep_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _DeepModels)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_deep_openrouter_model_list_is_a_malformed_response(deep_server: str) -> None:
    from moodlemate.providers.openrouter import refresh_models

    with pytest.raises(MalformedResponseError, match="not a models list"):
        refresh_models(deep_server, timeout=10)


def test_json_module_really_recurses_on_this_depth() -> None:
    """The premise of this file: without a guard, json.loads raises RecursionError here."""
    with pytest.raises(RecursionError):
        json.loads(DEEP)
