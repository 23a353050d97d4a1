"""Wall-clock bounds against servers that drip: each attempt ends at its timeout, the call at
its deadline, streams at their opt-in bounds, and a slow price catalog costs little."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from adversarial import (
    AdversarialServer,
    Behaviour,
    deltas_forever,
    drip_body,
    drip_headers,
    instant,
    keepalive_forever,
)
from moodlemate.ai import GPT, APITimeoutError, RetryPolicy, StreamInterruptedError
from moodlemate.providers.openrouter import catalog
from support import TEST_KEY

OR_KEY = "sk-or-v1-5e2a9c0d7b1f4e3a8c6d"
DRIPS: dict[str, Callable[[], Behaviour]] = {"headers": drip_headers, "body": drip_body}

# Transport-level bounds: each test runs on both HTTP transports (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_transport")


def _gpt(server: AdversarialServer, **policy: Any) -> GPT:
    return GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=RetryPolicy(**policy))


@pytest.mark.parametrize("style", ["sync", "async"])
@pytest.mark.parametrize("drip", sorted(DRIPS))
def test_a_dripping_server_cannot_stretch_the_deadline(drip: str, style: str) -> None:
    with AdversarialServer({"/chat/completions": DRIPS[drip]()}) as server:
        gpt = _gpt(
            server, attempts=2, deadline=2.0, attempt_timeout=1.2, wait_initial=0.05, wait_jitter=0
        )
        started = time.monotonic()
        with pytest.raises(APITimeoutError) as caught:
            _complete(gpt, style)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 1.0, f"{drip} drip held a {style} call for {elapsed:.1f}s"
    assert caught.value.attempts == 2  # the first attempt ended at its own timeout


def _complete(gpt: GPT, style: str) -> str:
    if style == "sync":
        return gpt.chat_completion("gpt-4o-mini", "", "Hi")
    return asyncio.run(gpt.achat_completion("gpt-4o-mini", "", "Hi"))


def _stream(gpt: GPT, style: str) -> str:
    """Consume a stream; returns the text or raises what the stream raised."""
    if style == "sync":
        with gpt.stream("gpt-4o-mini", "", "Hi") as stream:
            return "".join(stream)

    async def consume() -> str:
        parts = []
        async with gpt.astream("gpt-4o-mini", "", "Hi") as stream:
            async for delta in stream:
                parts.append(delta)
        return "".join(parts)

    return asyncio.run(consume())


@pytest.mark.parametrize("style", ["sync", "async"])
def test_the_idle_bound_ends_a_stream_that_only_sends_keep_alives(style: str) -> None:
    with AdversarialServer({"/chat/completions": keepalive_forever()}) as server:
        gpt = _gpt(server, attempts=1, stream_idle_timeout=0.8)
        started = time.monotonic()
        with pytest.raises(StreamInterruptedError) as caught:
            _stream(gpt, style)
        elapsed = time.monotonic() - started
    assert 0.8 <= elapsed < 0.8 + 1.0
    assert caught.value.partial_text == "first"
    assert "stream_idle_timeout" in str(caught.value)


@pytest.mark.parametrize("style", ["sync", "async"])
def test_the_total_bound_ends_a_stream_that_never_stops(style: str) -> None:
    with AdversarialServer({"/chat/completions": deltas_forever()}) as server:
        # The idle bound is met by every delta; only the total one can end this stream.
        gpt = _gpt(server, attempts=1, stream_deadline=1.5, stream_idle_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(StreamInterruptedError) as caught:
            _stream(gpt, style)
        elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 1.5 + 1.0
    assert caught.value.partial_text.startswith("firstmore more ")
    assert "stream_deadline" in str(caught.value)


def test_streams_still_have_no_bound_after_the_first_delta_by_default() -> None:
    policy = RetryPolicy()
    assert policy.stream_deadline is None
    assert policy.stream_idle_timeout is None


def _router(server: AdversarialServer) -> GPT:
    return GPT(
        "openrouter",
        endpoint=server.url,
        api_key=OR_KEY,
        retry=RetryPolicy(attempts=1, deadline=5.0),
    )


def _warm_up() -> None:
    """One call through the whole stack first, so the figures measured next are the
    catalog's cost, not the first import of the SDK."""
    with AdversarialServer({"/models": instant(b"{}"), "/chat/completions": instant()}) as other:
        _router(other).complete("openai/gpt-4o-mini", "", "Hi")


def test_a_dripping_price_catalog_costs_concurrent_callers_at_most_its_bound() -> None:
    routes = {"/models": drip_body(0.2), "/chat/completions": instant()}
    _warm_up()
    with AdversarialServer(routes) as server:
        elapsed: list[float] = []
        errors: list[BaseException] = []

        def call() -> None:
            started = time.monotonic()
            try:
                _router(server).complete("openai/gpt-4o-mini", "", "Hi")
            except BaseException as exc:  # reported below
                errors.append(exc)
            elapsed.append(time.monotonic() - started)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        models_requests = sum(hit.endswith("/models") for hit in server.hits)
    assert errors == []
    assert max(elapsed) < catalog.FETCH_TIMEOUT + 1.0, elapsed
    assert models_requests == 1  # one fetch for all eight; its failure is remembered


def test_a_dripping_price_catalog_never_blocks_the_event_loop() -> None:
    routes = {"/models": drip_body(0.2), "/chat/completions": instant()}

    async def main() -> tuple[float, float]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def heartbeat() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        started = time.monotonic()
        try:
            await gpt.acomplete("openai/gpt-4o-mini", "", "Hi")
        finally:
            elapsed = time.monotonic() - started
            done.set()
            await beat
            await gpt.aclose()
        return elapsed, max(gaps)

    _warm_up()
    with AdversarialServer(routes) as server:
        gpt = _router(server)
        elapsed, longest_gap = asyncio.run(main())
    assert elapsed < catalog.FETCH_TIMEOUT + 1.0
    # A fetch on the loop would stall it for the whole fetch (2 s); half of that leaves a loaded
    # 2-core machine's scheduling hiccups room without letting a blocking fetch pass.
    assert longest_gap < catalog.FETCH_TIMEOUT / 2, f"the event loop stalled for {longest_gap:.2f}s"


BATCH = r"""
import sys
import time
from moodlemate.ai import GPT, RetryPolicy
from moodlemate.ai.batch import BatchInterrupted, parse_items, run_batch
from moodlemate.ai.cli.batch import _TerminateGracefully

# One call first, so the deadlines measured next do not pay for the first import of the HTTP
# stack (seconds on a loaded machine, and no call can interrupt an import).
GPT("openai", endpoint=sys.argv[4], api_key=sys.argv[2]).complete("gpt-4o-mini", "", "warm")
gpt = GPT("openai", endpoint=sys.argv[1], api_key=sys.argv[2],
          retry=RetryPolicy(attempts=1, deadline=2.0))
lines = [f'{{"id": {n}, "user": "q{n}"}}' for n in range(8)]
items = parse_items(lines, default_model="gpt-4o-mini")
_TerminateGracefully()  # SIGTERM as the command line handles it: stop, wait for in-flight
print("started", flush=True)
try:
    run_batch(gpt, items, sys.argv[3], concurrency=4)
except BatchInterrupted as stopped:
    print("interrupted", stopped.summary.failed, time.monotonic(), flush=True)
"""


def _chat_hits(server: AdversarialServer) -> list[float]:
    """When each chat request reached ``server``."""
    # strict=False: polled while a server thread may have logged a time but not yet its path
    return [t for t, p in zip(server.hit_times, server.hits, strict=False) if "/chat/" in p]


def _wait_for(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not so within {within}s"
        time.sleep(0.01)


def test_a_batch_stopped_by_sigterm_waits_for_dripping_requests_only_until_their_deadline(
    tmp_path: Any,
) -> None:
    import signal
    import subprocess
    import sys

    with (
        AdversarialServer({"/chat/completions": drip_body()}) as server,
        AdversarialServer({"/chat/completions": instant()}) as warm,
    ):
        out_file = str(tmp_path / "out.jsonl")
        child = subprocess.Popen(
            [sys.executable, "-c", BATCH, server.url, TEST_KEY, out_file, warm.url],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started"
        # Requests in flight, dripping: counted at the server, not assumed after a sleep (a
        # loaded machine can take seconds to import the HTTP stack and connect).
        _wait_for(lambda: len(_chat_hits(server)) >= 4, 30.0)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
        sent = _chat_hits(server)
    word, failed, stopped_at = out.split()
    assert word == "interrupted"
    # Every request the server saw was written as timed out (the server never answers): none
    # lost, none waited for past its deadline; the rest were never sent, so a rerun sends
    # them. Four at a time; more than four only when a slow machine handled the signal after
    # the first ones had timed out and the next had started.
    assert int(failed) == len(sent)
    assert 4 <= len(sent) <= 8
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(written) == len(sent)
    assert not any(record["ok"] for record in written)
    # The batch stops once the last request sent reaches its 2 s deadline (it started before
    # the server saw it), not when the dripping server finishes (never). Read on the child's
    # clock, so a loaded machine's slow interpreter exit is not counted.
    assert float(stopped_at) - max(sent) < 2.0 + 1.0
