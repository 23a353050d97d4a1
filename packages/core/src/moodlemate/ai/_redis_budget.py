"""A shared budget held in Redis: one budget for every process on every machine.

Amounts are integer nano-dollars (a reservation rounds up, so the store never holds less
than the call may cost). Reserving, settling and restoring are Lua scripts, so each is one
atomic step on the server however many workers race; reservations lapse on the Redis server's
own clock (``TIME``), so machines whose clocks disagree still agree on what has expired, and
a lapsed reservation moves into the spent total at its full amount (a late settle then adds
only what the call cost beyond it). Keys carry the scope in a hash tag (``{scope|period}``),
so one script touches one cluster slot. A windowed period's keys expire some time after the
period ends; an unwindowed scope keeps them.

A Redis that restarts without persistence comes back empty, and an empty scope would re-open
the whole budget. Each scope therefore carries an *epoch*, a random token written when its
keys are created. Every process remembers, per scope, the epoch it worked in, the highest
total it has seen spent, and its own reservations in flight; when the epoch it remembers is
gone (or replaced), the store has lost the scope, and the process restores it before going
on: the spent total rises to at least what the process saw, and its reservations in flight
are held again, under their own ids, so their settles land. Every live worker does this on
its next call, so the scope comes back to the largest total any live worker saw, plus every
live call in flight. What no live process remembers (the cost of workers that ended before
the restart and were never seen by a live one) is lost: run Redis with persistence
(``appendonly yes``) when a budget must survive a restart with no worker running.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from moodlemate.ai._redis import redis_client, require_redis_py, shown_url

__all__ = ["NANO", "RedisBudgetStore"]

log = logging.getLogger("moodlemate.ai._redis_budget")

NANO = Decimal("0.000000001")
_KEEP = {"day": 3 * 86400, "month": 40 * 86400}
"""Seconds a windowed period's keys outlive their last write (long past the period)."""

# KEYS: spent, held (id -> amount), expiry (id by lapse time), lapsed (id -> amount), epoch
_KEEP_ALIVE = """
local function keep_alive(keep)
  if keep > 0 then
    for i = 1, 5 do redis.call('EXPIRE', KEYS[i], keep) end
  end
end
"""

_RESERVE = (
    _KEEP_ALIVE
    + """
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  if ARGV[6] ~= '' then return {-1, 0, 0, '', 0} end
  epoch = ARGV[7]
  redis.call('SET', KEYS[5], epoch)
elseif ARGV[6] ~= '' and ARGV[6] ~= epoch then
  return {-1, 0, 0, '', 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  local amount = redis.call('HGET', KEYS[2], id)
  if amount then
    redis.call('HDEL', KEYS[2], id)
    redis.call('INCRBY', KEYS[1], amount)
    redis.call('HSET', KEYS[4], id, amount)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserved = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + tonumber(v) end
local amount = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
if spent >= budget or spent + reserved + amount > budget then
  return {0, spent, reserved, epoch, 0}
end
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[3], expires, ARGV[5])
keep_alive(tonumber(ARGV[4]))
return {1, spent, reserved, epoch, expires}
"""
)

_SETTLE = (
    _KEEP_ALIVE
    + """
if redis.call('GET', KEYS[5]) ~= ARGV[4] then return -1 end
local cost = tonumber(ARGV[2])
if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  local lapsed = redis.call('HGET', KEYS[4], ARGV[1])
  if lapsed then
    redis.call('HDEL', KEYS[4], ARGV[1])
    cost = cost - tonumber(lapsed)
  end
end
if cost > 0 then redis.call('INCRBY', KEYS[1], cost) end
keep_alive(tonumber(ARGV[3]))
return tonumber(redis.call('GET', KEYS[1]) or '0')
"""
)

# KEYS as above, then settled (key -> cost): what a remote batch part settled, once.
_SETTLE_ONCE = (
    _KEEP_ALIVE
    + """
if redis.call('HSETNX', KEYS[6], ARGV[2], ARGV[3]) == 0 then return 0 end
local cost = tonumber(ARGV[3])
if ARGV[1] ~= '' then
  if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then
    redis.call('ZREM', KEYS[3], ARGV[1])
  else
    local lapsed = redis.call('HGET', KEYS[4], ARGV[1])
    if lapsed then
      redis.call('HDEL', KEYS[4], ARGV[1])
      cost = cost - tonumber(lapsed)
    end
  end
end
if cost > 0 then redis.call('INCRBY', KEYS[1], cost) end
local keep = tonumber(ARGV[4])
keep_alive(keep)
if keep > 0 then redis.call('EXPIRE', KEYS[6], keep) end
return 1
"""
)

_RESTORE = (
    _KEEP_ALIVE
    + """
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[5], epoch)
end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if spent < floor then redis.call('SET', KEYS[1], ARGV[1]) end
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[2], id) == 0 and redis.call('HEXISTS', KEYS[4], id) == 0 then
    redis.call('HSET', KEYS[2], id, ARGV[i + 1])
    redis.call('ZADD', KEYS[3], ARGV[i + 2], id)
  end
end
keep_alive(tonumber(ARGV[2]))
return {epoch, spent}
"""
)


def to_nano(amount: Decimal) -> int:
    """``amount`` dollars as whole nano-dollars, rounded up."""
    return int((amount / NANO).to_integral_value(ROUND_CEILING))


@dataclass(slots=True)
class _Seen:
    """What this process knows of one scope's period: the epoch it works in, the most it
    has seen spent (nano-dollars), and its reservations in flight (id -> amount, lapse)."""

    epoch: str = ""
    floor: int = 0
    live: dict[int, tuple[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RedisBudgetStore:
    """Shared-budget reservations in the Redis server at ``url``."""

    def __init__(self, url: str, prefix: str = "moodlemate:budget") -> None:
        require_redis_py()
        self.url = url
        self.prefix = prefix
        self._scripts: tuple[Any, Any, Any, Any] | None = None
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return shown_url(self.url)

    def __repr__(self) -> str:
        return f"RedisBudgetStore({self.where!r})"

    def reserve_shared(
        self, scope: str, period: str, amount: Decimal, budget: Decimal, ttl: float
    ) -> tuple[int | None, Decimal, Decimal]:
        reserve, _, _, _ = self._loaded()
        seen = self._scope(scope, period)
        keys = self._keys(scope, period)
        nano = to_nano(amount)
        reservation_id = secrets.randbits(62) or 1
        for _ in range(3):
            code, spent, reserved, epoch, expires = reserve(
                keys=keys,
                args=[
                    nano,
                    to_nano(budget),
                    int(ttl * 1000),
                    self._keep(period),
                    reservation_id,
                    seen.epoch,
                    secrets.token_hex(8),
                ],
            )
            if int(code) >= 0:
                break
            self._restore(scope, period, seen)
        else:
            raise RuntimeError("the scope changed under every try to restore it")
        with seen.lock:
            seen.epoch = _text(epoch)
            seen.floor = max(seen.floor, int(spent))
            if int(code):
                seen.live[reservation_id] = (nano, int(expires))
        return (reservation_id if int(code) else None), int(spent) * NANO, int(reserved) * NANO

    def settle_shared(
        self, scope: str, period: str, reservation_id: int, cost: Decimal | None
    ) -> None:
        _, settle, _, _ = self._loaded()
        seen = self._scope(scope, period)
        keys = self._keys(scope, period)
        nano = 0 if cost is None else to_nano(cost)
        for _ in range(3):
            spent = settle(keys=keys, args=[reservation_id, nano, self._keep(period), seen.epoch])
            if int(spent) >= 0:
                break
            self._restore(scope, period, seen)
        else:
            raise RuntimeError("the scope changed under every try to restore it")
        with seen.lock:
            seen.floor = max(seen.floor, int(spent))
            seen.live.pop(reservation_id, None)

    def settle_once(
        self, scope: str, period: str, key: str, reservation_id: int | None, cost: Decimal
    ) -> bool:
        """Add ``cost`` once per ``key`` (a lapsed reservation's amount already counted) and
        free the reservation; False when ``key`` was settled before."""
        _, _, _, settle_once = self._loaded()
        keys = self._keys(scope, period)
        done = settle_once(
            keys=[*keys, f"{keys[0].removesuffix(':spent')}:settled"],
            args=[
                "" if reservation_id is None else reservation_id,
                key,
                to_nano(cost),
                self._keep(period),
            ],
        )
        seen = self._scope(scope, period)
        if reservation_id is not None:
            with seen.lock:
                seen.live.pop(reservation_id, None)
        return bool(int(done))

    def spent_shared(self, scope: str, period: str) -> Decimal:
        value = redis_client(self.url).get(self._keys(scope, period)[0])
        return int(value or 0) * NANO

    def _restore(self, scope: str, period: str, seen: _Seen) -> None:
        """The store lost (or another process re-created) this scope: bring back what this
        process saw spent and its own reservations in flight (see the module docstring)."""
        _, _, restore, _ = self._loaded()
        with seen.lock:
            floor, live = seen.floor, list(seen.live.items())
        args: list[Any] = [floor, self._keep(period), secrets.token_hex(8)]
        for reservation_id, (amount, expires) in live:
            args += [reservation_id, amount, expires]
        epoch, spent = restore(keys=self._keys(scope, period), args=args)
        with seen.lock:
            seen.epoch = _text(epoch)
        if int(spent) < floor:
            log.warning(
                "shared budget %r: its store %s had lost the scope's total (a Redis restart "
                "without persistence?); restored it to at least $%s spent, as this process "
                "saw it, with %d of its calls in flight",
                scope,
                self.where,
                format((floor * NANO).normalize(), "f"),
                len(live),
            )

    def _scope(self, scope: str, period: str) -> _Seen:
        key = (scope, period)
        seen = self._seen.get(key)
        if seen is None:
            with self._lock:
                seen = self._seen.get(key)
                if seen is None:
                    for old in [k for k, v in self._seen.items() if k[0] == scope and not v.live]:
                        del self._seen[old]  # a period that ended, nothing in flight
                    seen = self._seen[key] = _Seen()
        return seen

    def _keys(self, scope: str, period: str) -> list[str]:
        tag = f"{self.prefix}:{{{scope}|{period}}}"
        return [f"{tag}:spent", f"{tag}:held", f"{tag}:expiry", f"{tag}:lapsed", f"{tag}:epoch"]

    @staticmethod
    def _keep(period: str) -> int:
        if period == "all":
            return 0
        return _KEEP["day" if len(period) == len("2026-01-01") else "month"]

    def _loaded(self) -> tuple[Any, Any, Any, Any]:
        scripts = self._scripts
        if scripts is None:
            client = redis_client(self.url)
            scripts = self._scripts = (
                client.register_script(_RESERVE),
                client.register_script(_SETTLE),
                client.register_script(_RESTORE),
                client.register_script(_SETTLE_ONCE),
            )
        return scripts


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
