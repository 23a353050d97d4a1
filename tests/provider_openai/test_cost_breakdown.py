"""``Completion.cost_breakdown`` over real HTTP: a table-priced call's cost by piece, adding up
to ``cost``; None where the cost is unknown or the server's own figure."""

from __future__ import annotations

from decimal import Decimal

import pytest
from moodlemate.ai import GPT
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY

LONG = "Be brief. " * 200  # a prompt that 1000 reported prompt tokens can plausibly come from
USAGE = {"prompt_tokens": 1000, "cached_tokens": 200, "completion_tokens": 500}


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_o3_by_piece(server: LoopbackServer, gpt: GPT, api: str) -> None:
    """o3 at $2.00 input, $0.50 cached input, $8.00 output per 1M tokens (prices.json)."""
    server.enqueue(Reply(text="ok", reasoning_tokens=300, **USAGE))
    completion = gpt.complete("o3", LONG, "x", options={"api": api})
    pieces = completion.cost_breakdown
    assert pieces is not None
    assert pieces.input == Decimal("0.0016")  # 800 fresh tokens at $2.00
    assert pieces.cached_input == Decimal("0.0001")  # 200 cached at $0.50
    assert pieces.output == Decimal("0.0016")  # 200 visible tokens at $8.00
    assert pieces.reasoning == Decimal("0.0024")  # 300 reasoning tokens at $8.00
    assert pieces.cache_write is None  # OpenAI's table has no cache-write price
    total = pieces.input + pieces.cached_input + pieces.output + pieces.reasoning
    assert total == completion.cost == Decimal("0.0057")


def test_a_model_without_a_cached_price_bills_cached_tokens_as_input(
    server: LoopbackServer, gpt: GPT
) -> None:
    """o3-pro: $20.00 input, $80.00 output, no cached-input price."""
    server.enqueue(Reply(text="ok", **USAGE))
    pieces = gpt.complete("o3-pro", LONG, "x").cost_breakdown
    assert pieces is not None
    assert (pieces.input, pieces.cached_input) == (Decimal("0.016"), Decimal("0.004"))
    assert (pieces.output, pieces.reasoning) == (Decimal("0.04"), Decimal(0))


def test_no_breakdown_when_the_cost_is_unknown(server: LoopbackServer, gpt: GPT) -> None:
    completion = gpt.complete("some-local-model", "", "x")
    assert (completion.cost, completion.cost_breakdown) == (None, None)


def test_no_breakdown_of_a_cost_the_server_reported(server: LoopbackServer) -> None:
    server.models = []
    gpt = GPT(
        "openrouter",
        endpoint=f"{server.origin}/api/v1",
        api_key="sk-or-v1-" + "0" * 64,
        retry=FAST_RETRY,
    )
    server.enqueue(Reply(text="ok", cost=0.0003))
    completion = gpt.complete("openai/gpt-4o-mini", "", "x")
    assert completion.cost == Decimal("0.0003")
    assert completion.cost_breakdown is None
