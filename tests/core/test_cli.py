"""The installed ``moodlemate-ai`` console script, run in a subprocess against a loopback server.

The server runs in the test process; the command runs in a child that finds it through
MOODLEMATE_ENDPOINT, exactly as a user's shell would.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT
from moodlemate.ai.batch import ResultLog
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import TEST_KEY

_SCRIPT = shutil.which("moodlemate-ai", path=str(Path(sys.executable).parent))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "moodlemate.ai.cli"]


def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=timeout,
    )


@pytest.fixture
def endpoint(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> LoopbackServer:
    """The loopback server, configured for the child through the environment."""
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", server.url)
    return server


def user_texts(server: LoopbackServer, since: int = 0) -> list[str]:
    """The prompts the server received; a request a kill cut before its body ended (logged
    without one, answered with a 400) asked nothing."""
    return [
        r.body["messages"][-1]["content"]
        for r in server.chat_requests[since:]
        if isinstance(r.body, dict)
    ]


# -- chat --------------------------------------------------------------------------------


def test_chat_prints_the_reply_to_a_prompt_argument(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODLEMATE_MODEL", "gpt-4o")
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", "http://127.0.0.1:9/v1")  # --endpoint beats it
    server.enqueue(Reply(text="Two, three, five."))
    out = run_cli(
        "chat",
        *("--endpoint", server.url, "-s", "Be brief.", "--temperature", "0.2"),
        *("--max-tokens", "50", "Name primes."),
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "Two, three, five.\n", "")
    (request,) = server.chat_requests
    assert request.body["model"] == "gpt-4o"  # from MOODLEMATE_MODEL
    assert request.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name primes."},
    ]
    assert request.body["temperature"] == 0.2
    assert request.body["max_tokens"] == 50


def test_chat_reads_the_prompt_from_stdin(endpoint: LoopbackServer) -> None:
    out = run_cli("chat", stdin="a piped prompt\n")
    assert (out.returncode, out.stdout) == (0, "Echo: a piped prompt\n")  # the server echoes
    (request,) = endpoint.chat_requests
    assert request.body["messages"] == [{"role": "user", "content": "a piped prompt"}]


def test_chat_dash_reads_stdin_and_usage_goes_to_stderr(
    endpoint: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODLEMATE_MODEL", "gpt-4o")
    endpoint.enqueue(Reply(text="ok", prompt_tokens=1000, completion_tokens=500))
    out = run_cli("chat", "--usage", "-m", "gpt-4o-mini", "-", stdin="from stdin " * 250)
    assert (out.returncode, out.stdout) == (0, "ok\n")
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens
    assert "1500 tokens: 1000 prompt + 500 completion" in out.stderr
    assert "cost $0.000450" in out.stderr
    (request,) = endpoint.chat_requests
    assert request.body["model"] == "gpt-4o-mini"  # -m beats MOODLEMATE_MODEL
    assert request.body["messages"][-1]["content"] == "from stdin " * 250


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--temperature", "3", "hi"], "", "temperature must be between 0 and 2"),
        (["--max-tokens", "0", "hi"], "", "must be at least 1"),
        (["--endpoint", "ftp://x", "hi"], "", "must use http or https"),
        ([], "  \n", "the prompt is empty"),
    ],
)
def test_chat_usage_errors_exit_2_before_sending(
    endpoint: LoopbackServer, args: list[str], stdin: str, message: str
) -> None:
    out = run_cli("chat", *args, stdin=stdin)
    assert out.returncode == 2
    assert message in out.stderr
    assert out.stdout == ""
    assert endpoint.chat_requests == []


def test_chat_provider_error_exits_1_with_its_type(endpoint: LoopbackServer) -> None:
    endpoint.enqueue(Fault.status(400, message="bad model"))
    out = run_cli("chat", "hi")
    assert out.returncode == 1
    assert "BadRequestError: bad model" in out.stderr
    assert out.stdout == ""


def test_chat_never_sends_or_prints_an_openai_key_to_a_custom_endpoint(
    endpoint: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint.api_key = "sk-loopback-only-0000"
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    out = run_cli("chat", "hi")
    assert out.returncode == 1
    assert "AuthenticationError" in out.stderr
    assert TEST_KEY not in out.stderr + out.stdout
    assert "authorization" not in endpoint.chat_requests[0].headers


# -- tokens ------------------------------------------------------------------------------

TEXT = "Tokenizers disagree: antidisestablishmentarianism, 東京, and emoji 🎉🎉."


def test_tokens_counts_a_file_offline(tmp_path: Path) -> None:
    (tmp_path / "prompt.txt").write_text(TEXT, encoding="utf-8")
    env = {**os.environ, "MOODLEMATE_ENDPOINT": "http://127.0.0.1:9/v1"}  # nothing listens
    out = run_cli("tokens", "prompt.txt", env=env)
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == f"{GPT().count_tokens(TEXT, 'gpt-4o-mini')}\n"


def test_tokens_counts_stdin_with_the_models_tokenizer() -> None:
    out = run_cli("tokens", "-m", "gpt-4", stdin=TEXT)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{GPT().count_tokens(TEXT, 'gpt-4')}\n"
    assert out.stdout != f"{GPT().count_tokens(TEXT, 'gpt-4o-mini')}\n"  # cl100k, not o200k


def test_tokens_unreadable_input_is_a_usage_error_like_batchs(tmp_path: Path) -> None:
    out = run_cli("tokens", "no-such-file.txt")
    assert out.returncode == 2
    assert "cannot read no-such-file.txt: No such file or directory" in out.stderr
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    assert run_cli("tokens", "latin1.txt").returncode == 2
    chat = subprocess.run([*COMMAND, "chat", "-"], input=b"caf\xe9\n", capture_output=True)
    assert (chat.returncode, chat.stdout) == (2, b"")
    assert b"standard input is not UTF-8 text (byte 4)" in chat.stderr


# -- demo and help -----------------------------------------------------------------------


def test_demo_runs_the_stack_with_no_key_and_no_endpoint() -> None:
    out = run_cli("demo")
    assert "moodlemate-ai serve --port 8000" in out.stdout  # where to go next, still no key
    assert out.returncode == 0, out.stderr
    assert "chat_completion('gpt-4o-mini') -> 'Hello! I am answering" in out.stdout
    assert "count_tokens('The quick brown fox jumps over the lazy dog.', 'gpt-4o-mini') -> 10" in (
        out.stdout
    )
    assert "retry: openai gpt-4o-mini: attempt 1 of 6 failed (RateLimitError" in out.stdout
    assert "after 2 attempts" in out.stdout
    assert "ledger: 2 calls, 40 tokens, $0.00001275" in out.stdout


def test_help_and_usage_errors() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    for command in ("chat", "tokens", "batch", "demo"):
        assert command in top.stdout
    assert "exit status" in run_cli("batch", "--help").stdout
    wrong = run_cli("chat", "--translate", "hi")
    assert wrong.returncode == 2
    assert "unrecognized arguments: --translate" in wrong.stderr
    assert run_cli("batch", "in.jsonl").returncode == 2  # -o is required


# -- batch -------------------------------------------------------------------------------


def write_input(path: Path, n: int, **extra: Any) -> list[str]:
    ids = [f"q{i}" for i in range(n)]
    with path.open("w", encoding="utf-8") as file:
        for item_id in ids:
            file.write(json.dumps({"id": item_id, "user": f"question {item_id}", **extra}) + "\n")
    return ids


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def answered(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["id"] for r in records if r["ok"])


def answer_by_id(body: dict[str, Any]) -> Reply | Fault:
    """Replies that name the id they answer, so the output can be checked against the input."""
    question = body["messages"][-1]["content"]
    return Reply(text=f"answer to {question}")


def asked_ids(server: LoopbackServer, since: int = 0) -> list[str]:
    return [text.removeprefix("question ") for text in user_texts(server, since)]


@pytest.mark.soak
def test_batch_of_500_with_injected_faults_answers_every_id_once(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    ids = write_input(tmp_path / "in.jsonl", 500)
    broken = {f"q{i}" for i in range(0, 500, 100)}

    def respond(body: dict[str, Any]) -> Reply | Fault:
        question = body["messages"][-1]["content"]
        if question.removeprefix("question ") in broken:
            return Fault.status(400, message="this one is refused")
        return answer_by_id(body)

    endpoint.responder = respond
    endpoint.fault_rate(0.1, seed=7)  # 429s, 500s, 503s and connection resets
    first = run_cli("batch", "in.jsonl", "-o", "out.jsonl", "--concurrency", "16")
    assert first.returncode == 1, first.stderr
    assert "succeeded  495" in first.stderr
    assert "failed     5" in first.stderr
    records = read_output(tmp_path / "out.jsonl")
    assert len(records) == 500
    assert answered(records) == Counter(set(ids) - broken)
    failures = [r for r in records if not r["ok"]]
    assert {r["id"] for r in failures} == broken
    assert {r["error"]["type"] for r in failures} == {"BadRequestError"}
    assert {r["error"]["status"] for r in failures} == {400}
    assert all(r["error"]["message"] == "this one is refused" for r in failures)
    ok = [r for r in records if r["ok"]]
    assert all(r["text"] == f"answer to question {r['id']}" for r in ok)
    assert max(r["attempts"] for r in ok) > 1  # the faults were retried, not recorded
    assert sum(r["attempts"] for r in records) == len(endpoint.chat_requests)

    broken.clear()  # the server now answers everything: a rerun sends only the failed five
    before = len(endpoint.chat_requests)
    second = run_cli("batch", "in.jsonl", "-o", "out.jsonl", "--concurrency", "16")
    assert second.returncode == 0, second.stderr
    assert "skipped    495" in second.stderr
    assert set(asked_ids(endpoint, before)) == {f"q{i}" for i in range(0, 500, 100)}
    assert answered(read_output(tmp_path / "out.jsonl")) == Counter(ids)


def test_batch_records_usage_cost_and_parameters(endpoint: LoopbackServer, tmp_path: Path) -> None:
    # Prompts long enough for the 1,000 prompt tokens the replies report.
    long_a, long_c = "a " * 500, "c " * 500
    lines = [
        {"id": 1, "system": "Be brief.", "user": long_a, "model": "gpt-4o", "max_tokens": 100},
        {"id": "two", "user": "b", "temperature": 0},
        {"id": 3, "user": long_c, "model": "my-local-model"},
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    big = Reply(text="x", prompt_tokens=1000, completion_tokens=100)
    endpoint.enqueue(big, Reply(text="y", prompt_tokens=1, completion_tokens=0), big)
    out = run_cli("batch", "in.jsonl", "-o", "out.jsonl", "-m", "gpt-4o-mini", "-c", "1")
    assert out.returncode == 0, out.stderr
    bodies = {r.body["messages"][-1]["content"]: r.body for r in endpoint.chat_requests}
    assert bodies[long_a]["model"] == "gpt-4o"
    assert bodies[long_a]["max_tokens"] == 100
    assert bodies[long_a]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert bodies["b"]["model"] == "gpt-4o-mini"  # from -m
    assert bodies["b"]["temperature"] == 0
    assert bodies[long_c]["temperature"] == 0.7  # the library's default
    records = {r["id"]: r for r in read_output(tmp_path / "out.jsonl")}
    assert set(records) == {1, "two", 3}  # ids keep their JSON type
    assert records[1]["usage"]["total_tokens"] == 1100
    assert records[1]["cost"] == "0.0035"  # gpt-4o: $2.50 in, $10 out per million
    assert records["two"]["cost"] == "0.00000015"  # a plain decimal, never "1.5E-7"
    assert records[3]["cost"] is None  # unknown price: unknown, not zero
    assert "(+1 calls at unknown price)" in out.stderr
    assert "tokens     2201" in out.stderr


def test_batch_validates_the_whole_input_before_sending(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    (tmp_path / "in.jsonl").write_text(
        '{"id": "a", "user": "fine"}\n'
        '{"id": "b", "user": "fine"}\n'
        '{"id": "c", "user": "broken\n'
        '{"id": "d", "usr": "typo"}\n'
        '{"id": "a", "user": "again"}\n'
        '{"id": "e"}\n'
        '{"id": "f", "user": "x", "temperature": 9}\n'
        "[1, 2]\n"
    )
    out = run_cli("batch", "in.jsonl", "-o", "out.jsonl")
    assert out.returncode == 2
    for expected in (
        "in.jsonl: 6 problems, nothing was sent",
        "in.jsonl:3: not valid JSON",
        "in.jsonl:4: unknown field 'usr'",
        "in.jsonl:5: duplicate id 'a' (first on line 1)",
        "in.jsonl:6: missing 'user'",
        "in.jsonl:7: temperature must be between 0 and 2",
        "in.jsonl:8: expected a JSON object, got an array",
    ):
        assert expected in out.stderr
    assert endpoint.chat_requests == []
    assert not (tmp_path / "out.jsonl").exists()


def test_batch_missing_input_is_a_usage_error(endpoint: LoopbackServer) -> None:
    out = run_cli("batch", "nope.jsonl", "-o", "out.jsonl")
    assert out.returncode == 2
    assert "cannot read nope.jsonl: No such file or directory" in out.stderr


def test_batch_stops_on_a_rejected_key_instead_of_failing_every_item(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.jsonl", 200)
    endpoint.api_key = "sk-the-server-wants-this-one"
    out = run_cli("batch", "in.jsonl", "-o", "out.jsonl", "-c", "4")
    assert out.returncode == 1
    assert "stopped early: AuthenticationError" in out.stderr
    assert "batch: stopped early in" in out.stderr  # the summary does not claim "finished"
    assert "finished" not in out.stderr
    assert len(endpoint.chat_requests) <= 4 * 2
    records = read_output(tmp_path / "out.jsonl")
    assert records  # the items that met the error are recorded ...
    assert all(r["error"]["type"] == "AuthenticationError" for r in records)
    assert "not sent" in out.stderr  # ... and the rest are left for a rerun


def test_batch_resumes_after_a_torn_last_line(endpoint: LoopbackServer, tmp_path: Path) -> None:
    ids = write_input(tmp_path / "in.jsonl", 5)
    endpoint.responder = answer_by_id
    done = [
        {"id": item_id, "ok": True, "text": f"answer to question {item_id}"} for item_id in ids[:3]
    ]
    torn = b'{"id": "q3", "ok": true, "text": "answ'
    (tmp_path / "out.jsonl").write_bytes(
        b"".join(json.dumps(r).encode() + b"\n" for r in done) + torn
    )
    out = run_cli("batch", "in.jsonl", "-o", "out.jsonl")
    assert out.returncode == 0, out.stderr
    assert f"dropped an incomplete last line ({len(torn)} bytes)" in out.stderr
    assert "resuming: 3 of 5 ids already answered" in out.stderr
    assert sorted(asked_ids(endpoint)) == ["q3", "q4"]
    assert answered(read_output(tmp_path / "out.jsonl")) == Counter(ids)


def test_batch_refuses_an_output_damaged_in_the_middle(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.jsonl", 2)
    (tmp_path / "out.jsonl").write_text(
        '{"id": "q0", "ok": true}\nnot json\n{"id": "q1", "ok": true}\n'
    )
    out = run_cli("batch", "in.jsonl", "-o", "out.jsonl")
    assert out.returncode == 2
    assert "out.jsonl:2: not a batch result line" in out.stderr
    assert endpoint.chat_requests == []


# A shell started in the background ignores SIGINT, and its children inherit that; a user's
# foreground command does not. Reset it before exec'ing the command, as a terminal would.
RESTORING_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


def _start_slow_batch(endpoint: LoopbackServer, tmp_path: Path, n: int) -> subprocess.Popen[str]:
    """A batch slow enough (n x 100 ms over 4 workers) that a kill lands mid-run."""
    write_input(tmp_path / "in.jsonl", n)
    endpoint.responder = lambda body: Reply(
        text=f"answer to {body['messages'][-1]['content']}", delay=0.1
    )
    proc = subprocess.Popen(
        [*RESTORING_SIGINT, *COMMAND, "batch", "in.jsonl", "-o", "out.jsonl", "-c", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    output = tmp_path / "out.jsonl"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if output.exists() and output.read_bytes().count(b"\n") >= 20:
            return proc
        time.sleep(0.01)
    proc.kill()
    pytest.fail("the batch wrote no results")


def _resume_and_check(endpoint: LoopbackServer, tmp_path: Path, ids: list[str]) -> None:
    first_answers = answered(read_output(tmp_path / "out.jsonl"))
    assert max(first_answers.values()) == 1
    assert 20 <= len(first_answers) < len(ids)  # the kill landed mid-run
    sent_before = len(endpoint.chat_requests)
    endpoint.responder = answer_by_id
    second = run_cli("batch", "in.jsonl", "-o", "out.jsonl", "-c", "8")
    assert second.returncode == 0, second.stderr
    resent = asked_ids(endpoint, sent_before)
    assert not set(resent) & set(first_answers)  # nothing answered was paid for twice
    assert len(resent) == len(set(resent)) == len(ids) - len(first_answers)
    final = read_output(tmp_path / "out.jsonl")
    assert answered(final) == Counter(ids)  # every id answered exactly once
    assert all(r["text"] == f"answer to question {r['id']}" for r in final)


def test_batch_interrupted_by_sigint_writes_what_was_in_flight_then_resumes(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    proc = _start_slow_batch(endpoint, tmp_path, 100)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "interrupted: waiting for" in stderr
    assert "moodlemate-ai batch: interrupted" in stderr
    # Graceful: every request the server saw was answered into the output, none lost.
    assert sorted(asked_ids(endpoint)) == sorted(answered(read_output(tmp_path / "out.jsonl")))
    _resume_and_check(endpoint, tmp_path, [f"q{i}" for i in range(100)])


def test_batch_terminated_by_sigterm_also_writes_what_was_in_flight(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    proc = _start_slow_batch(endpoint, tmp_path, 100)
    proc.terminate()
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 143, stderr
    assert "moodlemate-ai batch: interrupted" in stderr
    assert sorted(asked_ids(endpoint)) == sorted(answered(read_output(tmp_path / "out.jsonl")))


def test_batch_killed_by_sigkill_resumes_without_answering_twice(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    proc = _start_slow_batch(endpoint, tmp_path, 100)
    proc.kill()
    proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL
    _resume_and_check(endpoint, tmp_path, [f"q{i}" for i in range(100)])


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.jsonl", 3)
    with ResultLog(tmp_path / "out.jsonl"):  # what a running batch holds
        out = run_cli("batch", "in.jsonl", "-o", "out.jsonl")
    assert out.returncode == 2
    assert "out.jsonl is in use by another batch run" in out.stderr
    assert endpoint.chat_requests == []


def test_batch_bounds_concurrency_and_draws_a_progress_bar_on_a_terminal(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.jsonl", 30)
    lock = threading.Lock()
    active = peak = 0

    def slow(body: dict[str, Any]) -> Reply:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.03)
        with lock:
            active -= 1
        return Reply()

    endpoint.responder = slow
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*COMMAND, "batch", "in.jsonl", "-o", "out.jsonl", "--concurrency", "3"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=dict(os.environ),
    )
    os.close(terminal)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the child closes the terminal
        while chunk := os.read(controller, 4096):
            shown += chunk
    os.close(controller)
    assert proc.wait(timeout=30) == 0
    assert peak == 3
    text = shown.decode()
    assert "\r\x1b[K[########################] 30/30 done (100%)" in text
    assert "batch: 30/30" not in text  # the plain-line form is for logs, not terminals
    assert "moodlemate-ai batch: finished" in text


# -- keys ------------------------------------------------------------------------------------


def test_chat_sends_the_key_option_to_the_endpoint_option() -> None:
    with LoopbackServer(api_key=TEST_KEY) as keyed:
        done = run_cli("chat", "--endpoint", keyed.url, "--key", TEST_KEY, "hi")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "Echo: hi\n"
        assert keyed.chat_requests[0].headers["authorization"] == f"Bearer {TEST_KEY}"


def test_chat_sends_moodlemate_api_key_to_the_endpoint_option() -> None:
    with LoopbackServer(api_key=TEST_KEY) as keyed:
        env = {**os.environ, "MOODLEMATE_API_KEY": TEST_KEY}
        done = run_cli("chat", "--endpoint", keyed.url, "hi", env=env)
        assert done.returncode == 0, done.stderr
        assert keyed.chat_requests[0].headers["authorization"] == f"Bearer {TEST_KEY}"


def test_chat_with_only_openai_api_key_says_why_the_endpoint_refused() -> None:
    with LoopbackServer(api_key=TEST_KEY) as keyed:
        env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
        done = run_cli("chat", "--endpoint", keyed.url, "hi", env=env)
        assert done.returncode != 0
        assert "OPENAI_API_KEY is set but was not sent" in done.stderr
        assert "--key" in done.stderr
        assert TEST_KEY not in done.stderr
        assert "authorization" not in keyed.chat_requests[0].headers


def test_a_malformed_key_option_is_a_usage_error_before_sending(server: LoopbackServer) -> None:
    done = run_cli("chat", "--endpoint", server.url, "--key", "sk-with space-0123", "hi")
    assert done.returncode == 2
    assert "whitespace" in done.stderr
    assert server.requests == []
