"""A stalled store never stalls an event loop, and every wait on a store keeps its bound.

A real process holds the spend log's SQLite file write-locked (``BEGIN EXCLUSIVE``), or a real
redis-server is frozen with SIGSTOP, while async calls reserve, settle and log: a heartbeat
task on the loop measures its largest gap. Sixteen threads writing behind a locked log each
give up within the documented ``busy_timeout`` instead of queueing one behind another."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moodlemate.ai import GPT, RetryPolicy
from moodlemate.ai._spend_log import DEFAULT_BUSY_TIMEOUT
from moodlemate.testing import LoopbackServer, Reply
from support import TEST_KEY

ONCE = RetryPolicy(attempts=1, deadline=30.0, attempt_timeout=10.0)
STALL = 0.5
"""The largest heartbeat gap allowed: far below one store timeout (1 s), with room for a
loaded two-core machine."""

_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@contextmanager
def write_locked(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holds ``path``'s write lock for ``seconds``."""
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked"
        yield locker
    finally:
        locker.kill()
        locker.wait(10)


async def sent(server: LoopbackServer, requests: int) -> None:
    """Wait until the server has received ``requests`` chat requests."""
    deadline = time.monotonic() + 30
    while len(server.chat_requests) < requests and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(server.chat_requests) >= requests


async def largest_gap(work: Awaitable[Any]) -> tuple[float, Any]:
    """Run ``work`` beside a heartbeat on the same loop: (its largest gap, work's result)."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    try:
        result = await work
    finally:
        stop.set()
        await beat
    return max(gaps), result


def test_a_write_locked_spend_log_never_stalls_the_loop(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.db"
    server.responder = lambda body: Reply(text="ok", delay=0.5)
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        log=path,
        budget=5,
        budget_scope="team",
        retry=ONCE,
        pacing=False,
    )
    gpt.complete("gpt-4o-mini", "", "creates the file")

    async def calls() -> list[Any]:
        # In flight when the lock is taken: their settles and rows meet the locked file.
        tasks = [asyncio.create_task(gpt.acomplete("gpt-4o-mini", "", "hi")) for _ in range(8)]
        await sent(server, 1 + 8)
        # Started from a thread: the locker's own start-up must not count as a stall.
        lock = write_locked(path, 3.0)
        await asyncio.to_thread(lock.__enter__)
        try:
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await asyncio.to_thread(lock.__exit__, None, None, None)

    async def main() -> tuple[float, Any]:
        try:
            return await largest_gap(calls())
        finally:
            await gpt.aclose()

    gap, results = asyncio.run(main())
    print(f"\n  largest heartbeat gap: {gap:.3f}s")
    assert gap < STALL, f"the loop stalled {gap:.2f}s"
    assert [r.text for r in results] == ["ok"] * 8, results
    assert gpt.log is not None
    assert gpt.log.dropped >= 1  # the rows met the lock, and gave up within its bound


def test_a_frozen_redis_never_stalls_the_loop_while_calls_settle(server: LoopbackServer) -> None:
    import redis_server

    own = redis_server.start()
    try:
        server.responder = lambda body: Reply(text="ok", delay=0.5)
        gpt = GPT(
            "openai",
            endpoint=server.url,
            api_key=TEST_KEY,
            budget=5,
            budget_scope="fleet",
            redis=own.url,
            retry=ONCE,
            pacing=False,
        )
        gpt.complete("gpt-4o-mini", "", "warms the client up")

        async def calls() -> list[Any]:
            tasks = [asyncio.create_task(gpt.acomplete("gpt-4o-mini", "", "hi")) for _ in range(8)]
            await sent(server, 1 + 8)  # reserved and sent; Redis freezes before they settle
            own.pause()
            return await asyncio.gather(*tasks, return_exceptions=True)

        async def main() -> tuple[float, Any]:
            try:
                return await largest_gap(calls())
            finally:
                await gpt.aclose()

        gap, results = asyncio.run(main())
    finally:
        own.stop()
    print(f"\n  largest heartbeat gap: {gap:.3f}s")
    assert gap < STALL, f"the loop stalled {gap:.2f}s"
    assert [r.text for r in results] == ["ok"] * 8, results
    assert gpt.shared_budget is not None
    assert gpt.shared_budget.pending == 8  # the settles are kept for when Redis answers


def test_sixteen_threads_behind_a_locked_log_each_wait_at_most_the_bound(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "spend.db"
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, log=path, retry=ONCE, pacing=False)
    gpt.complete("gpt-4o-mini", "", "creates the file")
    waits: list[float] = []

    def call() -> None:
        began = time.monotonic()
        gpt.complete("gpt-4o-mini", "", "hi")
        waits.append(time.monotonic() - began)

    with write_locked(path, 8.0):
        threads = [threading.Thread(target=call) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(waits) == 16
    print(f"\n  16 threads behind a locked log: the longest waited {max(waits):.2f}s")
    assert gpt.log is not None
    assert gpt.log.dropped == 16  # every row gave up on the lock...
    assert max(waits) < DEFAULT_BUSY_TIMEOUT + 1.0  # ...within the bound, not one after another
