"""The ledger stays exact under concurrency, and a budget stops calls before they are sent."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from moodlemate.ai import GPT, BudgetExceededError, ValidationError
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

MILLION = Decimal(1_000_000)
# USD per 1M tokens (input, cached input, output), typed in here from OpenAI's pricing page so
# the expected totals do not come from the code under test.
PRICES = {
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.075"), Decimal("0.60")),
    "o3-mini": (Decimal("1.10"), Decimal("0.55"), Decimal("4.40")),
}


def _usage_for(n: int) -> dict[str, int]:
    """A different usage for every call, cached and reasoning tokens included."""
    prompt = 100 + 3 * (n % 50)  # what a short prompt can take (moodlemate.ai._plausible)
    return {
        "prompt_tokens": prompt,
        "cached_tokens": (n * 13) % prompt,
        "completion_tokens": 100 + 11 * n,
        "reasoning_tokens": (n * 7) % (100 + 11 * n),
    }


def _cost_by_hand(model: str, usage: Mapping[str, int]) -> Decimal:
    input_price, cached_price, output_price = PRICES[model]
    uncached = usage["prompt_tokens"] - usage["cached_tokens"]
    return (
        uncached * input_price
        + usage["cached_tokens"] * cached_price
        + usage["completion_tokens"] * output_price
    ) / MILLION


def _respond_by_number(body: dict[str, Any]) -> Reply:
    n = int(body["messages"][-1]["content"])
    return Reply(text=str(n), **_usage_for(n))


def test_ledger_is_exact_after_1000_calls_from_16_threads(server: LoopbackServer) -> None:
    server.responder = _respond_by_number
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    models = {n: ("gpt-4o-mini" if n % 3 else "o3-mini") for n in range(1000)}

    def call(n: int) -> Decimal | None:
        return gpt.complete(models[n], "", str(n)).cost

    with ThreadPoolExecutor(max_workers=16) as pool:
        costs = list(pool.map(call, range(1000)))

    expected: dict[str, dict[str, Any]] = {}
    for n, model in models.items():
        usage = _usage_for(n)
        row = expected.setdefault(model, dict.fromkeys(usage, 0) | {"calls": 0, "cost": 0})
        row["calls"] += 1
        row["cost"] += _cost_by_hand(model, usage)
        for key, value in usage.items():
            row[key] += value
    assert costs == [_cost_by_hand(models[n], _usage_for(n)) for n in range(1000)]

    ledger = gpt.ledger.as_dict()
    for model, row in expected.items():
        for key, value in row.items():
            assert ledger["by_model"][model][key] == value, (model, key)
    total = ledger["total"]
    assert total["calls"] == gpt.ledger.calls == 1000 == len(server.chat_requests)
    assert total["cost"] == gpt.ledger.cost == sum(r["cost"] for r in expected.values())
    for key in ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens"):
        assert total[key] == sum(r[key] for r in expected.values())
    assert gpt.ledger.usage.prompt_tokens == total["prompt_tokens"]

    exported = json.loads(gpt.ledger.to_json())
    assert Decimal(exported["total"]["cost"]) == total["cost"]

    gpt.ledger.reset()
    assert (gpt.ledger.calls, gpt.ledger.cost) == (0, Decimal(0))
    after = gpt.ledger.as_dict()
    assert after["by_model"] == {}
    assert (after["total"]["calls"], after["total"]["prompt_tokens"]) == (0, 0)


# gpt-4o-mini: 6,000 uncached * $0.15 + 4,000 cached * $0.075 + 3,000 out * $0.60 = $0.003
# 200 x $0.15 + 4,950 x $0.60 per million: a short prompt and a long reply.
CALL = Reply(text="ok", prompt_tokens=200, completion_tokens=4_950)
CALL_COST = Decimal("0.003")


def test_budget_stops_the_call_after_the_one_that_reaches_it(
    server: LoopbackServer, gpt: GPT
) -> None:
    gpt.budget = Decimal("0.006")
    server.enqueue(CALL, CALL, CALL)
    gpt.chat_completion("gpt-4o-mini", "", "one")  # $0.003 spent
    gpt.chat_completion("gpt-4o-mini", "", "two")  # $0.006: the ceiling is reached
    with pytest.raises(BudgetExceededError) as caught:
        gpt.chat_completion("gpt-4o-mini", "", "three")
    assert len(server.chat_requests) == 2  # the server never saw the third call
    assert "0.006" in str(caught.value)
    assert gpt.ledger.calls == 2


def test_a_call_whose_worst_case_would_cross_the_budget_is_not_sent(
    server: LoopbackServer,
) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, budget="0.005")
    short = Reply(text="ok", prompt_tokens=200, completion_tokens=1_000)
    server.enqueue(CALL, short)
    gpt.chat_completion("gpt-4o-mini", "", "one")  # $0.003 of $0.005
    # The next may cost up to 4,096 output tokens ($0.0025) and the prompt: too much.
    with pytest.raises(BudgetExceededError, match=r"may cost up to \$0\.0024"):
        gpt.chat_completion("gpt-4o-mini", "", "two")
    # With max_tokens it fits: 1,000 x $0.60 per million.
    gpt.chat_completion("gpt-4o-mini", "", "two", max_tokens=1000)
    assert len(server.chat_requests) == 2
    assert gpt.ledger.cost == CALL_COST + Decimal("0.00063")
    assert gpt.ledger.reserved == 0


def test_raising_the_budget_or_resetting_the_ledger_lets_calls_through(
    server: LoopbackServer, gpt: GPT
) -> None:
    gpt.budget = 0
    with pytest.raises(BudgetExceededError):
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert server.chat_requests == []
    gpt.budget = None
    server.enqueue(CALL)
    gpt.chat_completion("gpt-4o-mini", "", "hi")
    gpt.budget = "0.003"
    with pytest.raises(BudgetExceededError):
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    gpt.ledger.reset()
    server.enqueue(CALL)
    gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert len(server.chat_requests) == 2


def test_budget_holds_across_threads(server: LoopbackServer, gpt: GPT) -> None:
    server.responder = lambda body: CALL
    gpt.budget = Decimal("0.030")  # ten calls' worth
    sent, refused = [], []
    lock = threading.Lock()

    def call() -> None:
        try:
            gpt.chat_completion("gpt-4o-mini", "", "hi")
        except BudgetExceededError:
            with lock:
                refused.append(1)
        else:
            with lock:
                sent.append(1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(40):
            pool.submit(call)
    # Calls in flight hold their worst case, so the budget is crossed by one call at most.
    assert gpt.ledger.cost <= Decimal("0.030") + CALL_COST
    assert len(sent) >= 8
    assert len(sent) + len(refused) == 40
    assert len(server.chat_requests) == len(sent)


def test_unknown_cost_calls_pass_a_budget_with_a_note(
    server: LoopbackServer, gpt: GPT, caplog: pytest.LogCaptureFixture
) -> None:
    gpt.budget = Decimal("0.001")
    with caplog.at_level(logging.INFO, logger="moodlemate.ai"):
        for _ in range(2):
            server.enqueue(Reply(text="ok"))
            gpt.chat_completion("my-local-model", "", "hi")
    assert len(server.chat_requests) == 2
    assert any("budget" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", [-1, "lots", float("nan"), True, [5]])
def test_a_bad_budget_is_rejected(bad: object) -> None:
    with pytest.raises(ValidationError):
        GPT(budget=bad)  # type: ignore[arg-type]


def test_a_float_budget_means_its_decimal_text() -> None:
    assert GPT(budget=0.1).budget == Decimal("0.1")
