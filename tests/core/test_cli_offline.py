"""A person at a terminal with no network: ``chat`` gives up within seconds on a server it
cannot reach, and says which host and port, and why (DNS, refused), in its first log line and
in its error. The library keeps its 24/7 policy. Nothing leaves the machine: the unresolvable
name goes through a resolver stub that fails every lookup but loopback's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from moodlemate.ai import GPT, RetryPolicy
from moodlemate.ai._network_failure import cause_of, host_port

_SCRIPT = shutil.which("moodlemate-ai", path=str(Path(sys.executable).parent))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "moodlemate.ai.cli"]
LIMIT = 10.0  # seconds a person waits for the verdict, Python's start-up included

RESOLVER_STUB = '''
"""Tests only: a resolver that knows loopback and nothing else, recording what it was asked."""
import os
import socket

_real = socket.getaddrinfo
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _stub(host, *args, **kwargs):
    with open(os.environ["RESOLVER_STUB_LOG"], "a") as log:
        log.write(f"{host}\\n")
    if host not in _LOOPBACK:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _real(host, *args, **kwargs)


socket.getaddrinfo = _stub
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed on leaving: nothing listens there


def chat(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    out = subprocess.run(
        [*COMMAND, "chat", "--no-log", *args, "Hello"],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=60,
    )
    return out, time.monotonic() - started


def test_a_refused_port_fails_within_seconds_naming_host_port_and_cause() -> None:
    port = free_port()
    out, elapsed = chat("--endpoint", f"http://127.0.0.1:{port}/v1")
    assert out.returncode == 1
    assert elapsed < LIMIT, out.stderr
    lines = out.stderr.splitlines()
    where = f"cannot reach 127.0.0.1:{port} (refused): nothing listens on that port"
    assert where in lines[0]  # the first log line: the first retry
    assert "attempt 1 of 3 failed" in lines[0]
    assert where in lines[-1]  # the error
    assert lines[-1].startswith("moodlemate-ai: APIConnectionError: ")
    assert "attempts=3" in lines[-1]


def test_a_name_that_does_not_resolve_fails_within_seconds(tmp_path: Path) -> None:
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(RESOLVER_STUB)
    asked = tmp_path / "asked.txt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(stub), os.environ.get("PYTHONPATH")])),
        "RESOLVER_STUB_LOG": str(asked),
    }
    out, elapsed = chat("--endpoint", "http://llm.example.com:8080/v1", env=env)
    assert "llm.example.com" in asked.read_text().split(), "the resolver stub was not used"
    assert out.returncode == 1
    assert elapsed < LIMIT, out.stderr
    lines = out.stderr.splitlines()
    where = "cannot reach llm.example.com:8080 (DNS): the name does not resolve"
    assert where in lines[0]
    assert where in lines[-1]


def test_retries_and_deadline_flags_change_the_policy() -> None:
    port = free_port()
    out, _ = chat("--retries", "0", "--endpoint", f"http://127.0.0.1:{port}/v1")
    assert out.returncode == 1
    assert "retrying" not in out.stderr  # one attempt, no retry line
    assert "(refused)" in out.stderr
    for bad in (("--retries", "-1"), ("--deadline", "0"), ("--deadline", "nan")):
        usage, _ = chat(*bad)
        assert usage.returncode == 2, bad
        assert bad[0] in usage.stderr


def test_the_library_keeps_its_24_7_policy() -> None:
    assert GPT().retry == RetryPolicy()
    assert RetryPolicy().attempts == 6


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "DNS"),
        (ConnectionRefusedError(111, "Connection refused"), "refused"),
        (OSError(101, "Network is unreachable"), "unreachable"),
        (type("SSLCertVerificationError", (OSError,), {})("certificate verify failed"), "TLS"),
        (type("ConnectTimeout", (Exception,), {})("timed out"), "timeout"),
        (ValueError("something else"), None),
    ],
)
def test_the_cause_is_read_from_anywhere_in_the_chain(error: Exception, cause: str | None) -> None:
    outer = RuntimeError("Connection error.")
    outer.__cause__ = RuntimeError("wrapped")
    outer.__cause__.__context__ = error
    assert cause_of(outer) == cause


def test_host_port_uses_the_schemes_port() -> None:
    assert host_port("https://api.openai.com/v1") == "api.openai.com:443"
    assert host_port("http://localhost/v1") == "localhost:80"
    assert host_port("http://[::1]:8000/v1") == "[::1]:8000"
