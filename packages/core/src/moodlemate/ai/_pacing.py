"""Client-side pacing: wait for capacity under a provider's rate limits instead of meeting 429s.

The limits per endpoint origin and model come from what the servers say on every response
(:mod:`moodlemate.ai._rate_limit_headers`: OpenAI's and OpenRouter's ``x-ratelimit-*``) and
from configuration (``pacing={"gpt-4o-mini": {"requests_per_minute": 500}}``). Before each
attempt is sent, :meth:`Pacer.acquire` takes one request slot (and, under a token limit, the
attempt's estimated tokens); without capacity it sleeps until the next slot opens, within the
attempt's time. A response saying nothing is left, or a 429's ``retry-after``, holds that
origin and model until the server's reset, for every worker sharing Redis; never longer than
the retry policy's ``max_server_wait`` (one hostile header cannot stop a fleet for an hour),
and a success for that model lifts the hold early (in Redis too).

The limiter algorithms are the ``limits`` library's: its moving window for requests, its
sliding-window counter for tokens, in memory for one process or in Redis
(``redis="redis://..."``) for a fleet. Servers enforce a per-minute limit over short slices
(OpenAI: "600 RPM" may mean 10 per second), so requests are paced in windows of a few
seconds at :data:`HEADROOM` of the limit. Until a server has answered once for a model, a
process sends it one call at a time (a probe), so a burst of threads cannot spend a slice's
allowance before anyone has learned what it is. Redis failing degrades pacing to this process's
own limiter, with a warning, for :data:`DEGRADED_FOR` seconds before Redis is tried again.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace
from typing import Any

from moodlemate.ai._rate_limit_headers import RateLimits
from moodlemate.ai.errors import ConfigurationError, RateLimitError, ValidationError

__all__ = ["DEGRADED_FOR", "HEADROOM", "PACED", "PaceLimit", "Pacer", "pace_limits"]

log = logging.getLogger("moodlemate.ai._pacing")

HEADROOM = 0.9
"""The share of a stated limit the pacer uses: the rest absorbs clock and network jitter."""
DEGRADED_FOR = 30.0
"""Seconds pacing stays local after Redis failed, before Redis is tried again."""
_WINDOWS = (1, 2, 3, 6, 10, 15, 20, 30, 60)
_MIN_PER_WINDOW = 5
"""Requests a pacing window should admit (for smoothness), where the limit allows it."""
_PROBE_POLL = 0.02
"""Seconds between two looks at whether the probe of a new model has been answered."""
_LONGEST_HOLD = 3600.0
"""Seconds a hold lasts at most when the caller names no shorter bound (calls name their
retry policy's ``max_server_wait``)."""
_SHARE_HOLD = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""
PACED = "client_pacing"
"""The ``code`` of the RateLimitError the pacer raises when an attempt's time runs out."""
_LOOK_AGAIN = 0.25
"""Seconds a waiter sleeps at most before it looks again (a lifted hold frees it soon)."""
_JITTER = 0.01
"""Up to this many seconds added to a wait, so waiters woken together do not all collide."""


@dataclass(frozen=True, slots=True)
class PaceLimit:
    """Requests and tokens per minute for one model (None: no limit of that kind)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValidationError(
                    f"pacing: {name} must be a whole number above 0, not {value!r}"
                )

    def merged(self, other: PaceLimit | None) -> PaceLimit:
        """The stricter of two limits, kind by kind."""
        if other is None:
            return self
        return PaceLimit(
            _lower(self.requests_per_minute, other.requests_per_minute),
            _lower(self.tokens_per_minute, other.tokens_per_minute),
        )


def pace_limits(value: object) -> dict[str, PaceLimit]:
    """Configured limits by model (``"*"``: every model), from a mapping of model to
    PaceLimit or to ``{"requests_per_minute": ..., "tokens_per_minute": ...}``."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"pacing must be True, False or a table of models, not {value!r}")
    limits: dict[str, PaceLimit] = {}
    for model, limit in value.items():
        if not isinstance(model, str) or not model:
            raise ValidationError(f"pacing: model names must be text, not {model!r}")
        if isinstance(limit, PaceLimit):
            limits[model] = limit
            continue
        if not isinstance(limit, Mapping) or not set(limit) <= {
            "requests_per_minute",
            "tokens_per_minute",
        }:
            raise ValidationError(
                f"pacing[{model!r}] must be a table of requests_per_minute and "
                f"tokens_per_minute, not {limit!r}"
            )
        try:
            limits[model] = PaceLimit(**limit)
        except ValidationError as exc:
            raise ValidationError(exc.message.replace("pacing:", f"pacing[{model!r}]:")) from None
    return limits


class Pacer:
    """Rate-limit pacing for every call an instance sends (see the module docstring)."""

    def __init__(
        self,
        configured: Mapping[str, PaceLimit] | None = None,
        *,
        redis: str | None = None,
        scope: str = "default",
    ) -> None:
        self.configured = dict(configured or {})
        self.redis = redis
        self.scope = scope
        self._learned: dict[tuple[str, str], PaceLimit] = {}
        self._holds: dict[tuple[str, str], float] = {}
        self._shared_holds: set[tuple[str, str]] = set()
        """Holds another worker set in Redis that this process has waited on."""
        self._answered: set[tuple[str, str]] = set()
        self._probing: set[tuple[str, str]] = set()
        self._items: dict[tuple[int, bool], Any] = {}
        self._lock = threading.Lock()
        self._local: tuple[Any, Any] | None = None
        self._shared: tuple[Any, Any] | None = None
        self._degraded_until = 0.0
        _limits()  # fail now, not at the first call, when a library is missing
        if redis is not None:
            from moodlemate.ai._redis import require_redis_py

            require_redis_py()

    def __repr__(self) -> str:
        where = "redis" if self.redis else "local"
        return f"Pacer({where}, scope={self.scope!r}, configured={sorted(self.configured)})"

    # -- what is known ----------------------------------------------------------------------

    def limit_for(self, origin: str, model: str) -> PaceLimit | None:
        """The limit that applies: the stricter of the configured and the learned one."""
        configured = self.configured.get(model) or self.configured.get("*")
        learned = self._learned.get((origin, model))
        if configured is None:
            return learned
        return configured.merged(learned)

    def learn(
        self,
        origin: str,
        model: str,
        stated: RateLimits | None,
        longest: float = _LONGEST_HOLD,
    ) -> None:
        """Take in what a successful response's headers said (None: nothing, which is also
        news): a limit to pace by, a hold of at most ``longest`` seconds when nothing is
        left, else the lifting of any hold on the model (the server is answering)."""
        key = (origin, model)
        if key not in self._answered:
            with self._lock:
                self._answered.add(key)
                self._probing.discard(key)
        wait = 0.0 if stated is None else stated.exhausted_for
        if stated is not None and (stated.requests_limit or stated.tokens_limit):
            self._learned[key] = PaceLimit(
                stated.requests_limit or None, stated.tokens_limit or None
            )
        if wait > 0:
            self.hold(origin, model, wait, longest)
        elif self._holds.get(key, 0.0) > time.time() or key in self._shared_holds:
            self.lift(origin, model)

    def lift(self, origin: str, model: str) -> None:
        """End a hold on ``model`` at ``origin`` early (a success came back after it was set),
        here and, through Redis, for every worker sharing it."""
        key = (origin, model)
        with self._lock:
            self._holds.pop(key, None)
            self._shared_holds.discard(key)
        if self.redis is not None and time.monotonic() >= self._degraded_until:
            threading.Thread(
                target=self._lift_shared, args=(self._hold_key(origin, model),), daemon=True
            ).start()

    def unanswered(self, origin: str, model: str) -> None:
        """A call ended without a response to learn from: the next one may probe."""
        key = (origin, model)
        if key in self._probing:
            with self._lock:
                self._probing.discard(key)

    def hold(self, origin: str, model: str, seconds: float, longest: float = _LONGEST_HOLD) -> None:
        """Send nothing more to ``model`` at ``origin`` for ``seconds`` (a 429's retry-after),
        ``longest`` at most, from this process and, through Redis, from every worker
        sharing it."""
        seconds = max(0.0, min(seconds, longest, _LONGEST_HOLD))
        if seconds <= 0:
            return
        until = time.time() + seconds
        key = (origin, model)
        with self._lock:
            if until <= self._holds.get(key, 0.0):
                return
            self._holds[key] = until
        if self.redis is not None and time.monotonic() >= self._degraded_until:
            # Off the caller's thread: a 429 is rare, and an async caller must not wait on Redis.
            threading.Thread(
                target=self._share_hold, args=(self._hold_key(origin, model), seconds), daemon=True
            ).start()

    def _hold_key(self, origin: str, model: str) -> str:
        return f"moodlemate:pace:hold/{self.scope}/{origin}/{model}"

    def _share_hold(self, key: str, seconds: float) -> None:
        from moodlemate.ai._redis import redis_client

        try:
            redis_client(self.redis or "").eval(_SHARE_HOLD, 1, key, max(1, int(seconds * 1000)))
        except Exception as exc:
            self._degrade(exc)

    def _lift_shared(self, key: str) -> None:
        from moodlemate.ai._redis import redis_client

        try:
            redis_client(self.redis or "").delete(key)
        except Exception as exc:
            self._degrade(exc)

    def _shared_hold(self, origin: str, model: str) -> float:
        """Seconds another worker's hold on ``model`` at ``origin`` still runs (0: none)."""
        from moodlemate.ai._redis import redis_client

        left = redis_client(self.redis or "").pttl(self._hold_key(origin, model))
        if left > 0:
            self._shared_holds.add((origin, model))  # a success here may lift it
            return float(left / 1000)
        self._shared_holds.discard((origin, model))
        return 0.0

    # -- waiting for capacity -----------------------------------------------------------------

    def acquire(self, origin: str, model: str, tokens: int, deadline: float | None) -> None:
        """Wait for capacity for one attempt, until ``deadline`` (monotonic) at most."""
        while True:
            wait = self._try(origin, model, tokens)
            if wait <= 0:
                return
            time.sleep(min(self._bounded(wait, deadline, model, origin), _LOOK_AGAIN))

    async def aacquire(self, origin: str, model: str, tokens: int, deadline: float | None) -> None:
        """Async :meth:`acquire`; Redis is asked from a worker thread, so the loop runs on."""
        import asyncio  # loaded by the first async call, not by GPT()

        while True:
            if self.redis is not None and self._limit_known(origin, model):  # Redis is asked
                wait = await asyncio.to_thread(self._try, origin, model, tokens)
            else:
                wait = self._try(origin, model, tokens)
            if wait <= 0:
                return
            await asyncio.sleep(min(self._bounded(wait, deadline, model, origin), _LOOK_AGAIN))

    def _limit_known(self, origin: str, model: str) -> bool:
        return self.limit_for(origin, model) is not None

    def _bounded(self, wait: float, deadline: float | None, model: str, origin: str) -> float:
        wait += random.uniform(0, _JITTER)
        if deadline is not None and time.monotonic() + wait > deadline:
            raise RateLimitError(
                f"client-side pacing: no capacity for {model} at {origin} within the "
                f"attempt's time (the next slot opens in {wait:.2f}s); nothing was sent",
                model=model,
                code=PACED,
                retry_after=wait,
                retryable=True,
            )
        return wait

    def _try(self, origin: str, model: str, tokens: int) -> float:
        """Take capacity now and return 0, or return the seconds to wait before trying again."""
        key = (origin, model)
        held = self._holds.get(key, 0.0) - time.time()
        if held > 0:
            return held
        limit = self.limit_for(origin, model)
        if limit is None:
            return self._probe(key)
        identity = (self.scope, origin, model)
        shared = self._shared_limiters()
        if shared is not None:
            try:
                held = self._shared_hold(origin, model)
                return held if held > 0 else self._take(shared, limit, identity, tokens)
            except Exception as exc:  # Redis is gone: this process paces alone for a while
                self._degrade(exc)
        return self._take(self._local_limiters(), limit, identity, tokens)

    def _probe(self, key: tuple[str, str]) -> float:
        """No limit known: go if the server has answered before or no probe is out."""
        if key in self._answered:
            return 0.0
        with self._lock:
            if key in self._answered:
                return 0.0
            if key not in self._probing:
                self._probing.add(key)
                return 0.0
        return _PROBE_POLL

    def _take(
        self, limiters: tuple[Any, Any], limit: PaceLimit, identity: tuple[str, ...], tokens: int
    ) -> float:
        requests, token_counter = limiters
        ids = tuple(str(part) for part in identity)
        token_item = None
        if limit.tokens_per_minute is not None:
            token_item = self._item(limit.tokens_per_minute, tokens=True)
            cost = max(1, min(tokens, token_item.amount))
            if not token_counter.test(token_item, *ids, cost=cost):
                return _until(token_counter.get_window_stats(token_item, *ids).reset_time)
        if limit.requests_per_minute is not None:
            item = self._item(limit.requests_per_minute, tokens=False)
            if not requests.hit(item, *ids):
                return _until(requests.get_window_stats(item, *ids).reset_time)
        if token_item is not None and not token_counter.hit(token_item, *ids, cost=cost):
            return _until(token_counter.get_window_stats(token_item, *ids).reset_time)
        return 0.0

    def _item(self, per_minute: int, *, tokens: bool) -> Any:
        cached = self._items.get((per_minute, tokens))
        if cached is not None:
            return cached
        lib = _limits()
        item: Any
        if tokens:  # one minute: a single call may need a large share of the minute's tokens
            item = lib.RateLimitItemPerMinute(max(1, math.floor(per_minute * HEADROOM)), 1)
        else:
            window = next(
                (w for w in _WINDOWS if per_minute * HEADROOM * w / 60 >= _MIN_PER_WINDOW), 60
            )
            amount = max(1, math.floor(per_minute * HEADROOM * window / 60))
            item = lib.RateLimitItemPerSecond(amount, window)
        self._items[(per_minute, tokens)] = item
        return item

    def _local_limiters(self) -> tuple[Any, Any]:
        limiters = self._local
        if limiters is None:
            with self._lock:  # one storage for every thread, or each would pace alone
                limiters = self._local
                if limiters is None:
                    lib = _limits()
                    storage = lib.storage.MemoryStorage()
                    limiters = self._local = (
                        lib.strategies.MovingWindowRateLimiter(storage),
                        lib.strategies.SlidingWindowCounterRateLimiter(storage),
                    )
        return limiters

    def _shared_limiters(self) -> tuple[Any, Any] | None:
        if self.redis is None or time.monotonic() < self._degraded_until:
            return None
        limiters = self._shared
        if limiters is None:
            with self._lock:
                limiters = self._shared
                if limiters is None:
                    limiters = self._shared = _redis_limiters(self.redis)
        return limiters

    def _degrade(self, exc: BaseException) -> None:
        from moodlemate.ai._redis import shown_url

        with self._lock:
            first = time.monotonic() >= self._degraded_until
            self._degraded_until = time.monotonic() + DEGRADED_FOR
        if first:
            log.warning(
                "pacing: Redis at %s cannot be used (%s); pacing this process alone for %gs",
                shown_url(self.redis or ""),
                type(exc).__name__,
                DEGRADED_FOR,
            )


def _redis_limiters(url: str) -> tuple[Any, Any]:
    from moodlemate.ai._redis import client_options

    lib = _limits()
    storage = lib.storage.RedisStorage(
        url, key_prefix="moodlemate:pace", wrap_exceptions=True, **client_options()
    )
    return (
        lib.strategies.MovingWindowRateLimiter(storage),
        lib.strategies.SlidingWindowCounterRateLimiter(storage),
    )


def _until(moment: float) -> float:
    return max(0.001, moment - time.time())


def _lower(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


@cache
def _limits() -> SimpleNamespace:
    """The parts of the ``limits`` library the pacer uses, imported once, on first need."""
    try:
        import limits
        import limits.storage
        import limits.strategies
    except ImportError:
        raise ConfigurationError(
            'pacing needs the limits library: pip install "moodlemate-ai[redis]" '
            '(or "moodlemate-ai[pacing]" without Redis)'
        ) from None
    return SimpleNamespace(
        RateLimitItemPerMinute=limits.RateLimitItemPerMinute,
        RateLimitItemPerSecond=limits.RateLimitItemPerSecond,
        storage=limits.storage,
        strategies=limits.strategies,
    )
