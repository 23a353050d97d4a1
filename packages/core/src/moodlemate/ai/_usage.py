"""Token usage of a call, in the shape the OpenAI API reports it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["Usage", "summed_cost"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call. ``cached_tokens``, ``cache_write_tokens``, ``audio_prompt_tokens``
    and ``image_prompt_tokens`` are parts of ``prompt_tokens``; ``reasoning_tokens`` and
    ``audio_completion_tokens`` parts of ``completion_tokens``, as the OpenAI API (and
    OpenRouter, for cache writes) reports them. The parts matter where they are billed at
    their own price."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    """Prompt tokens written to the prompt cache (OpenRouter's ``cache_write_tokens``)."""
    audio_prompt_tokens: int = 0
    image_prompt_tokens: int = 0
    audio_completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.audio_prompt_tokens + other.audio_prompt_tokens,
            self.image_prompt_tokens + other.image_prompt_tokens,
            self.audio_completion_tokens + other.audio_completion_tokens,
        )


def summed_cost(costs: Iterable[Decimal | None]) -> Decimal | None:
    """The sum of ``costs``; None when any one is unknown (a partial sum would read as the
    whole of it)."""
    total = Decimal(0)
    for cost in costs:
        if cost is None:
            return None
        total += cost
    return total
