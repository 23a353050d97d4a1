"""The one retry policy, on stamina, that the facade applies to every provider.

stamina runs the loop, counts attempts, enforces the overall timeout, feeds its
instrumentation and honours its testing mode (``stamina.set_testing``). The wait before
each retry is computed here and handed to stamina as a number, because stamina applies
neither cap nor jitter to such a number: a server-requested wait (``retry-after-ms``,
``retry-after``) is used as given when it fits the policy, and our own exponential backoff
is capped and jittered. A wait that would overrun the call's deadline is not slept:
the error is raised at once, so callers see a rate limit now rather than a timeout later.

The first attempt runs outside stamina's loop, which costs more to set up than the rest of
a call's own work: only when it fails does the loop start, with that failure handed to it as
its first attempt's (and the time left until the deadline as its timeout), so every decision,
wait, hook and count is the one the loop would have made had it run from the start.

Providers decide what is transient (``ProviderError.retryable``) from the HTTP status and
headers, using :func:`retry_after_from_headers` and :func:`should_retry_from_headers`.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TypeVar

from moodlemate.ai import _bounds as bounds
from moodlemate.ai._bounds import DEFAULT_LIMITS, ResponseLimits
from moodlemate.ai._secrets import redact_exception
from moodlemate.ai.errors import APITimeoutError, ProviderError, ValidationError

__all__ = [
    "RetryListener",
    "RetryPolicy",
    "listen_to_retries",
    "retry_after_from_headers",
    "should_retry_from_headers",
    "stop_listening",
]

T = TypeVar("T")
log = logging.getLogger("moodlemate.ai")
_NO_TIME = 1e-9
"""stamina's timeout when the deadline has passed (0 would mean none, with a warning)."""

RetryListener = Callable[[str, int, ProviderError, float], None]
"""Told of each retry as it is scheduled: (label, the attempt that failed, its error, the
seconds until the next one)."""
_listener: ContextVar[RetryListener | None] = ContextVar("moodlemate_retry_listener", default=None)


def listen_to_retries(listener: RetryListener | None) -> Token[RetryListener | None]:
    """Tell ``listener`` of the retries of calls run in the current context (thread or
    task) from now on; :func:`stop_listening` with the token returned undoes it. For
    telemetry (``moodlemate.ai.otel``): a listener that raises is ignored."""
    return _listener.set(listener)


def stop_listening(token: Token[RetryListener | None]) -> None:
    """Undo :func:`listen_to_retries` (in the context that called it; else no listener)."""
    try:
        _listener.reset(token)
    except ValueError:  # another context's token: clear rather than fail a call
        _listener.set(None)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one call tries. Immutable: derive a variant with ``dataclasses.replace``.

    The defaults suit slow reasoning models: one attempt may stay silent for ten minutes
    (the openai SDK's own default), and a short outage is ridden out over about half a
    minute of backoff before the error is raised.

    - ``attempts``: total tries, the first included.
    - ``deadline``: seconds for the whole call, attempts and waits together.
    - ``attempt_timeout``: seconds one attempt may take, from sending to the last byte of
      the body (shortened to what the deadline leaves). Both are wall-clock bounds: a
      server that drips its headers or body cannot stretch them.
    - ``wait_initial`` / ``wait_max`` / ``wait_jitter``: our exponential backoff, doubling
      from ``wait_initial`` up to ``wait_max``, plus up to ``wait_jitter`` random seconds.
    - ``max_server_wait``: the longest server-requested wait we sleep through; a longer
      one fails at once with the rate-limit error (its ``retry_after`` says how long).
    - ``stream_deadline``: seconds a whole stream may take, from its request to its last
      delta; None (the default) bounds only the part before the first delta.
    - ``stream_idle_timeout``: the longest wait for the next delta of a stream (keep-alive
      comments do not count as deltas); None (the default) for no such bound.
    """

    attempts: int = 6
    deadline: float = 1200.0
    attempt_timeout: float = 600.0
    wait_initial: float = 1.0
    wait_max: float = 30.0
    wait_jitter: float = 1.0
    max_server_wait: float = 120.0
    stream_deadline: float | None = None
    stream_idle_timeout: float | None = None

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
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValidationError(f"retry {name} must be a finite number >= 0, got {value!r}")
        if self.deadline <= 0 or self.attempt_timeout <= 0:
            raise ValidationError("retry deadline and attempt_timeout must be > 0")
        for name in ("stream_deadline", "stream_idle_timeout"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValidationError(f"retry {name} must be None or a finite number > 0")

    def backoff(self, failures: int) -> float:
        """Our own wait after the ``failures``-th failed attempt (1-based): capped, then
        jittered, so clients that all reached the cap still do not retry in step."""
        base = min(self.wait_max, self.wait_initial * 2.0 ** min(failures - 1, 62))
        return base + random.uniform(0, self.wait_jitter)

    def run(
        self,
        attempt: Callable[[float], T],
        label: str,
        limits: ResponseLimits = DEFAULT_LIMITS,
    ) -> tuple[T, int]:
        """Call ``attempt(timeout)`` until it succeeds or the policy gives up.

        Each attempt runs with its wall-clock end and ``limits`` set in
        :mod:`moodlemate.ai._bounds`, which the provider's HTTP stack enforces on every
        socket read. Returns the result and the number of attempts made; on failure the
        raised ProviderError carries ``attempts``.
        """
        import stamina

        state = _CallState(self, label, stamina)
        try:
            try:
                return state.once(attempt, limits), state.attempts
            except Exception as exc:
                state.failure = exc
            for try_ in state.retry_context(stamina):
                with try_:
                    state.attempts = try_.num
                    state.replay()
                    return state.once(attempt, limits), state.attempts
        except Exception as exc:
            state.finish(exc)
            raise
        raise AssertionError("unreachable: stamina neither returned nor raised")  # pragma: no cover

    async def arun(
        self,
        attempt: Callable[[float], Awaitable[T]],
        label: str,
        limits: ResponseLimits = DEFAULT_LIMITS,
    ) -> tuple[T, int]:
        """Async twin of :meth:`run`; each attempt is also cancelled at its end, so the
        bound holds for any provider, whatever its HTTP stack does."""
        import stamina

        state = _CallState(self, label, stamina)
        try:
            try:
                return await state.aonce(attempt, limits), state.attempts
            except Exception as exc:
                state.failure = exc
            async for try_ in state.retry_context(stamina):
                with try_:
                    state.attempts = try_.num
                    state.replay()
                    return await state.aonce(attempt, limits), state.attempts
        except Exception as exc:
            state.finish(exc)
            raise
        raise AssertionError("unreachable: stamina neither returned nor raised")  # pragma: no cover


class _CallState:
    """Per-call bookkeeping: the deadline, attempts made, and the retry decision."""

    __slots__ = ("attempts", "deadline", "failure", "label", "limit", "policy", "testing")

    def __init__(self, policy: RetryPolicy, label: str, stamina: Any) -> None:
        self.policy = policy
        self.label = label
        self.deadline = time.monotonic() + policy.deadline
        self.attempts = 1
        # The first attempt's error (made before stamina's loop): :meth:`replay` hands it over.
        self.failure: Exception | None = None
        # stamina's testing mode sleeps no backoff and sets the attempt count itself.
        self.testing: bool = stamina.is_testing()
        self.limit: int | None = None if self.testing else policy.attempts

    def retry_context(self, stamina: Any) -> Any:
        """stamina's loop, started after the first attempt failed: its timeout is what is
        left of the deadline. Jitter is 0 because :meth:`decide` returns jittered waits itself."""
        p = self.policy
        return stamina.retry_context(
            on=self.decide,
            attempts=p.attempts,
            timeout=max(self.deadline - time.monotonic(), _NO_TIME),
            wait_initial=p.wait_initial,
            wait_max=p.wait_max,
            wait_jitter=0.0,
        )

    def finish(self, exc: Exception) -> None:
        """Stamp the final error with the attempts made and scrub keys from its whole chain
        (an SDK exception chained as ``__cause__`` may quote a key the server echoed)."""
        if isinstance(exc, ProviderError):
            exc.attempts = self.attempts
        redact_exception(exc)

    def replay(self) -> None:
        """Raise the first attempt's error, once: the loop's first attempt is the one made
        before it started."""
        failure, self.failure = self.failure, None
        if failure is not None:
            try:
                raise failure
            finally:
                del failure  # no cycle through this frame

    def once(self, attempt: Callable[[float], T], limits: ResponseLimits) -> T:
        """One attempt, under its wall-clock end and ``limits`` (:mod:`moodlemate.ai._bounds`,
        which the provider's HTTP stack enforces on every socket read)."""
        timeout = self.attempt_timeout()
        bound = bounds.enter(time.monotonic() + timeout, limits)
        try:
            return attempt(timeout)
        finally:
            bounds.leave(bound)

    async def aonce(self, attempt: Callable[[float], Awaitable[T]], limits: ResponseLimits) -> T:
        """Async :meth:`once`; the attempt is also cancelled at its end, so the bound holds
        for any provider, whatever its HTTP stack does."""
        import asyncio

        timeout = self.attempt_timeout()
        bound = bounds.enter(time.monotonic() + timeout, limits)
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await attempt(timeout)
        except TimeoutError:
            if not scope.expired():
                raise
            raise APITimeoutError(
                f"{self.label}: attempt took longer than {timeout:.3g}s"
            ) from None
        finally:
            bounds.leave(bound)

    def attempt_timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise APITimeoutError(f"{self.label}: deadline of {self.policy.deadline:g}s passed")
        return min(self.policy.attempt_timeout, remaining)

    def decide(self, exc: Exception) -> bool | float:
        """stamina's backoff hook: False to stop, or the seconds to wait before retrying."""
        if not isinstance(exc, ProviderError) or not exc.retryable:
            return False
        if self.limit is not None and self.attempts >= self.limit:
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
            if wait >= remaining and not self.testing:
                log.warning(
                    "%s: not retrying: %.1fs left before the deadline",
                    self.label,
                    max(remaining, 0.0),
                )
                return False
        log.warning(
            "%s: attempt %d of %s failed (%s: %s); retrying in %.2fs",
            self.label,
            self.attempts,
            self.limit or "?",
            type(exc).__name__,
            exc.message,
            0.0 if self.testing else wait,
        )
        listener = _listener.get()
        if listener is not None:
            try:
                listener(self.label, self.attempts, exc, 0.0 if self.testing else wait)
            except Exception:
                log.debug("retry listener failed", exc_info=True)
        return wait


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``retry-after`` as
    seconds or an HTTP date. None (our own backoff) when absent, unparseable, negative or a
    date already past: a wait the server cannot state sensibly must not turn the retries
    into a burst of back-to-back requests."""
    value = headers.get("retry-after-ms")
    if value:
        seconds = _seconds(value, scale=1000.0)
        if seconds is not None:
            return seconds
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    if not value.isascii():
        return None
    # Imported here: email.utils costs ~15 ms at import, and HTTP dates are rare.
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    delay = when.timestamp() - time.time()
    return delay if delay > 0 else None


_DECIMAL_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def _seconds(value: str, scale: float = 1.0) -> float | None:
    """A number of seconds written in ASCII digits (``"2"``, ``"1.5"``), else None.

    ``float()`` is too lenient for a header: it reads ``"1_0"`` as 10, an Arabic-Indic digit
    as 1, and ``"nan"``, ``"inf"`` or ``"-5"`` as numbers. A negative wait is unparseable.
    """
    text = value.strip()
    if not _DECIMAL_SECONDS.fullmatch(text):
        return None
    return float(text) / scale


def should_retry_from_headers(headers: Mapping[str, str]) -> bool | None:
    """The server's explicit ``x-should-retry`` verdict, or None when it gives none."""
    value = (headers.get("x-should-retry") or "").strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None
