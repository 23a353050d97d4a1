"""Prices and limits of models. Money is Decimal: float drifts over a million calls."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from moodlemate.ai._usage import Usage

__all__ = ["ModelInfo", "Price"]

_MILLION = Decimal(1_000_000)


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
        return total / _MILLION


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
