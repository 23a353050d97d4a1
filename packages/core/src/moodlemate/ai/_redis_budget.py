"""A shared budget held in Redis: one budget for every process on every machine.

Amounts are integer nano-dollars (a reservation rounds up, so the store never holds less
than the call may cost). Reserving and settling are Lua scripts, so each is one atomic step
on the server however many workers race; reservations lapse on the Redis server's own clock
(``TIME``), so machines whose clocks disagree still agree on what has expired. Keys carry the
scope in a hash tag (``{scope|period}``), so one script touches one cluster slot. A windowed
period's keys expire some time after the period ends; an unwindowed scope keeps them.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from moodlemate.ai._redis import redis_client, require_redis_py, shown_url

__all__ = ["NANO", "RedisBudgetStore"]

NANO = Decimal("0.000000001")
_KEEP = {"day": 3 * 86400, "month": 40 * 86400}
"""Seconds a windowed period's keys outlive their last write (long past the period)."""

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(lapsed) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserved = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + tonumber(v) end
local amount = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
if spent >= budget or spent + reserved + amount > budget then
  return {0, spent, reserved}
end
local id = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[2], id, ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), id)
local keep = tonumber(ARGV[4])
if keep > 0 then
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], keep) end
end
return {id, spent, reserved}
"""

_SETTLE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('INCRBY', KEYS[1], cost)
  local keep = tonumber(ARGV[3])
  if keep > 0 then redis.call('EXPIRE', KEYS[1], keep) end
end
return 1
"""


_SETTLE_ONCE = """
if ARGV[1] ~= '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if redis.call('HSETNX', KEYS[4], ARGV[2], ARGV[3]) == 0 then return 0 end
local cost = tonumber(ARGV[3])
if cost > 0 then redis.call('INCRBY', KEYS[1], cost) end
local keep = tonumber(ARGV[4])
if keep > 0 then
  redis.call('EXPIRE', KEYS[1], keep)
  redis.call('EXPIRE', KEYS[4], keep)
end
return 1
"""


def to_nano(amount: Decimal) -> int:
    """``amount`` dollars as whole nano-dollars, rounded up."""
    return int((amount / NANO).to_integral_value(ROUND_CEILING))


class RedisBudgetStore:
    """Shared-budget reservations in the Redis server at ``url``."""

    def __init__(self, url: str, prefix: str = "moodlemate:budget") -> None:
        require_redis_py()
        self.url = url
        self.prefix = prefix
        self._scripts: tuple[Any, Any, Any] | None = None

    @property
    def where(self) -> str:
        return shown_url(self.url)

    def __repr__(self) -> str:
        return f"RedisBudgetStore({self.where!r})"

    def reserve_shared(
        self, scope: str, period: str, amount: Decimal, budget: Decimal, ttl: float
    ) -> tuple[int | None, Decimal, Decimal]:
        reserve, _, _ = self._loaded()
        held, spent, reserved = reserve(
            keys=self._keys(scope, period),
            args=[to_nano(amount), to_nano(budget), int(ttl * 1000), self._keep(period)],
        )
        return (int(held) or None), int(spent) * NANO, int(reserved) * NANO

    def settle_shared(
        self, scope: str, period: str, reservation_id: int, cost: Decimal | None
    ) -> None:
        _, settle, _ = self._loaded()
        nano = 0 if cost is None else to_nano(cost)
        settle(keys=self._keys(scope, period)[:3], args=[reservation_id, nano, self._keep(period)])

    def settle_once(
        self, scope: str, period: str, key: str, reservation_id: int | None, cost: Decimal
    ) -> bool:
        _, _, settle_once = self._loaded()
        keys = self._keys(scope, period)
        done = settle_once(
            keys=[*keys[:3], f"{keys[0].removesuffix(':spent')}:settled"],
            args=[
                "" if reservation_id is None else reservation_id,
                key,
                to_nano(cost),
                self._keep(period),
            ],
        )
        return bool(int(done))

    def spent_shared(self, scope: str, period: str) -> Decimal:
        value = redis_client(self.url).get(self._keys(scope, period)[0])
        return int(value or 0) * NANO

    def _keys(self, scope: str, period: str) -> list[str]:
        tag = f"{self.prefix}:{{{scope}|{period}}}"
        return [f"{tag}:spent", f"{tag}:held", f"{tag}:expiry", f"{tag}:ids"]

    @staticmethod
    def _keep(period: str) -> int:
        if period == "all":
            return 0
        return _KEEP["day" if len(period) == len("2026-01-01") else "month"]

    def _loaded(self) -> tuple[Any, Any, Any]:
        scripts = self._scripts
        if scripts is None:
            client = redis_client(self.url)
            scripts = self._scripts = (
                client.register_script(_RESERVE),
                client.register_script(_SETTLE),
                client.register_script(_SETTLE_ONCE),
            )
        return scripts
