"""The conventions people bring from other LLM command lines, through the installed console
script: streaming to a terminal, --json, --version, options after the subcommand, stdin for
batch, conversations that survive the process, and a test server to try it all offline."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT, ProviderError, RateLimitError, RetryPolicy
from moodlemate.ai.cli import COMMANDS
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY
from test_cli import COMMAND, run_cli


@pytest.fixture
def endpoint(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> LoopbackServer:
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", server.url)
    return server


# -- --version, python -m, options after the subcommand, --help ---------------------------


def test_version_from_the_script_and_from_python_dash_m() -> None:
    script = run_cli("--version")
    module = subprocess.run(
        [sys.executable, "-m", "moodlemate.ai", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == module.returncode == 0
    assert re.fullmatch(r"moodlemate-ai 0\.1\.0 \(Python 3\.\d+\.\d+\)\n", script.stdout)
    assert module.stdout == script.stdout


def test_python_dash_m_runs_the_same_command(endpoint: LoopbackServer) -> None:
    endpoint.enqueue(Reply(text="via -m"))
    done = subprocess.run(
        [sys.executable, "-m", "moodlemate.ai", "chat", "--no-stream", "hi"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "via -m\n"), done.stderr
    assert "DEBUG" not in done.stderr


def test_verbose_is_accepted_after_the_subcommand(endpoint: LoopbackServer) -> None:
    out = run_cli("chat", "-vv", "hi")  # as well as before it: moodlemate-ai -vv chat hi
    assert out.returncode == 0, out.stderr
    assert "DEBUG" in out.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_help_has_a_description(command: str) -> None:
    out = run_cli(command, "--help")
    assert out.returncode == 0
    # usage lines, a blank line, then the description before any argument section
    after_usage = out.stdout.split("\n\n", 1)[1]
    first_paragraph = after_usage.split("\n\n", 1)[0]
    assert not first_paragraph.startswith(("options:", "positional arguments:")), out.stdout
    assert len(first_paragraph.split()) >= 8


# -- --json ---------------------------------------------------------------------------------


def test_chat_json_reports_text_model_usage_cost_attempts_and_request_id(
    endpoint: LoopbackServer,
) -> None:
    endpoint.enqueue(
        Fault.status(503), Reply(text="fine", prompt_tokens=1000, completion_tokens=500)
    )
    out = run_cli("chat", "--json", "-m", "gpt-4o-mini", "hi " * 500)  # 1,000 tokens fit
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["text"] == "fine"
    assert record["model"] == "gpt-4o-mini"
    assert record["usage"]["prompt_tokens"] == 1000
    assert record["usage"]["completion_tokens"] == 500
    assert record["usage"]["total_tokens"] == 1500
    assert record["cost"] == "0.00045"  # 1000 x 0.15 + 500 x 0.60 per million
    assert record["attempts"] == 2
    assert record["request_id"]
    assert record["finish_reason"] == "stop"
    assert record["conversation"] == "last"


def test_tokens_json_and_the_estimate_mark() -> None:
    exact = run_cli("tokens", "--json", "-m", "gpt-4", stdin="hello world")
    assert json.loads(exact.stdout) == {
        "tokens": 2,
        "model": "gpt-4",
        "provider": "openai",
        "encoding": "cl100k_base",
        "estimate": False,
    }
    assert exact.stderr == ""
    guessed = run_cli("tokens", "--provider", "ollama", "-m", "llama3.2", stdin="hello world")
    assert (guessed.returncode, guessed.stdout) == (0, "2\n")
    assert "an estimate" in guessed.stderr
    assert "llama3.2" in guessed.stderr
    document = json.loads(
        run_cli("tokens", "--json", "--provider", "ollama", "-m", "x", stdin="hi").stdout
    )
    assert document["estimate"] is True


def test_models_json_has_decimal_prices_and_their_source() -> None:
    out = run_cli("models", "--known", "--json", "-p", "openai")
    assert out.returncode == 0, out.stderr
    records = {r["model"]: r for r in json.loads(out.stdout)}
    mini = records["gpt-4o-mini"]
    assert mini["provider"] == "openai"
    assert mini["context_window"] == 128000
    assert mini["price"] == {
        "input": "0.15",
        "cached_input": "0.075",
        "output": "0.60",
        "unit": "USD per 1M tokens",
    }
    assert mini["source"] == "shipped"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", mini["as_of"])


def test_providers_json_lists_each_with_its_package() -> None:
    out = run_cli("providers", "--json")
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    names = {p["name"]: p for p in document["providers"]}
    assert names["openai"]["package"] == "moodlemate-ai-openai"
    assert names["openai"]["default_endpoint"] == "https://api.openai.com/v1"
    assert document["failed"] == {}


# -- batch - --------------------------------------------------------------------------------


def test_batch_reads_its_input_from_stdin(endpoint: LoopbackServer, tmp_path: Path) -> None:
    lines = "".join(json.dumps({"id": f"q{i}", "user": f"question {i}"}) + "\n" for i in range(3))
    out = run_cli("batch", "-", "-o", str(tmp_path / "out.jsonl"), stdin=lines)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["q0", "q1", "q2"]
    assert all(r["ok"] for r in records)
    bad = run_cli("batch", "-", "-o", str(tmp_path / "bad.jsonl"), stdin='{"id": 1}\n')
    assert bad.returncode == 2
    assert "<stdin>" in bad.stderr


# -- conversations --------------------------------------------------------------------------


def _messages(server: LoopbackServer, index: int = -1) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = server.chat_requests[index].body["messages"]
    return messages


def test_continue_goes_on_with_the_latest_conversation(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    endpoint.enqueue(Reply(text="Hello Ada."), Reply(text="Ada."), Reply(text="New."))
    assert run_cli("chat", "My name is Ada.").returncode == 0
    out = run_cli("chat", "-c", "What is my name?")
    assert (out.returncode, out.stdout) == (0, "Ada.\n"), out.stderr
    assert _messages(endpoint) == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    # A plain chat starts afresh.
    assert run_cli("chat", "Who am I?").returncode == 0
    assert _messages(endpoint) == [{"role": "user", "content": "Who am I?"}]
    stored = tmp_path / "xdg-data" / "moodlemate-ai" / "conversations" / "last.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600  # prompts are private


def test_named_conversations_keep_their_own_history_and_settings(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    endpoint.enqueue(*[Reply(text=f"r{i}") for i in range(4)])
    run_cli("chat", "--conversation", "fr", "-s", "Answer in French.", "-m", "gpt-4o", "one")
    run_cli("chat", "--conversation", "de", "-s", "Answer in German.", "two")
    out = run_cli("chat", "--conversation", "fr", "three")
    assert out.returncode == 0, out.stderr
    request = endpoint.chat_requests[-1].body
    assert request["model"] == "gpt-4o"  # the conversation's model, kept
    assert request["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "r0"},
        {"role": "user", "content": "three"},
    ]
    run_cli("chat", "-c", "four")  # -c follows the latest used: fr
    assert [m["content"] for m in _messages(endpoint)][-2:] == ["r2", "four"]
    stored = tmp_path / "xdg-data" / "moodlemate-ai" / "conversations" / "fr.json"
    before = stored.read_text()
    endpoint.enqueue(Fault.status(400))
    assert run_cli("chat", "-c", "lost").returncode == 1
    assert stored.read_text() == before  # a failed turn leaves the conversation as it was
    assert json.loads(before)["turns"][-1] == {"role": "assistant", "content": "r3"}


def test_continue_with_nothing_to_continue_is_a_usage_error(endpoint: LoopbackServer) -> None:
    out = run_cli("chat", "-c", "hi")
    assert out.returncode == 2
    assert "no conversation to continue" in out.stderr
    assert endpoint.chat_requests == []


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "x" * 65, "", "n.json"])
def test_conversation_names_cannot_escape_the_data_dir(endpoint: LoopbackServer, name: str) -> None:
    out = run_cli("chat", "--conversation", name, "hi")
    assert out.returncode == 2
    assert endpoint.chat_requests == []


# -- streaming to a terminal ----------------------------------------------------------------


class _DripServer(ThreadingHTTPServer):
    """An SSE endpoint that sends the first delta, then holds the rest until released."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _DripHandler)
        self.release = threading.Event()


class _DripHandler(BaseHTTPRequestHandler):
    server: _DripServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if not body.get("stream"):
            self.server.release.wait(10)
            reply = {
                "id": "chatcmpl-whole",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "first part, second part"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()

        def event(delta: dict[str, str], finish: str | None) -> None:
            chunk = {
                "id": "chatcmpl-drip",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()

        event({"role": "assistant", "content": "first part"}, None)
        self.server.release.wait(10)  # bounded: the test releases it or it gives up
        event({"content": ", second part"}, "stop")
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def drip(monkeypatch: pytest.MonkeyPatch) -> Iterator[_DripServer]:
    httpd = _DripServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def _on_a_terminal(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*COMMAND, *args], stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.PIPE
    )
    os.close(terminal)
    return proc, controller


def _read_until(controller: int, needle: bytes, seconds: float) -> bytes:
    shown = b""
    deadline = time.monotonic() + seconds
    while needle not in shown and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([controller], [], [], left)
        if not ready:
            break
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    return shown


def test_chat_streams_to_a_terminal_as_the_reply_arrives(drip: _DripServer) -> None:
    proc, controller = _on_a_terminal("chat", "hi")
    try:
        shown = _read_until(controller, b"first part", 20)
        assert b"first part" in shown  # on screen while the server still holds the rest
        assert b"second part" not in shown
        drip.release.set()
        shown += _read_until(controller, b"second part\r\n", 20)
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(controller)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert b"first part, second part\r\n" in shown


def test_no_stream_waits_for_the_whole_reply(drip: _DripServer) -> None:
    proc, controller = _on_a_terminal("chat", "--no-stream", "hi")
    try:
        early = _read_until(controller, b"first part", 1.5)
        assert early == b""  # nothing shown while the reply is incomplete
        drip.release.set()
        shown = _read_until(controller, b"second part\r\n", 20)
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(controller)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert shown == b"first part, second part\r\n"


def test_a_pipe_gets_the_reply_whole_without_waiting_on_a_terminal(
    endpoint: LoopbackServer,
) -> None:
    endpoint.enqueue(Reply(text="piped", chunks=["pi", "ped"]))
    out = run_cli("chat", "hi")
    assert (out.returncode, out.stdout) == (0, "piped\n")
    assert endpoint.chat_requests[-1].body.get("stream") in (None, False)


# -- serve ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _serving(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [*COMMAND, "serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+/v1)$", first.strip())
        assert found is not None, first + (proc.stderr.read() if proc.stderr else "")
        yield proc, found.group(1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


def test_serve_answers_the_cli_until_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    with _serving("--port", "0") as (proc, url):
        monkeypatch.setenv("MOODLEMATE_ENDPOINT", url)
        out = run_cli("chat", "hello there")
        assert (out.returncode, out.stdout) == (0, "Echo: hello there\n"), out.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert "stopped after 1 requests" in proc.stderr.read()


def test_serve_injects_faults_and_stops_on_sigterm() -> None:
    with _serving("--fault-rate", "1", "--seed", "3") as (proc, url):
        gpt = GPT("openai", endpoint=url, api_key=TEST_KEY, retry=FAST_RETRY)
        with pytest.raises(ProviderError):
            gpt.chat_completion("gpt-4o-mini", "", "hi")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_serve_checks_a_key_when_given_one() -> None:
    with _serving("--api-key", "sk-only-this") as (_, url):
        wrong = GPT("openai", endpoint=url, api_key="sk-another", retry=FAST_RETRY)
        with pytest.raises(ProviderError):
            wrong.chat_completion("gpt-4o-mini", "", "hi")
        right = GPT("openai", endpoint=url, api_key="sk-only-this", retry=FAST_RETRY)
        assert right.chat_completion("gpt-4o-mini", "", "hi") == "Echo: hi"


def test_serve_enforces_a_rate_limit_with_openais_headers() -> None:
    with _serving("--rpm", "60") as (_, url):  # 6 per 6 s slice
        gpt = GPT("openai", endpoint=url, api_key=TEST_KEY, retry=RetryPolicy(attempts=1))
        first = gpt.complete("gpt-4o-mini", "", "hi")
        assert first.rate_limits is not None
        assert first.rate_limits.requests_limit == 60
        for _ in range(5):
            gpt.complete("gpt-4o-mini", "", "hi")
        with pytest.raises(RateLimitError, match="requests per min"):
            gpt.complete("gpt-4o-mini", "", "the seventh in the slice")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "0-65535"),
        (["--tpm", "1000"], "--tpm goes with --rpm"),
        (["--rpm", "0"], "--rpm/--tpm: RateLimit requests_per_minute must be a positive int"),
    ],
)
def test_serve_usage_errors(args: list[str], message: str) -> None:
    out = run_cli("serve", *args)
    assert out.returncode == 2
    assert message in out.stderr
