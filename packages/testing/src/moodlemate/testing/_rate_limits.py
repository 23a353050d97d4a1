"""OpenAI's rate limits for the loopback server: the ``x-ratelimit-*`` headers and slice-wise 429s.

api.openai.com states its limits per minute but enforces them in short slices: a limit of 600
requests per minute admits about 60 requests in each 6 s, so a burst is refused long before
the minute's allowance is spent. Client-side pacing is only testable against a server that
does the same, so :class:`RateLimiter` admits at most ``ceil(limit * slice_seconds / 60)``
requests (and, when set, estimated tokens) per fixed slice, and reports the per-minute
allowance in the headers OpenAI sends: remaining is the limit minus what the trailing 60 s
admitted, reset the time until all of that has aged out. So, as on the real API, a refusal
can carry a remaining allowance above 0: the minute has room, the slice has not.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["RateLimit", "RateLimitDecision", "RateLimiter", "go_duration"]

_WINDOW = 60.0
_HELP = "Visit https://platform.openai.com/account/rate-limits to learn more."


@dataclass(frozen=True)
class RateLimit:
    """Per-minute limits the server enforces in slices of ``slice_seconds``, as OpenAI does.

    ``tokens_per_minute`` (optional) counts each request's estimated prompt plus its
    ``max_completion_tokens`` / ``max_tokens`` up front, the way OpenAI reserves output tokens
    before generating them. A slice's budget is the per-minute limit scaled to the slice and
    rounded up, so every slice admits at least one request.
    """

    requests_per_minute: int
    tokens_per_minute: int | None = None
    slice_seconds: float = 6.0

    def __post_init__(self) -> None:
        _require_positive_int("requests_per_minute", self.requests_per_minute)
        if self.tokens_per_minute is not None:
            _require_positive_int("tokens_per_minute", self.tokens_per_minute)
        seconds = self.slice_seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or not 0 < seconds <= _WINDOW
        ):
            raise ValueError(
                f"RateLimit slice_seconds must be a number in (0, 60] (the per-minute limit is "
                f"enforced in slices of it), got {seconds!r}"
            )

    @property
    def requests_per_slice(self) -> int:
        return _per_slice(self.requests_per_minute, self.slice_seconds)

    @property
    def tokens_per_slice(self) -> int | None:
        if self.tokens_per_minute is None:
            return None
        return _per_slice(self.tokens_per_minute, self.slice_seconds)


@dataclass(frozen=True)
class RateLimitDecision:
    """The limiter's answer to one request: admitted or not, and the headers to send either way."""

    admitted: bool
    headers: dict[str, str]
    kind: Literal["requests", "tokens"] | None = None
    """What was exhausted when refused."""
    limit: int = 0
    used: int = 0
    requested: int = 0
    retry_after_ms: int = 0
    """Milliseconds until the next slice opens, rounded up (refusals only)."""

    def message(self, model: str) -> str:
        """OpenAI's 429 message for this refusal."""
        unit = "requests per min (RPM)" if self.kind == "requests" else "tokens per min (TPM)"
        return (
            f"Rate limit reached for {model} in organization org-loopback on {unit}: "
            f"Limit {self.limit}, Used {self.used}, Requested {self.requested}. "
            f"Please try again in {go_duration(self.retry_after_ms / 1000)}. {_HELP}"
        )


class RateLimiter:
    """The thread-safe state behind one :class:`RateLimit`: counts per slice and per minute.

    Slices are aligned on ``time.monotonic()`` from the limiter's creation (when the limit is
    set), not on the wall clock: the monotonic clock never jumps, and a test that sets a limit
    and then sends a burst starts at the beginning of a whole slice instead of a random point
    in one, so how many requests fit is deterministic.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._origin = time.monotonic()
        self._slice = -1
        self._slice_requests = 0
        self._slice_tokens = 0
        self._recent: deque[tuple[float, int]] = deque()  # (admitted at, tokens), last 60 s
        self._recent_tokens = 0
        self._admitted = 0
        self._refused = 0

    @property
    def admitted(self) -> int:
        with self._lock:
            return self._admitted

    @property
    def refused(self) -> int:
        with self._lock:
            return self._refused

    def consult(self, tokens: int) -> RateLimitDecision:
        """Admit a request of ``tokens`` estimated tokens if its slice has room, counting it."""
        limit = self.limit
        with self._lock:
            now = time.monotonic()
            index = math.floor((now - self._origin) / limit.slice_seconds)
            if index != self._slice:
                self._slice, self._slice_requests, self._slice_tokens = index, 0, 0
            while self._recent and self._recent[0][0] <= now - _WINDOW:
                self._recent_tokens -= self._recent.popleft()[1]
            refusal = self._refusal(tokens)
            if refusal is None:
                self._slice_requests += 1
                self._slice_tokens += tokens
                self._recent.append((now, tokens))
                self._recent_tokens += tokens
                self._admitted += 1
                return RateLimitDecision(True, self._headers(now))
            self._refused += 1
            kind, per_minute, used, budget, requested = refusal
            next_slice = self._origin + (index + 1) * limit.slice_seconds
            return RateLimitDecision(
                False,
                self._headers(now),
                kind=kind,
                limit=per_minute,
                # The slice's use expressed per minute: a full slice reads "Used 600" of 600.
                used=min(per_minute, math.ceil(used * per_minute / budget)),
                requested=requested,
                retry_after_ms=max(1, math.ceil(round((next_slice - now) * 1000, 6))),
            )

    def _refusal(
        self, tokens: int
    ) -> tuple[Literal["requests", "tokens"], int, int, int, int] | None:
        """What this request would exceed in the current slice, as (kind, per-minute limit,
        used in the slice, slice budget, requested); None when it fits."""
        limit = self.limit
        if self._slice_requests + 1 > limit.requests_per_slice:
            per_slice = limit.requests_per_slice
            return ("requests", limit.requests_per_minute, self._slice_requests, per_slice, 1)
        per_minute, budget = limit.tokens_per_minute, limit.tokens_per_slice
        if per_minute is not None and budget is not None and self._slice_tokens + tokens > budget:
            return ("tokens", per_minute, self._slice_tokens, budget, tokens)
        return None

    def _headers(self, now: float) -> dict[str, str]:
        """The per-minute view: what the trailing 60 s used, and when all of it is back."""
        limit = self.limit
        restored = go_duration(self._recent[-1][0] + _WINDOW - now if self._recent else 0.0)
        headers = {
            "x-ratelimit-limit-requests": str(limit.requests_per_minute),
            "x-ratelimit-remaining-requests": str(
                max(0, limit.requests_per_minute - len(self._recent))
            ),
            "x-ratelimit-reset-requests": restored,
        }
        if limit.tokens_per_minute is not None:
            headers["x-ratelimit-limit-tokens"] = str(limit.tokens_per_minute)
            headers["x-ratelimit-remaining-tokens"] = str(
                max(0, limit.tokens_per_minute - self._recent_tokens)
            )
            headers["x-ratelimit-reset-tokens"] = restored
        return headers


def go_duration(seconds: float) -> str:
    """A duration as Go prints it, as OpenAI's headers and messages do: ``98ms``, ``1s``,
    ``6.5s``, ``1m0s``, ``1h0m0s``; rounded up to whole milliseconds, so a client that waits
    this long never arrives early."""
    millis = max(0, math.ceil(round(seconds * 1000, 6)))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def _per_slice(per_minute: int, slice_seconds: float) -> int:
    return max(1, math.ceil(round(per_minute * slice_seconds / _WINDOW, 9)))


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"RateLimit {name} must be a positive int, got {value!r}")
