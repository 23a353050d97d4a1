"""A call's cost and its pieces are priced in one pass (``Price.cost_and_breakdown``): the same
figures, to the last digit of their written form, as ``Price.cost`` and ``Price.breakdown``
alone, whatever the price lists, the usage holds or the caller's decimal context is."""

from __future__ import annotations

import dataclasses
import itertools
from decimal import Decimal, localcontext

import pytest
from moodlemate.ai import Usage
from moodlemate.ai._pricing import CostBreakdown, Price

RATES = ("2.50", "0.075", "1e-7", "1234567.891", "7.123456789012345678901234567", "0", "1E+3")
COUNTS = (0, 1, 17, 4_000, 123_457, 10**8, 10**15, -3)


def _prices() -> list[Price]:
    optional = (None, Decimal("1.25"), Decimal("0.0000003"))
    prices = [
        Price(
            input=Decimal(i),
            output=Decimal(o),
            cached_input=cached,
            cache_write=write,
            audio_input=audio,
            audio_output=audio,
            image_input=image,
        )
        for i, o in itertools.pairwise(RATES)
        for cached, write, audio, image in itertools.product(optional, repeat=4)
    ]
    return prices[::7]  # a spread of the combinations, every rate among them


def _usages() -> list[Usage]:
    usages = [Usage(10_000, 3_000, 4_000, 2_000), Usage(123_457, 17), Usage()]
    for seed in range(len(COUNTS) * 3):
        counts = [COUNTS[(seed * 3 + k * 5) % len(COUNTS)] for k in range(8)]
        if seed % 3:  # most replies have no audio or image tokens
            counts[5:] = [0, 0, 0]
        usages.append(Usage(*counts))
    return usages


def _written(value: Decimal | CostBreakdown | None) -> object:
    if isinstance(value, CostBreakdown):
        return tuple(_written(v) for v in dataclasses.astuple(value))
    if isinstance(value, tuple):
        return value
    return None if value is None else str(value)


@pytest.mark.parametrize("precision", [28, 9, 60])
def test_one_pass_gives_the_figures_of_cost_and_breakdown_alone(precision: int) -> None:
    compared = 0
    with localcontext() as context:
        context.prec = precision
        for price in _prices():
            for usage in _usages():
                cost, pieces = price.cost_and_breakdown(usage)
                assert _written(cost) == _written(price.cost(usage)), (price, usage)
                assert _written(pieces) == _written(price.breakdown(usage)), (price, usage)
                compared += 1
    assert compared > 1000


def test_the_cost_is_the_whole_rounded_once_not_the_rounded_pieces_added() -> None:
    # 3 tokens at $0.00001 per million are $3e-11 each side: each piece rounds to $0, the
    # whole ($6e-11) to one quantum ($1e-10).
    price = Price(input=Decimal("0.00001"), output=Decimal("0.00001"))
    cost, pieces = price.cost_and_breakdown(Usage(prompt_tokens=3, completion_tokens=3))
    assert cost == Decimal("1E-10")
    assert pieces.input == 0
    assert pieces.output == 0
    assert pieces.known == 0


def test_the_hand_computed_pieces() -> None:
    # gpt-4o $2.50 / $1.25 cached / $10.00: 6,000 fresh, 4,000 cached, 1,000 visible and
    # 2,000 reasoning tokens: $0.015 + $0.005 + $0.01 + $0.02 = $0.05.
    price = Price(input=Decimal("2.50"), output=Decimal("10.00"), cached_input=Decimal("1.25"))
    cost, pieces = price.cost_and_breakdown(Usage(10_000, 3_000, 4_000, 2_000))
    assert cost == Decimal("0.05")
    assert (pieces.input, pieces.cached_input, pieces.output, pieces.reasoning) == (
        Decimal("0.015"),
        Decimal("0.005"),
        Decimal("0.01"),
        Decimal("0.02"),
    )
    assert pieces.cache_write is None
    assert pieces.audio_input is None
    assert pieces.unpriced == ()


def test_unpriced_tokens_make_the_cost_unknown_and_are_named() -> None:
    price = Price(input=Decimal("2.50"), output=Decimal("10.00"))
    cost, pieces = price.cost_and_breakdown(
        Usage(prompt_tokens=100, completion_tokens=10, audio_prompt_tokens=40)
    )
    assert cost is None
    assert pieces.unpriced == ("audio_input",)
    assert pieces.input == Decimal("0.00015")
