"""Pooled clients stay bounded: a service that serves many users, each with their own key,
must not keep one client and its open connections per key for the life of the process."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time

import pytest
from moodlemate.ai import GPT
from moodlemate.ai.testing import LoopbackServer
from moodlemate.providers.openai.clients import MAX_CLIENTS

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts open files in /proc"
)


USERS = 70
# Each pooled connection is two descriptors here: the client's end and the server's.
LIMIT = 2 * MAX_CLIENTS + 20


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settled_growth(before: int) -> int:
    """Descriptors opened since ``before``, once the server's threads have closed their ends
    of the connections whose clients were collected (they notice a moment later)."""
    gc.collect()
    give_up = time.monotonic() + 3.0
    while _open_files() - before >= LIMIT and time.monotonic() < give_up:
        time.sleep(0.05)
    return _open_files() - before


def _user(server: LoopbackServer, n: int) -> GPT:
    return GPT("openai", endpoint=server.url, api_key=f"sk-user-{n:06d}-0123456789")


def test_many_keys_do_not_keep_a_connection_each(server: LoopbackServer) -> None:
    _user(server, 0).chat_completion("gpt-4o-mini", "", "warm up")
    before = _open_files()
    for n in range(1, USERS + 1):
        _user(server, n).chat_completion("gpt-4o-mini", "", "hi")
    assert _settled_growth(before) < LIMIT


def test_many_keys_on_one_event_loop_do_not_keep_a_connection_each(
    server: LoopbackServer,
) -> None:
    async def users() -> int:
        await _user(server, 0).achat_completion("gpt-4o-mini", "", "warm up")
        before = _open_files()
        for n in range(1, USERS + 1):
            await _user(server, n).achat_completion("gpt-4o-mini", "", "hi")
        grown = _settled_growth(before)
        await _user(server, 0).aclose()  # the loop's remaining clients, before it ends
        return grown

    assert asyncio.run(users()) < LIMIT


def test_one_event_loop_reuses_its_connections_and_keeps_a_bounded_few(
    server: LoopbackServer,
) -> None:
    """Calls one after another reuse one connection; a burst opens one per call in flight and
    keeps at most the pool's idle limit of them afterwards (the lean transport's own pool)."""
    from moodlemate.providers.openai.lean_pools import MAX_IDLE

    gpt = GPT("openai", endpoint=server.url, api_key="sk-one-user-0123456789")
    burst = MAX_IDLE + 30

    async def calls() -> tuple[int, int]:
        await gpt.achat_completion("gpt-4o-mini", "", "warm up")
        before = _open_files()
        for _ in range(50):
            await gpt.achat_completion("gpt-4o-mini", "", "hi")
        sequential = _open_files() - before
        await asyncio.gather(*(gpt.achat_completion("gpt-4o-mini", "", "hi") for _ in range(burst)))
        await asyncio.sleep(0.2)  # the server's threads close the ends of dropped connections
        kept = _open_files() - before
        await gpt.aclose()
        return sequential, kept

    sequential, kept = asyncio.run(calls())
    assert sequential <= 2  # one connection, maybe replaced once: not one per call
    assert kept <= 2 * MAX_IDLE + 10
