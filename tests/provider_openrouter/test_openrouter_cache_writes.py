"""OpenRouter's prompt-cache reads and writes over real HTTP: priced from its catalog's
``input_cache_read`` / ``input_cache_write``, itemised in ``cost_breakdown``; its own
``usage.cost`` kept when sane, and itemised only when the catalog accounts for it.

Figures (USD per token in the catalog, per 1M tokens here): anthropic/claude-sonnet-4 at
OpenRouter's listing of Anthropic's prices, $3.00 prompt, $15.00 completion, $0.30 cache read
and $3.75 cache write (5-minute writes at 1.25 times the prompt price; LiteLLM's table has the
same for claude-sonnet-4: cache_read_input_token_cost 3e-07, cache_creation_input_token_cost
3.75e-06). Usage shape from https://openrouter.ai/docs/use-cases/usage-accounting:
``prompt_tokens_details.cached_tokens`` (read from the cache) and ``cache_write_tokens``
(written to it), both part of ``prompt_tokens``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from moodlemate.ai import GPT, BudgetExceededError
from moodlemate.ai.testing import LoopbackServer, Reply
from moodlemate.providers.openrouter import catalog
from support import FAST_RETRY

OR_KEY = "sk-or-v1-" + "7" * 64
CLAUDE = "anthropic/claude-sonnet-4"
LONG = "Read this once. " * 300  # a prompt 3000 reported prompt tokens can come from
USAGE: dict[str, Any] = {
    "prompt_tokens": 3000,
    "cached_tokens": 1000,
    "cache_write_tokens": 1500,  # so 500 read fresh
    "completion_tokens": 200,
}
CATALOG_COST = Decimal("0.010425")
"""500 x $3.00 + 1000 x $0.30 + 1500 x $3.75 + 200 x $15.00 per 1M: 0.0015 + 0.0003 +
0.005625 + 0.003."""


@pytest.fixture
def router() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        srv.models = [
            {
                "id": CLAUDE,
                "context_length": 200000,
                "pricing": {
                    "prompt": "0.000003",
                    "completion": "0.000015",
                    "input_cache_read": "0.0000003",
                    "input_cache_write": "0.00000375",
                    "request": "0",
                    "image": "0",
                },
                "top_provider": {"context_length": 200000, "max_completion_tokens": 64000},
            }
        ]
        yield srv


def or_gpt(server: LoopbackServer, **kwargs: Any) -> GPT:
    return GPT(
        "openrouter",
        endpoint=f"{server.origin}/api/v1",
        api_key=OR_KEY,
        retry=FAST_RETRY,
        **kwargs,
    )


def test_the_catalog_carries_the_cache_write_price(router: LoopbackServer) -> None:
    info = catalog.lookup(CLAUDE, f"{router.origin}/api/v1")
    assert info is not None
    assert info.price is not None
    assert (info.price.cached_input, info.price.cache_write) == (Decimal("0.3"), Decimal("3.75"))


def test_the_shipped_snapshot_prices_anthropic_cache_writes() -> None:
    price = catalog.snapshot()[CLAUDE].price
    assert price is not None
    assert price.cache_write == Decimal("3.75")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_cache_reads_and_writes_by_piece(router: LoopbackServer, stream: bool) -> None:
    gpt = or_gpt(router)
    router.enqueue(Reply(text="ok", **USAGE))
    if stream:
        with gpt.stream(CLAUDE, LONG, "x") as deltas:
            assert "".join(deltas) == "ok"
        completion = deltas.completion
    else:
        completion = gpt.complete(CLAUDE, LONG, "x")
    assert completion is not None
    assert completion.usage.cache_write_tokens == 1500
    pieces = completion.cost_breakdown
    assert pieces is not None
    assert pieces.input == Decimal("0.0015")  # 500 fresh at $3.00
    assert pieces.cached_input == Decimal("0.0003")  # 1000 read at $0.30
    assert pieces.cache_write == Decimal("0.005625")  # 1500 written at $3.75
    assert pieces.output == Decimal("0.003")  # 200 at $15.00
    assert completion.cost == pieces.known == CATALOG_COST


def test_a_reported_cost_that_the_catalog_accounts_for_is_itemised(
    router: LoopbackServer,
) -> None:
    router.enqueue(Reply(text="ok", cost=0.010425, **USAGE))
    completion = or_gpt(router).complete(CLAUDE, LONG, "x")
    assert completion.cost == CATALOG_COST
    assert completion.priced_model is None  # OpenRouter's own figure
    assert completion.cost_breakdown is not None
    assert completion.cost_breakdown.cache_write == Decimal("0.005625")


def test_a_reported_cost_the_catalog_does_not_explain_stands_unsplit(
    router: LoopbackServer,
) -> None:
    """A dearer upstream provider: OpenRouter's figure is what was billed, and no split of it
    is invented."""
    router.enqueue(Reply(text="ok", cost=0.0125, **USAGE))
    completion = or_gpt(router).complete(CLAUDE, LONG, "x")
    assert completion.cost == Decimal("0.0125")
    assert completion.cost_breakdown is None


@pytest.mark.parametrize("reported", [-1, 1e308, float("nan"), "lots", 999.0, True])
def test_an_insane_reported_cost_gives_way_to_the_catalog(
    router: LoopbackServer, reported: Any
) -> None:
    """Negative, huge, not a number, not an amount, or far over what the request could cost
    at the catalog's dearest rate: the catalog's figure is used, with its pieces."""
    router.enqueue(Reply(text="ok", cost=reported, **USAGE))
    completion = or_gpt(router).complete(CLAUDE, LONG, "x", max_tokens=300)
    assert completion.cost == CATALOG_COST
    assert completion.cost_breakdown is not None


def test_cache_write_tokens_reach_the_spend_totals(router: LoopbackServer) -> None:
    router.enqueue(Reply(text="ok", **USAGE), Reply(text="ok", **USAGE))
    gpt = or_gpt(router)
    gpt.complete(CLAUDE, LONG, "x")
    gpt.complete(CLAUDE, LONG, "x")
    assert gpt.ledger.usage.cache_write_tokens == 3000
    assert gpt.ledger.cost == 2 * CATALOG_COST


def test_the_disk_cache_keeps_the_cache_write_price(router: LoopbackServer) -> None:
    import json

    endpoint = f"{router.origin}/api/v1"
    catalog.refresh_models(endpoint)
    cached = json.loads(catalog.cache_path(endpoint).read_text("utf-8"))
    (entry,) = cached["data"]
    assert entry["pricing"]["input_cache_write"] == "0.00000375"


@pytest.mark.parametrize("field", ["input_cache_write", "prompt"])
def test_a_price_too_large_to_hold_exactly_is_no_price_not_a_crash(
    router: LoopbackServer, field: str
) -> None:
    """The catalog is fetched from the server: one entry's absurd figure (more digits than a
    Decimal holds exactly) leaves that figure unknown, and every other model priced."""
    broken = {**router.models[0], "id": "acme/broken"}
    broken["pricing"] = {**broken["pricing"], field: "1e30"}
    router.models = [*router.models, broken]
    router.enqueue(Reply(text="ok", **USAGE))
    completion = or_gpt(router).complete(CLAUDE, "", LONG)
    assert completion.cost == CATALOG_COST
    info = catalog.lookup("acme/broken", f"{router.origin}/api/v1")
    assert info is None or info.price is None or info.price.cache_write is None


def test_an_absurd_reply_cannot_trip_a_budget_for_good(router: LoopbackServer) -> None:
    """A model the catalog gives no output limit, and a reply claiming 99 million tokens, one
    of them audio (which OpenRouter's catalog has no price for): the cost is unknown, and its
    priced pieces come to over $1,000, which no call is taken to cost (a computed cost that
    high is unknown too): it counts at what the call reserved, not at $1,485 (the budget
    would be gone for good)."""
    router.models[0]["top_provider"] = {"context_length": 200000}
    router.enqueue(
        Reply(text="ok", prompt_tokens=10, completion_tokens=99_000_000, audio_completion_tokens=1)
    )
    gpt = or_gpt(router, budget="10")
    completion = gpt.complete(CLAUDE, "", "hi")
    assert completion.cost is None
    assert 0 < gpt.ledger.charged < 1


def test_prompts_billed_as_cache_writes_cannot_carry_concurrent_calls_past_the_budget(
    router: LoopbackServer,
) -> None:
    """A prompt billed wholly as cache writes costs 1.25 times its fresh price, so a call
    reserves its prompt at the cache-write rate. The budget holds three calls' worst case at
    the fresh rate; four callers at once, each reply billing its whole counted prompt as
    written: two are sent, and the spend stays within the budget (reserved at the fresh rate,
    three would be sent and together cost 3 x (3.75P + 15) against 3 x (3P + 15) per 1M)."""
    router.enqueue(Reply(text="x", delay=1.0))
    probe = or_gpt(router, budget="0.02")  # too small for the prompt's byte bound: counted
    flying = threading.Thread(
        target=probe.complete, args=(CLAUDE, "", LONG), kwargs={"max_tokens": 1}
    )
    flying.start()
    deadline = time.monotonic() + 5
    while probe.ledger.reserved == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    held = probe.ledger.reserved
    flying.join()
    prompt = int((held * 1_000_000 - 15) / Decimal("3.75"))
    assert held == (prompt * Decimal("3.75") + 15) / 1_000_000  # the prompt at the write rate

    fresh_worst = (prompt * 3 + Decimal(15)) / 1_000_000
    gpt = or_gpt(router, budget=3 * fresh_worst)
    for _ in range(4):
        router.enqueue(
            Reply(
                text="x",
                delay=1.0,
                prompt_tokens=prompt,
                cache_write_tokens=prompt,
                completion_tokens=1,
            )
        )
    sent_before = len(router.chat_requests)
    outcomes: list[object] = []

    def call() -> None:
        try:
            outcomes.append(gpt.complete(CLAUDE, "", LONG, max_tokens=1))
        except BudgetExceededError as error:
            outcomes.append(error)

    callers = [threading.Thread(target=call) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(router.chat_requests) - sent_before == 2
    assert sum(isinstance(o, BudgetExceededError) for o in outcomes) == 2
    assert gpt.ledger.cost == 2 * held
    assert gpt.ledger.cost <= gpt.budget
