"""The cost of a call from its usage, against hand computations from OpenAI's prices.

Every case uses the same usage, 10,000 prompt tokens of which 4,000 cached and 3,000
completion tokens of which 2,000 reasoning: cached tokens bill at the cached rate and only the
other 6,000 at the input rate; reasoning tokens are already inside the 3,000 output tokens.
Prices are USD per 1M tokens from https://developers.openai.com/api/docs/pricing.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from moodlemate.ai import GPT, BudgetExceededError
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

USAGE = {"prompt_tokens": 10_000, "cached_tokens": 4_000, "completion_tokens": 3_000}
REASONING = 2_000

HAND_COMPUTED = [
    # model, input / cached input / output price per 1M tokens, then the arithmetic:
    # uncached*input + cached*cached_input + completion*output, divided by 1,000,000.
    # gpt-4o $2.50 / $1.25 / $10.00: 6,000*2.50 + 4,000*1.25 + 3,000*10.00
    # = 15,000 + 5,000 + 30,000 = 50,000 -> 50,000 / 1,000,000 = $0.05
    ("gpt-4o", "0.05"),
    # gpt-4o-mini $0.15 / $0.075 / $0.60: 900 + 300 + 1,800 = 3,000 -> $0.003
    ("gpt-4o-mini", "0.003"),
    # o1 $15.00 / $7.50 / $60.00: 90,000 + 30,000 + 180,000 = 300,000 -> $0.30
    ("o1", "0.30"),
    # o1-mini $1.10 / $0.55 / $4.40: 6,600 + 2,200 + 13,200 = 22,000 -> $0.022
    ("o1-mini", "0.022"),
    # o3-mini $1.10 / $0.55 / $4.40: 6,600 + 2,200 + 13,200 = 22,000 -> $0.022
    ("o3-mini", "0.022"),
    # gpt-4.1 $2.00 / $0.50 / $8.00: 12,000 + 2,000 + 24,000 = 38,000 -> $0.038
    ("gpt-4.1", "0.038"),
    # gpt-4.1-mini $0.40 / $0.10 / $1.60: 2,400 + 400 + 4,800 = 7,600 -> $0.0076
    ("gpt-4.1-mini", "0.0076"),
    # gpt-5 $1.25 / $0.125 / $10.00: 7,500 + 500 + 30,000 = 38,000 -> $0.038
    ("gpt-5", "0.038"),
    # gpt-5-mini $0.25 / $0.025 / $2.00: 1,500 + 100 + 6,000 = 7,600 -> $0.0076
    ("gpt-5-mini", "0.0076"),
    # gpt-5-nano $0.05 / $0.005 / $0.40: 300 + 20 + 1,200 = 1,520 -> $0.00152
    ("gpt-5-nano", "0.00152"),
    # A dated snapshot bills at its family's prices.
    ("o1-mini-2024-09-12", "0.022"),
    ("gpt-4o-mini-2024-07-18", "0.003"),
    # ...unless the vendor prices the snapshot itself: gpt-4o-2024-05-13 $5.00 / none / $15.00,
    # cached tokens at the input rate: 10,000*5.00 + 3,000*15.00 = 95,000 -> $0.095
    ("gpt-4o-2024-05-13", "0.095"),
]


@pytest.mark.parametrize(("model", "expected"), HAND_COMPUTED)
def test_cost_of_a_call_matches_the_hand_computation(
    server: LoopbackServer, gpt: GPT, model: str, expected: str
) -> None:
    server.enqueue(Reply(text="ok", reasoning_tokens=REASONING, **USAGE))
    # A prompt long enough for the 10,000 tokens the server reports: a count beyond what
    # the request could produce would be bounded (moodlemate.ai._plausible).
    result = gpt.complete(model, "Be brief.", "Hi " * 5_000)
    assert result.usage.reasoning_tokens == REASONING
    assert result.cost == Decimal(expected)
    assert isinstance(result.cost, Decimal)
    assert gpt.ledger.cost == Decimal(expected)


def test_model_limits_come_from_the_price_table(gpt: GPT) -> None:
    info = gpt.provider.model_info("gpt-5-mini-2025-08-07")
    assert info is not None
    assert (info.context_window, info.max_input_tokens, info.max_output_tokens) == (
        400_000,
        272_000,
        128_000,
    )
    assert info.source
    assert info.source.startswith("https://developers.openai.com/")
    assert info.as_of
    four_o = gpt.provider.model_info("gpt-4o")
    assert four_o is not None
    assert (four_o.context_window, four_o.max_output_tokens) == (128_000, 16_384)


def test_unknown_model_completes_with_unknown_cost_and_one_note(
    server: LoopbackServer, gpt: GPT, caplog: pytest.LogCaptureFixture
) -> None:
    # On a custom endpoint (the loopback server) a missing price is an INFO note.
    with caplog.at_level(logging.INFO, logger="moodlemate.ai"):
        for _ in range(3):
            server.enqueue(Reply(text="ok", **USAGE))
            assert gpt.complete("llama3.2", "", "Hi").cost is None
    warnings = [r for r in caplog.records if "cost is recorded as unknown" in r.getMessage()]
    assert len(warnings) == 1
    assert gpt.ledger.cost == Decimal(0)
    assert gpt.ledger.unpriced_calls == 3
    assert gpt.ledger.as_dict()["by_model"]["llama3.2"]["cost"] is None  # unknown, not 0


def test_a_cost_the_server_reports_wins_over_the_table(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="ok", cost=0.0123, **USAGE))
    assert gpt.complete("gpt-4o", "", "Hi").cost == Decimal("0.0123")


def test_a_reply_without_usage_has_unknown_cost_not_zero(
    server: LoopbackServer, gpt: GPT, caplog: pytest.LogCaptureFixture
) -> None:
    """Some OpenAI-compatible servers send no usage: that is no measurement, not a free call."""
    server.enqueue(Reply(text="no usage here", report_usage=False))
    with caplog.at_level(logging.INFO, logger="moodlemate.ai"):
        result = gpt.complete("gpt-4o-mini", "", "hi")
    assert result.text == "no usage here"
    assert result.usage_reported is False
    assert result.cost is None
    assert gpt.ledger.as_dict()["total"]["unpriced_calls"] == 1
    assert "reported no usage" in caplog.text


def test_a_stream_without_a_usage_chunk_has_unknown_cost(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="streamed without usage", report_usage=False))
    stream = gpt.stream("gpt-4o-mini", "", "hi")
    assert "".join(stream) == "streamed without usage"
    assert stream.completion is not None
    assert stream.completion.usage_reported is False
    assert stream.completion.cost is None


def test_replies_without_usage_still_count_against_the_budget(server: LoopbackServer) -> None:
    """A server that sends no usage must not make a priced model's calls free for a budget:
    each counts at what it reserved (its cost stays unknown), so the budget still stops them."""
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, budget="0.001")
    server.responder = lambda body: Reply(text="no usage here", report_usage=False)
    sent = _sent_until_refused(gpt)
    assert 1 <= sent < 20
    assert gpt.ledger.cost == 0
    assert 0 < gpt.ledger.charged <= Decimal("0.001")


def _sent_until_refused(gpt: GPT) -> int:
    for sent in range(20):
        try:
            gpt.complete("gpt-4o-mini", "", "hi", max_tokens=1000)
        except BudgetExceededError:
            return sent
    raise AssertionError("the budget never refused a call")
