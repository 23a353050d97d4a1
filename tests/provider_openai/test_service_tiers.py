"""The service tier a reply names, priced at that tier, over real HTTP to the test server
(which answers with the tier asked for, ``auto`` as ``default``, as OpenAI does). Figures:
o3 standard $2.00/$0.50/$8.00 and flex at Batch rates $1.00/$0.25/$4.00
(platform.openai.com/docs/guides/flex-processing); gpt-5 priority $2.50/$0.25/$20.00
(openai.com/api-priority-processing), all per 1M tokens."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from moodlemate.ai import GPT, BudgetExceededError
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

LONG = "Be brief. " * 200  # a prompt that 1000 reported prompt tokens can plausibly come from
USAGE = {"prompt_tokens": 1000, "cached_tokens": 200, "completion_tokens": 500}


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_flex_is_priced_at_batch_rates(
    server: LoopbackServer, gpt: GPT, api: str, stream: bool
) -> None:
    server.enqueue(Reply(text="ok", **USAGE))
    options = {"service_tier": "flex", "api": api}
    if stream:
        with gpt.stream("o3", LONG, "x", options=options) as deltas:
            assert "".join(deltas) == "ok"
        completion = deltas.completion
    else:
        completion = gpt.complete("o3", LONG, "x", options=options)
    assert completion is not None
    assert completion.service_tier == "flex"
    assert completion.cost == Decimal("0.00285")  # 800 x $1.00 + 200 x $0.25 + 500 x $4.00
    assert completion.cost_breakdown is not None
    assert completion.cost_breakdown.output == Decimal("0.002")


def test_priority_is_priced_from_its_own_list(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="ok", **USAGE))
    completion = gpt.complete("gpt-5", LONG, "x", options={"service_tier": "priority"})
    assert completion.service_tier == "priority"
    assert completion.cost == Decimal("0.01205")  # 800 x $2.50 + 200 x $0.25 + 500 x $20.00


def test_auto_is_served_and_priced_as_default(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="ok", **USAGE))
    completion = gpt.complete("o3", LONG, "x", options={"service_tier": "auto"})
    assert completion.service_tier == "default"
    assert completion.cost == Decimal("0.0057")  # the standard price


def test_a_tier_without_a_listed_price_is_an_unknown_cost(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="ok", **USAGE))
    completion = gpt.complete("gpt-4o", LONG, "x", options={"service_tier": "priority"})
    assert completion.service_tier == "priority"
    assert (completion.cost, completion.cost_breakdown) == (None, None)


def test_the_budget_reserves_a_priority_call_at_the_priority_price(
    server: LoopbackServer,
) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, budget="0.015")
    # 1000 output tokens: $0.01 at gpt-5's standard $10.00, $0.02 at priority's $20.00.
    gpt.complete("gpt-5", "", "x", max_tokens=1000)
    with pytest.raises(BudgetExceededError):
        gpt.complete("gpt-5", "", "x", max_tokens=1000, options={"service_tier": "priority"})
    assert len(server.chat_requests) == 1


def test_the_unknown_tier_price_is_named_once(
    server: LoopbackServer, gpt: GPT, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="moodlemate.ai")  # a note off the vendor's service
    server.enqueue(Reply(text="ok", **USAGE), Reply(text="ok", **USAGE))
    for _ in range(2):
        gpt.complete("gpt-4o-mini", LONG, "x", options={"service_tier": "flex"})
    notes = [r.getMessage() for r in caplog.records if "recorded as unknown" in r.getMessage()]
    assert notes == [
        "no flex-tier price known for openai model 'gpt-4o-mini': its cost is recorded as "
        "unknown (and counted against a budget at what it reserved)"
    ]
