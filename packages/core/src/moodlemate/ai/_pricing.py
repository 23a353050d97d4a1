"""Prices and limits of models. Money is Decimal: float drifts over a million calls.

Every cost the library records is a whole number of :data:`COST_QUANTUM` (a ten-billionth
of a dollar): far finer than any price list (a cent per hundred million tokens), yet a
figure with a bounded number of digits, so a server's ``1e-999999999`` can neither print
a million zeros nor slow every sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

from moodlemate.ai._usage import Usage

__all__ = ["COST_QUANTUM", "CostBreakdown", "ModelInfo", "Price", "to_money"]

_MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("1e-10")
"""The precision of every recorded cost, in US dollars (rounded half to even)."""
_QUANTUM_EXPONENT = -10
_MAX_EXPONENT = 30
"""Amounts of 10**30 USD and more are not money: :func:`to_money` refuses them."""


def to_money(amount: Decimal) -> Decimal | None:
    """``amount`` rounded to :data:`COST_QUANTUM` (digits beyond it only: ``0.00075`` stays
    as written); None when it is no amount of money (NaN, infinite, negative, or 10**30 USD
    and more)."""
    if not amount.is_finite() or amount < 0 or amount.adjusted() >= _MAX_EXPONENT:
        return None
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= _QUANTUM_EXPONENT:
        return amount
    with localcontext() as ctx:
        ctx.prec = 60  # enough digits for any amount under 10**30 at the quantum
        try:
            return amount.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN).normalize()
        except InvalidOperation:  # pragma: no cover - excluded by the exponent bound
            return None


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """A call's cost in USD by what was billed, each piece to :data:`COST_QUANTUM`; a piece is
    None when its tokens or its price are unknown, never a guess. ``output`` is the reply's
    visible tokens and ``reasoning`` the reasoning tokens (both at the output price)."""

    input: Decimal | None
    """Prompt tokens read fresh (not from the cache)."""
    cached_input: Decimal | None
    """Prompt tokens read from the prompt cache."""
    cache_write: Decimal | None
    """Prompt tokens written to the cache, where a server bills them apart (None: not reported)."""
    output: Decimal | None
    reasoning: Decimal | None


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens. ``cached_input`` None means cached tokens bill as input."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None

    def cost(self, usage: Usage) -> Decimal:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        total = (
            (usage.prompt_tokens - cached) * self.input
            + cached * cached_rate
            + usage.completion_tokens * self.output
        )
        with localcontext() as ctx:
            ctx.prec = 60  # exact: a token count times a listed price
            cost = to_money(total / _MILLION)
        return Decimal(0) if cost is None else cost

    def breakdown(self, usage: Usage) -> CostBreakdown:
        """:meth:`cost` by piece: fresh input, cached input, visible output and reasoning (the
        price table holds no cache-write price, so that piece is None)."""
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return CostBreakdown(
            input=_money((usage.prompt_tokens - cached) * self.input),
            cached_input=_money(cached * cached_rate),
            cache_write=None,
            output=_money((usage.completion_tokens - reasoning) * self.output),
            reasoning=_money(reasoning * self.output),
        )


def _money(per_million: Decimal) -> Decimal | None:
    with localcontext() as ctx:
        ctx.prec = 60
        return to_money(per_million / _MILLION)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a provider knows of a model: price and limits, with where the figures came from."""

    name: str
    price: Price | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    source: str | None = None
    as_of: str | None = None
    max_input_tokens: int | None = None
    """A prompt limit below the context window, where the vendor sets one (gpt-5: 272,000)."""
    live: bool = False
    """True when fetched from the provider's service (now, or earlier into a cache); False for
    figures shipped with the package, as old as ``as_of``."""
