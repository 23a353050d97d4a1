"""What a server's ``x-ratelimit-*`` headers say about its limits, in one vendor-neutral shape.

OpenAI sends, on every response, ``x-ratelimit-limit-requests`` / ``-tokens`` (the limits
per minute), ``x-ratelimit-remaining-requests`` / ``-tokens`` and
``x-ratelimit-reset-requests`` / ``-tokens``: the time until the allowance is whole again,
written as a Go duration (``20ms``, ``6s``, ``1m30s``). OpenRouter and others send the
unsuffixed ``x-ratelimit-limit``, ``-remaining`` and ``-reset``, counting requests, whose reset
is a moment (Unix seconds or milliseconds) rather than a duration. Both are read here; what a
header does not say stays None. Providers put the result on ``Completion.rate_limits`` and on
their errors, and :mod:`moodlemate.ai._pacing` learns from it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RateLimits", "parse_reset", "rate_limits_from_headers"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_EPOCH_SECONDS = 1_000_000_000  # a bare number above this is a moment, not a duration
_EPOCH_MILLIS = 100_000_000_000


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A server's limits as its headers stated them for one response; None where unsaid.
    Resets are seconds from when the response arrived."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float | None = None

    @property
    def exhausted_for(self) -> float:
        """Seconds until a request can be admitted again, by these figures (0: now)."""
        waits = [
            reset or 0.0
            for remaining, reset in (
                (self.requests_remaining, self.requests_reset),
                (self.tokens_remaining, self.tokens_reset),
            )
            if remaining is not None and remaining <= 0
        ]
        return max(waits, default=0.0)


_NOTHING = RateLimits()
_UNSAID = (None,) * 6


def rate_limits_from_headers(
    headers: Mapping[str, str], now: float | None = None
) -> RateLimits | None:
    """The limits ``headers`` state (any case of names), or None when they state none."""
    get = headers.get
    said = (
        get("x-ratelimit-limit-requests") or get("x-ratelimit-limit"),
        get("x-ratelimit-remaining-requests") or get("x-ratelimit-remaining"),
        get("x-ratelimit-reset-requests") or get("x-ratelimit-reset"),
        get("x-ratelimit-limit-tokens"),
        get("x-ratelimit-remaining-tokens"),
        get("x-ratelimit-reset-tokens"),
    )
    if said == _UNSAID:  # most servers but OpenAI's: nothing to read
        return None
    found = RateLimits(
        requests_limit=_count(said[0]),
        requests_remaining=_count(said[1]),
        requests_reset=parse_reset(said[2], now),
        tokens_limit=_count(said[3]),
        tokens_remaining=_count(said[4]),
        tokens_reset=parse_reset(said[5], now),
    )
    return None if found == _NOTHING else found


def parse_reset(value: str | None, now: float | None = None) -> float | None:
    """Seconds until a reset, from a Go duration (``1m30.5s``, ``120ms``), a number of
    seconds, or a moment in Unix seconds or milliseconds; None when unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return _duration(text)
    if not math.isfinite(number) or number < 0:
        return None
    if number >= _EPOCH_SECONDS:
        moment = number / 1000 if number >= _EPOCH_MILLIS else number
        return max(0.0, moment - (time.time() if now is None else now))
    return number


def _duration(text: str) -> float | None:
    total, end = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != end:
            return None
        total += float(match.group(1)) * _UNIT[match.group(2)]
        end = match.end()
    return total if end == len(text) and end > 0 else None


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None  # Azure's -1 means "not reported"
