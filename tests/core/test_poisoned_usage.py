"""A lying server's usage and model name cannot poison the accounts: usage counts at most
what the request could produce, and a call is priced as the model asked for unless the
served one is a snapshot of it (scripted replies over real HTTP)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from moodlemate.ai import GPT
from moodlemate.ai import _plausible as plausible
from moodlemate.ai._spend_log import SpendLog
from moodlemate.ai.testing import LoopbackServer, Reply


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    plausible._warned.clear()
    yield
    plausible._warned.clear()


def test_counts_just_under_the_sanity_bound_cost_no_more_than_the_request_could(
    gpt: GPT, server: LoopbackServer
) -> None:
    gpt.budget = "1"
    near = plausible.MAX_CALL_TOKENS - 1
    server.enqueue(Reply(text="hi", model="o1-pro", prompt_tokens=near, completion_tokens=near))
    result = gpt.complete("gpt-4o-mini", "", "hi", max_tokens=10)
    assert result.usage.completion_tokens == 10 + plausible.COMPLETION_SLACK
    assert result.usage.prompt_tokens < 2 * 20 + plausible.PROMPT_SLACK
    assert result.priced_model == "gpt-4o-mini"  # not the pricier name the server gave
    assert result.model == "o1-pro"  # what the server said stays visible
    assert result.cost is not None
    assert result.cost < Decimal("0.0001")  # was $8,999.99
    assert gpt.ledger.cost == result.cost
    server.enqueue(Reply(text="ok"))
    assert gpt.chat_completion("gpt-4o-mini", "", "next") == "ok"  # the budget still open


def test_a_cheaper_label_does_not_let_a_dear_call_through_the_budget(
    gpt: GPT, server: LoopbackServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    log = SpendLog(tmp_path / "spend.db")
    gpt.log = log
    server.responder = lambda body: Reply(
        text="ok", model="gpt-5-nano", prompt_tokens=100, completion_tokens=1000
    )
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        first = gpt.complete("gpt-4o", "", "hi " * 50, max_tokens=1000)
        second = gpt.complete("gpt-4o", "", "hi " * 50, max_tokens=1000)
    price = gpt.provider.price("gpt-4o")
    assert price is not None
    for result in (first, second):
        assert result.cost == price.cost(result.usage)  # gpt-4o's price: $0.01025
        assert result.cost == Decimal("0.01025")
        assert result.priced_model == "gpt-4o"
    mismatch = [r for r in caplog.records if "not that model" in r.getMessage()]
    assert len(mismatch) == 1  # once, not per call
    (row, _) = log.recent(2)
    assert (row.requested_model, row.served_model) == ("gpt-4o", "gpt-5-nano")
    assert row.cost == Decimal("0.01025")


def test_a_snapshot_of_the_model_asked_for_is_priced_as_itself(
    gpt: GPT, server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.enqueue(
        Reply(text="ok", model="gpt-4o-2024-05-13", prompt_tokens=100, completion_tokens=10)
    )
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        result = gpt.complete("gpt-4o", "", "hi " * 50)
    assert result.priced_model == "gpt-4o-2024-05-13"  # its own listed price: $5 / $15
    assert result.cost == (100 * Decimal(5) + 10 * Decimal(15)) / 10**6
    assert not [r for r in caplog.records if "not that model" in r.getMessage()]


def test_a_reported_cost_far_beyond_the_requests_worst_case_gives_way_to_the_price_list(
    gpt: GPT, server: LoopbackServer
) -> None:
    server.enqueue(Reply(text="ok", prompt_tokens=20, completion_tokens=10, cost=999.99))
    result = gpt.complete("gpt-4o-mini", "", "hi", max_tokens=10)
    assert result.cost == (20 * Decimal("0.15") + 10 * Decimal("0.6")) / 10**6
    assert result.priced_model == "gpt-4o-mini"


def test_without_max_tokens_the_reply_is_bounded_by_the_models_own_output_limit(
    gpt: GPT, server: LoopbackServer
) -> None:
    server.enqueue(Reply(text="ok", prompt_tokens=10, completion_tokens=50_000_000))
    result = gpt.complete("gpt-4o-mini", "", "hi")
    info = gpt.provider.model_info("gpt-4o-mini")
    assert info is not None
    assert info.max_output_tokens is not None
    assert result.usage.completion_tokens == info.max_output_tokens + plausible.COMPLETION_SLACK
    assert result.cost is not None
    assert result.cost < Decimal("0.011")
