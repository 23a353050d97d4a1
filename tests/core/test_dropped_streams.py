"""A stream (plain, typed, or over fallbacks) left with ``break`` and dropped, without ``with``
or ``close()``, is closed when the last reference to it goes, not when the garbage collector
next runs: the budget reservation is released, the connection closed, and the call hooks and
the spend log see the early close.

Each test runs with the collector off, so only reference counting can close the stream: a
reference cycle between a stream and its generator makes it fail."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from moodlemate.ai import GPT, BudgetExceededError, Completion, hookimpl
from moodlemate.ai._budget import DEFAULT_OUTPUT_ESTIMATE
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai._spend_log import SpendLog
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

SLOW = Reply(chunks=["word "] * 200, chunk_delay=0.05)
"""Ten seconds of deltas: a stream of it can only be short if it was closed early."""


class Ends:
    """A plugin keeping how each call ended."""

    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []

    @hookimpl
    def after_response(self, completion: Completion | None, error: BaseException | None) -> None:
        self.calls.append(error)


class Dropping:
    """A GPT with a budget (so a call holds a reservation), a spend log and a hook plugin."""

    def __init__(self, server: LoopbackServer, tmp_path: Path, **options: object) -> None:
        self.server = server
        self.ends = Ends()
        plugins = PluginRegistry()
        plugins.register(self.ends, "ends")
        self.log = tmp_path / "spend.sqlite"
        self.gpt = GPT(
            "openai",
            endpoint=server.url,
            api_key=TEST_KEY,
            retry=FAST_RETRY,
            plugins=plugins,
            log=self.log,
            budget=Decimal(1),
            **options,  # type: ignore[arg-type]
        )

    def outcomes(self) -> list[str]:
        return [row.outcome for row in SpendLog(self.log).recent(10)]

    def open_connections(self) -> int:
        """Connections the server still serves (it sees a client hang up on its next write)."""
        httpd = self.server._httpd
        assert httpd is not None
        with httpd._connections_lock:
            return len(httpd._connections)

    def assert_closed_early(self) -> None:
        assert self.gpt.ledger.reserved == 0
        [error] = self.ends.calls
        assert isinstance(error, GeneratorExit)
        assert self.outcomes()[0] == "cancelled"
        assert self.gpt.ledger.calls == 0


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _soon(check: Callable[[], bool], within: float = 3.0) -> bool:
    """Whether ``check`` holds within ``within`` seconds (a slow reply lasts ten)."""
    end = time.monotonic() + within
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


async def _asoon(check: Callable[[], bool], within: float = 3.0) -> bool:
    """:func:`_soon`, yielding to the event loop in between."""
    end = time.monotonic() + within
    while not check():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.01)
    return True


def _worst(gpt: GPT) -> Decimal:
    """What a gpt-4o-mini call saying "hi" reserves (USD per million tokens, as priced)."""
    prompt = gpt.count_chat_tokens("", "hi")
    return (prompt * Decimal("0.15") + DEFAULT_OUTPUT_ESTIMATE * Decimal("0.60")) / 1_000_000


def test_a_stream_left_with_break_and_dropped_is_closed_at_once(
    server: LoopbackServer, tmp_path: Path, no_gc: None
) -> None:
    dropping = Dropping(server, tmp_path)
    server.enqueue(SLOW)
    for delta in dropping.gpt.stream("gpt-4o-mini", "", "hi"):
        assert delta == "word "
        assert dropping.gpt.ledger.reserved > 0
        break
    dropping.assert_closed_early()
    assert _soon(lambda: dropping.open_connections() == 0)


@pytest.mark.parametrize("scope", [None, "team-a"])  # own, or shared through the spend log
def test_a_dropped_stream_gives_its_budget_back_for_the_next_call(
    server: LoopbackServer, tmp_path: Path, no_gc: None, scope: str | None
) -> None:
    dropping = Dropping(server, tmp_path, budget_scope=scope)
    dropping.gpt.budget = _worst(dropping.gpt) * Decimal("1.5")  # room for one call at a time
    server.enqueue(SLOW, Reply(text="ok"))
    for _delta in dropping.gpt.stream("gpt-4o-mini", "", "hi"):
        with pytest.raises(BudgetExceededError):
            dropping.gpt.chat_completion("gpt-4o-mini", "", "hi")
        dropping.ends.calls.clear()  # the refused call's
        break
    dropping.assert_closed_early()
    assert dropping.gpt.chat_completion("gpt-4o-mini", "", "hi") == "ok"


def test_an_async_stream_left_with_break_is_closed_by_its_loop(
    server: LoopbackServer, tmp_path: Path, no_gc: None
) -> None:
    dropping = Dropping(server, tmp_path)
    server.enqueue(SLOW)

    async def main() -> None:
        async for _delta in dropping.gpt.astream("gpt-4o-mini", "", "hi"):
            assert dropping.gpt.ledger.reserved > 0
            break
        # the loop closes the dropped generator in a task of its own, not in the finaliser
        assert await _asoon(lambda: bool(dropping.ends.calls))
        dropping.assert_closed_early()
        assert await _asoon(lambda: dropping.open_connections() == 0)
        await dropping.gpt.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("scope", [None, "team-a"])  # own, or shared through the spend log
def test_a_dropped_async_stream_gives_its_budget_back_for_the_next_call(
    server: LoopbackServer, tmp_path: Path, no_gc: None, scope: str | None
) -> None:
    dropping = Dropping(server, tmp_path, budget_scope=scope)
    dropping.gpt.budget = _worst(dropping.gpt) * Decimal("1.5")
    server.enqueue(SLOW, Reply(text="ok"))

    async def main() -> None:
        async for _delta in dropping.gpt.astream("gpt-4o-mini", "", "hi"):
            with pytest.raises(BudgetExceededError):
                await dropping.gpt.achat_completion("gpt-4o-mini", "", "hi")
            dropping.ends.calls.clear()  # the refused call's
            break
        # the hooks see the call end once its reservation is released, in the store too
        assert await _asoon(lambda: bool(dropping.ends.calls))
        dropping.assert_closed_early()
        assert await dropping.gpt.achat_completion("gpt-4o-mini", "", "hi") == "ok"
        await dropping.gpt.aclose()

    asyncio.run(main())


def test_a_fallback_stream_left_with_break_and_dropped_is_closed_at_once(
    server: LoopbackServer, tmp_path: Path, no_gc: None
) -> None:
    dropping = Dropping(server, tmp_path, fallbacks=["gpt-4o"])
    server.enqueue(*[Fault.status(503)] * FAST_RETRY.attempts, SLOW)
    for _delta in dropping.gpt.stream("gpt-4o-mini", "", "hi"):
        break
    dropping.assert_closed_early()
    assert _soon(lambda: dropping.open_connections() == 0)


def test_an_async_fallback_stream_left_with_break_is_closed_by_its_loop(
    server: LoopbackServer, tmp_path: Path, no_gc: None
) -> None:
    dropping = Dropping(server, tmp_path, fallbacks=["gpt-4o"])
    server.enqueue(*[Fault.status(503)] * FAST_RETRY.attempts, SLOW)

    async def main() -> None:
        async for _delta in dropping.gpt.astream("gpt-4o-mini", "", "hi"):
            break
        assert await _asoon(lambda: bool(dropping.ends.calls))
        dropping.assert_closed_early()
        assert await _asoon(lambda: dropping.open_connections() == 0)
        await dropping.gpt.aclose()

    asyncio.run(main())


def _slow_list() -> Reply:
    """A typed answer (a list of strings) whose first item arrives at once, then ten seconds
    more of them."""
    return Reply(chunks=['{"value": ["a", ', *['"b", '] * 200, '"c"]}'], chunk_delay=0.05)


def test_a_typed_stream_left_with_break_and_dropped_is_closed_at_once(
    server: LoopbackServer, tmp_path: Path, no_gc: None
) -> None:
    dropping = Dropping(server, tmp_path)
    server.enqueue(_slow_list())
    for partial in dropping.gpt.stream("gpt-4o-mini", "", "hi", schema=list[str]):
        assert partial == ["a"]
        break
    dropping.assert_closed_early()
    assert _soon(lambda: dropping.open_connections() == 0)


def test_an_async_typed_stream_left_with_break_is_closed_by_its_loop(
    server: LoopbackServer, tmp_path: Path, no_gc: None
) -> None:
    dropping = Dropping(server, tmp_path)
    server.enqueue(_slow_list())

    async def main() -> None:
        async for partial in dropping.gpt.astream("gpt-4o-mini", "", "hi", schema=list[str]):
            assert partial == ["a"]
            break
        assert await _asoon(lambda: bool(dropping.ends.calls))
        dropping.assert_closed_early()
        assert await _asoon(lambda: dropping.open_connections() == 0)
        await dropping.gpt.aclose()

    asyncio.run(main())
