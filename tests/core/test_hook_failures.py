"""A plugin's call hook can neither lose a paid answer nor stretch a call past its deadline:
an ``after_response`` that raises or overruns leaves the answer with the caller, in the
ledger, the spend log and the batch output; a ``before_request`` that overruns the deadline
stops the call, unsent; the hooks' time counts against the deadline."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from moodlemate.ai import GPT, HookTimeoutError, RetryPolicy, hookimpl
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.batch import parse_items, run_batch
from moodlemate.ai.testing import LoopbackServer
from support import FAST_RETRY, TEST_KEY

SLOW = 0.8
DEADLINE = RetryPolicy(attempts=1, deadline=0.5, attempt_timeout=0.5)


class Raising:
    @hookimpl
    def after_response(self) -> None:
        raise RuntimeError("metrics backend is down")


class SlowAfter:
    @hookimpl
    def after_response(self) -> None:
        time.sleep(SLOW)


class SlowBefore:
    @hookimpl
    def before_request(self) -> None:
        time.sleep(SLOW)


def _plugins(plugin: object) -> PluginRegistry:
    plugins = PluginRegistry()
    plugins.register(plugin)
    return plugins


def test_a_raising_after_hook_loses_no_paid_answer_and_a_rerun_pays_nothing(
    server: LoopbackServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "spend.db"
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=FAST_RETRY,
        log=log,
        plugins=_plugins(Raising()),
    )
    items = parse_items(
        [json.dumps({"id": i, "user": f"question {i}"}) for i in range(20)],
        default_model="gpt-4o-mini",
    )
    out = tmp_path / "out.jsonl"
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        summary = run_batch(gpt, items, out)
    assert (summary.succeeded, summary.failed) == (20, 0)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records if r["ok"]) == list(range(20))
    assert gpt.ledger.calls == 20
    with sqlite3.connect(log) as conn:
        assert conn.execute("SELECT outcome, COUNT(*) FROM calls GROUP BY outcome").fetchall() == [
            ("ok", 20)
        ]
    assert "metrics backend is down" in caplog.text
    assert "the call's result stands" in caplog.text

    again = run_batch(gpt, items, out)
    assert (again.skipped, again.succeeded) == (20, 0)
    assert len(server.chat_requests) == 20  # nothing paid twice
    assert gpt.chat_completion("gpt-4o-mini", "", "still answered") == "Echo: still answered"


def test_a_slow_after_hook_is_reported_and_the_answer_returned(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=DEADLINE,
        plugins=_plugins(SlowAfter()),
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        text = gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert time.monotonic() - started < 5
    assert text == "Echo: hi"
    assert gpt.ledger.calls == 1
    assert "ran past the call's deadline" in caplog.text


def test_a_slow_async_after_hook_still_returns_the_answer(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=DEADLINE,
        plugins=_plugins(SlowAfter()),
    )
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        text = asyncio.run(gpt.achat_completion("gpt-4o-mini", "", "hi"))
    assert text == "Echo: hi"
    assert "ran past the call's deadline" in caplog.text


def test_a_before_hook_past_the_deadline_stops_the_call_unsent(
    server: LoopbackServer,
) -> None:
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=DEADLINE,
        plugins=_plugins(SlowBefore()),
    )
    started = time.monotonic()
    with pytest.raises(HookTimeoutError, match="deadline"):
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert time.monotonic() - started < 5
    assert server.chat_requests == []
    assert gpt.ledger.calls == 0


def test_hook_time_counts_against_the_call_deadline(server: LoopbackServer) -> None:
    """A before hook that takes most of the deadline leaves the request only the rest."""

    class Sluggish:
        @hookimpl
        def before_request(self) -> None:
            time.sleep(1.0)

    from moodlemate.ai.testing import Reply

    server.enqueue(Reply(text="late", delay=2.0))
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=RetryPolicy(attempts=1, deadline=1.2, attempt_timeout=1.2),
        plugins=_plugins(Sluggish()),
    )
    started = time.monotonic()
    from moodlemate.ai.errors import APITimeoutError

    with pytest.raises(APITimeoutError):
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    # 1.2 s in all, not 1.0 + 1.2: the 0.8 s between is a loaded machine's scheduling room.
    assert time.monotonic() - started < 2.0
