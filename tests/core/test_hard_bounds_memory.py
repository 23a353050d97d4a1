"""Size limits against servers that flood: each case ends in ResponseTooLargeError, and the
peak memory of the process making the call grows by a small multiple of the limit at most.

The call runs in a subprocess that reports its own peak RSS (VmHWM) before and after, so
the server threads of this test process do not blur the figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from adversarial import (
    AdversarialServer,
    Behaviour,
    endless_chunked,
    endless_sse_line,
    endless_text,
    gzip_bomb,
    huge_body,
    instant,
)
from moodlemate.ai import ResponseLimits, ResponseTooLargeError, ValidationError
from moodlemate.providers.openai.streaming import LineSplitter
from support import TEST_KEY

MiB = 1024 * 1024

CALLER = r"""
import asyncio, json, resource, sys
from moodlemate.ai import GPT, ResponseLimits, RetryPolicy

# A safety net for the unfixed code: fail with MemoryError rather than exhaust the machine.
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

url, style, limits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
gpt = GPT("openai", endpoint=url, api_key=sys.argv[4], retry=RetryPolicy(attempts=1, deadline=60),
          limits=ResponseLimits(**limits))
gpt.complete("warm-up", "", "Hi")  # imports, client, pool: paid before the baseline
before = peak_kib()
error = None
try:
    if style == "complete":
        gpt.complete("gpt-4o-mini", "", "Hi")
    elif style == "acomplete":
        asyncio.run(gpt.acomplete("gpt-4o-mini", "", "Hi"))
    else:
        with gpt.stream("gpt-4o-mini", "", "Hi") as stream:
            for _ in stream:
                pass
except Exception as exc:
    error = [type(exc).__name__, str(exc)]
print(json.dumps({"before": before, "after": peak_kib(), "error": error}))
"""

# Transport-level bounds: each test runs on both HTTP transports (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_transport")


def _call(behaviour: Behaviour, style: str, **limits: int) -> dict[str, Any]:
    with AdversarialServer(_after_a_warm_up(behaviour)) as server:
        done = subprocess.run(
            [sys.executable, "-c", CALLER, server.url, style, json.dumps(limits), TEST_KEY],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _after_a_warm_up(behaviour: Behaviour) -> dict[str, Behaviour]:
    """The first request (the warm-up) gets an honest reply, every later one ``behaviour``."""
    served: list[int] = []

    def route(sock: Any) -> None:
        served.append(1)
        (instant() if len(served) == 1 else behaviour)(sock)

    return {"/chat/completions": route}


def _assert_bounded(result: dict[str, Any], limit: int, multiple: int, name: str) -> None:
    assert result["error"] is not None, "the hostile response was accepted"
    kind, message = result["error"]
    assert kind == "ResponseTooLargeError", message
    assert f"ResponseLimits.{name}" in message  # names the limit and how to raise it
    grown = (result["after"] - result["before"]) * 1024
    print(f"peak RSS grew {grown / MiB:.1f} MiB (limit {limit / MiB:.0f} MiB)")
    assert grown < multiple * limit, f"peak RSS grew {grown / MiB:.0f} MiB"


@pytest.mark.parametrize("style", ["complete", "acomplete"])
def test_a_500_mb_body_stops_at_the_default_limit(style: str) -> None:
    result = _call(huge_body(500 * MiB), style)
    _assert_bounded(result, 16 * MiB, 3, "max_body_bytes")


def test_an_endless_chunked_body_stops_at_the_limit() -> None:
    result = _call(endless_chunked(), "complete", max_body_bytes=4 * MiB)
    _assert_bounded(result, 4 * MiB, 4, "max_body_bytes")


def test_a_gzip_body_that_inflates_to_1_gib_stops_at_the_default_limit() -> None:
    result = _call(gzip_bomb(1024), "complete")
    _assert_bounded(result, 16 * MiB, 3, "max_body_bytes")


def test_an_event_stream_line_that_never_ends_stops_at_the_default_event_limit() -> None:
    result = _call(endless_sse_line(), "stream")
    _assert_bounded(result, 1 * MiB, 8, "max_event_bytes")


def test_an_endless_stream_of_text_stops_at_the_text_limit() -> None:
    result = _call(endless_text(), "stream", max_stream_text=4 * MiB)
    _assert_bounded(result, 4 * MiB, 4, "max_stream_text")


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_stream_lines_split_like_the_sse_spec_even_across_reads(newline: bytes) -> None:
    body = newline.join([b"data: a", b"", b": ping", b"data: b", b""]) + newline
    for size in (1, 2, 3, len(body)):
        splitter = LineSplitter(limit=100)
        lines: list[str] = []
        for start in range(0, len(body), size):
            lines += splitter.feed(body[start : start + size])
        lines += splitter.flush()
        assert lines == ["data: a", "", ": ping", "data: b", ""], (newline, size)


def test_a_line_over_the_event_limit_is_refused_even_when_it_arrives_whole() -> None:
    splitter = LineSplitter(limit=10)
    with pytest.raises(ResponseTooLargeError, match="max_event_bytes"):
        splitter.feed(b"data: " + b"x" * 20 + b"\n")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_bad_limits_are_rejected(bad: object) -> None:
    with pytest.raises(ValidationError):
        ResponseLimits(max_body_bytes=bad)  # type: ignore[arg-type]
