"""The one retry policy, on stamina, that the facade applies to every provider.

stamina runs the loop, counts attempts, enforces the overall timeout, feeds its
instrumentation and honours its testing mode (``stamina.set_testing``). The wait before
each retry is computed here and handed to stamina as a number, because stamina applies
neither cap nor jitter to such a number: a server-requested wait (``retry-after-ms``,
``retry-after``) is used as given when it fits the policy, and our own exponential backoff
is capped and jittered. A wait that would overrun the call's deadline is not slept:
the error is raised at once, so callers see a rate limit now rather than a timeout later.

Providers decide what is transient (``ProviderError.retryable``) from the HTTP status and
headers, using :func:`retry_after_from_headers` and :func:`should_retry_from_headers`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from moodlemate.ai.errors import APITimeoutError, ProviderError, ValidationError

__all__ = [
    "RetryPolicy",
    "retry_after_from_headers",
    "should_retry_from_headers",
]

T = TypeVar("T")
log = logging.getLogger("moodlemate.ai")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one call tries. Defaults suit slow reasoning models (an o1 call can take
    minutes) while still giving up on an outage within a quarter of an hour.

    - ``attempts``: total tries, the first included.
    - ``deadline``: seconds for the whole call, attempts and waits together.
    - ``attempt_timeout``: seconds one attempt may take (shortened to what the deadline leaves).
    - ``wait_initial`` / ``wait_max`` / ``wait_jitter``: our exponential backoff, doubling
      from ``wait_initial`` up to ``wait_max``, plus up to ``wait_jitter`` random seconds.
    - ``max_server_wait``: the longest server-requested wait we sleep through; a longer
      one fails at once with the rate-limit error (its ``retry_after`` says how long).
    """

    attempts: int = 6
    deadline: float = 900.0
    attempt_timeout: float = 300.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0
    max_server_wait: float = 120.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValidationError("retry attempts must be an int")
        if self.attempts < 1:
            raise ValidationError("retry attempts must be at least 1")
        for name in (
            "deadline",
            "attempt_timeout",
            "wait_initial",
            "wait_max",
            "wait_jitter",
            "max_server_wait",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValidationError(f"retry {name} must be a number >= 0")
        if self.deadline <= 0 or self.attempt_timeout <= 0:
            raise ValidationError("retry deadline and attempt_timeout must be > 0")

    def backoff(self, failures: int) -> float:
        """Our own wait after the ``failures``-th failed attempt (1-based), jittered and capped."""
        base = self.wait_initial * 2.0 ** min(failures - 1, 62)
        return min(self.wait_max, base + random.uniform(0, self.wait_jitter))

    def run(self, attempt: Callable[[float], T], label: str) -> tuple[T, int]:
        """Call ``attempt(timeout)`` until it succeeds or the policy gives up.

        Returns the result and the number of attempts made; on failure the raised
        ProviderError carries ``attempts``.
        """
        import stamina

        state = _CallState(self, label)
        try:
            for try_ in state.retry_context(stamina):
                with try_:
                    state.attempts = try_.num
                    return attempt(state.attempt_timeout()), state.attempts
        except ProviderError as exc:
            exc.attempts = state.attempts
            raise
        raise AssertionError("unreachable: stamina neither returned nor raised")  # pragma: no cover

    async def arun(self, attempt: Callable[[float], Awaitable[T]], label: str) -> tuple[T, int]:
        """Async twin of :meth:`run`."""
        import stamina

        state = _CallState(self, label)
        try:
            async for try_ in state.retry_context(stamina):
                with try_:
                    state.attempts = try_.num
                    return await attempt(state.attempt_timeout()), state.attempts
        except ProviderError as exc:
            exc.attempts = state.attempts
            raise
        raise AssertionError("unreachable: stamina neither returned nor raised")  # pragma: no cover


class _CallState:
    """Per-call bookkeeping: the deadline, attempts made, and the retry decision."""

    __slots__ = ("attempts", "deadline", "label", "policy")

    def __init__(self, policy: RetryPolicy, label: str) -> None:
        self.policy = policy
        self.label = label
        self.deadline = time.monotonic() + policy.deadline
        self.attempts = 0

    def retry_context(self, stamina: Any) -> Any:
        """stamina's loop; jitter is 0 because :meth:`decide` returns jittered waits itself."""
        p = self.policy
        return stamina.retry_context(
            on=self.decide,
            attempts=p.attempts,
            timeout=p.deadline,
            wait_initial=p.wait_initial,
            wait_max=p.wait_max,
            wait_jitter=0.0,
        )

    def attempt_timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise APITimeoutError(f"{self.label}: deadline of {self.policy.deadline:g}s passed")
        return min(self.policy.attempt_timeout, remaining)

    def decide(self, exc: Exception) -> bool | float:
        """stamina's backoff hook: False to stop, or the seconds to wait before retrying."""
        if not isinstance(exc, ProviderError) or not exc.retryable:
            return False
        if self.attempts >= self.policy.attempts:
            return False
        remaining = self.deadline - time.monotonic()
        requested = exc.retry_after
        if requested is not None:
            if requested > self.policy.max_server_wait or requested >= remaining:
                log.warning(
                    "%s: not retrying: server asked to wait %.1fs (limit %.1fs, %.1fs left)",
                    self.label,
                    requested,
                    self.policy.max_server_wait,
                    max(remaining, 0.0),
                )
                return False
            wait = max(requested, 0.0)
        else:
            wait = self.policy.backoff(self.attempts)
            if wait >= remaining:
                log.warning(
                    "%s: not retrying: %.1fs left before the deadline",
                    self.label,
                    max(remaining, 0.0),
                )
                return False
        log.warning(
            "%s: attempt %d of %d failed (%s: %s); retrying in %.2fs",
            self.label,
            self.attempts,
            self.policy.attempts,
            type(exc).__name__,
            exc.message,
            wait,
        )
        return wait


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``retry-after`` as
    seconds or an HTTP date. None when absent or unparseable."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    # Imported here: email.utils costs ~15 ms at import, and HTTP dates are rare.
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def should_retry_from_headers(headers: Mapping[str, str]) -> bool | None:
    """The server's explicit ``x-should-retry`` verdict, or None when it gives none."""
    value = (headers.get("x-should-retry") or "").strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None
