"""A budget holds against calls in flight: 64 threads, 500 async tasks and 300 streams made
up front spend at most the budget plus the worst-case cost of one call.

The server is honest (it reports the prompt the request carried and a reply within the
output estimate) and slow enough that many calls overlap; the worst case of one call is
worked out here by hand from gpt-4o-mini's list price.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

import pytest
from moodlemate.ai import GPT, BadRequestError, BudgetExceededError
from moodlemate.ai._budget import DEFAULT_OUTPUT_ESTIMATE
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

INPUT, OUTPUT = Decimal("0.15"), Decimal("0.60")  # gpt-4o-mini, USD per million tokens
MILLION = Decimal(1_000_000)
REPLY_TOKENS = 4_000  # within the default estimate of 4,096


@pytest.fixture
def honest(server: LoopbackServer) -> tuple[GPT, Decimal, Decimal]:
    """A GPT whose budget is ten calls' real cost, that real cost, and one call's worst case."""
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    prompt = gpt.count_chat_tokens("", "hi")

    def respond(body: dict[str, Any]) -> Reply:
        return Reply(text="ok", prompt_tokens=prompt, completion_tokens=REPLY_TOKENS, delay=0.02)

    server.responder = respond
    real = (prompt * INPUT + REPLY_TOKENS * OUTPUT) / MILLION
    worst = (prompt * INPUT + DEFAULT_OUTPUT_ESTIMATE * OUTPUT) / MILLION
    gpt.budget = 10 * real
    return gpt, real, worst


def _assert_held(gpt: GPT, server: LoopbackServer, worst: Decimal) -> None:
    assert gpt.budget is not None
    assert gpt.ledger.cost <= gpt.budget + worst, gpt.ledger.cost / gpt.budget
    assert gpt.ledger.calls >= 9  # the budget was used, not refused wholesale
    assert len(server.chat_requests) == gpt.ledger.calls  # nothing was sent unrecorded
    assert gpt.ledger.reserved == 0  # every reservation was settled or released


def test_64_threads_spend_at_most_the_budget_and_one_call(
    server: LoopbackServer, honest: tuple[GPT, Decimal, Decimal]
) -> None:
    gpt, _, worst = honest

    def spend() -> None:
        for _ in range(20):  # bounded: the budget stops each thread long before
            try:
                gpt.chat_completion("gpt-4o-mini", "", "hi")
            except BudgetExceededError:
                return

    threads = [threading.Thread(target=spend) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    _assert_held(gpt, server, worst)


def test_500_async_tasks_spend_at_most_the_budget_and_one_call(
    server: LoopbackServer, honest: tuple[GPT, Decimal, Decimal]
) -> None:
    gpt, _, worst = honest

    async def main() -> list[Any]:
        calls = [gpt.acomplete("gpt-4o-mini", "", "hi") for _ in range(500)]
        try:
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await gpt.aclose()

    results = asyncio.run(main())
    assert all(isinstance(r, BudgetExceededError) for r in results if isinstance(r, Exception))
    _assert_held(gpt, server, worst)


def test_300_streams_made_up_front_are_checked_when_each_is_sent(
    server: LoopbackServer, honest: tuple[GPT, Decimal, Decimal]
) -> None:
    gpt, _, worst = honest
    streams = [gpt.stream("gpt-4o-mini", "", "hi") for _ in range(300)]
    refused = 0
    for stream in streams:  # one at a time: no concurrency at all
        try:
            with stream:
                "".join(stream)
        except BudgetExceededError:
            refused += 1
    assert refused >= 289
    _assert_held(gpt, server, worst)


def test_a_failed_or_abandoned_call_releases_its_reservation(
    server: LoopbackServer, honest: tuple[GPT, Decimal, Decimal]
) -> None:
    gpt, _, _ = honest
    server.responder = None
    server.enqueue(Reply(status=400))
    with pytest.raises(BadRequestError):
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert gpt.ledger.reserved == 0
    stream = gpt.stream("gpt-4o-mini", "", "one two three")
    next(stream)
    assert gpt.ledger.reserved > 0  # held while the stream runs
    stream.close()
    assert gpt.ledger.reserved == 0
    assert gpt.ledger.calls == 0
