"""A thread-safe running account of calls, tokens and cost for one GPT instance, and of the
cost reserved by calls in flight (see :mod:`moodlemate.ai._budget`)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from moodlemate.ai._usage import Usage
from moodlemate.ai.errors import BudgetExceededError

__all__ = ["NO_RESERVATION", "Ledger", "Reservation"]


@dataclass(slots=True)
class _Tally:
    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    unpriced_calls: int = 0

    def add(self, usage: Usage, cost: Decimal | None) -> None:
        self.calls += 1
        self.usage = self.usage + usage
        if cost is None:
            self.unpriced_calls += 1
        else:
            self.cost += cost

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.usage.prompt_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "reasoning_tokens": self.usage.reasoning_tokens,
            "total_tokens": self.usage.total_tokens,
            "cost": self.known_cost,
            "unpriced_calls": self.unpriced_calls,
        }

    @property
    def known_cost(self) -> Decimal | None:
        """The cost, or None when every call was unpriced: unknown, not $0."""
        if self.calls and self.unpriced_calls == self.calls:
            return None
        return self.cost


class Reservation:
    """The worst-case cost one call holds in its ledger until it ends: :meth:`settle` it with
    the real usage, or :meth:`release` it (both once; the second call does nothing).
    ``started`` (monotonic seconds) is when the call was about to be sent: its latency's start."""

    __slots__ = ("_ledger", "_open", "amount", "started")

    def __init__(self, ledger: Ledger | None, amount: Decimal) -> None:
        self._ledger = ledger
        self.amount = amount
        self._open = ledger is not None
        self.started = time.monotonic()

    def settle(
        self,
        ledger: Ledger,
        model: str,
        usage: Usage,
        cost: Decimal | None,
        charge: Decimal | None = None,
    ) -> None:
        """Record the call in ``ledger`` and free the reservation, in one step. ``charge``: what
        a call of unknown ``cost`` counts against the budget (see :meth:`Ledger.charged`)."""
        ledger._record(model, usage, cost, self, charge)

    def release(self) -> None:
        if self._open and self._ledger is not None:
            self._ledger._release(self)


NO_RESERVATION = Reservation(None, Decimal(0))
"""Reserves nothing, and settling it only records (calls without a budget get their own, so
each has its start time)."""


class Ledger:
    """Running totals per instance; every call's usage lands here exactly once, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = _Tally()
        self._by_model: dict[str, _Tally] = {}
        self._reserved = Decimal(0)
        self._charged = Decimal(0)

    def record(
        self, model: str, usage: Usage, cost: Decimal | None, charge: Decimal | None = None
    ) -> None:
        """Add a call; ``charge``: what it counts against the budget when ``cost`` is unknown
        (see :attr:`charged`)."""
        self._record(model, usage, cost, None, charge)

    def reserve(self, amount: Decimal | None, budget: Decimal) -> Reservation:
        """Hold ``amount`` (None: unpriced, nothing to hold) against ``budget``, or raise
        BudgetExceededError if the cost so far, the reservations and it would cross it."""
        amount = amount or Decimal(0)
        with self._lock:
            spent = self._total.cost + self._charged
            if spent >= budget or spent + self._reserved + amount > budget:
                raise refusal(budget, spent, self._reserved, amount)
            self._reserved += amount
        return Reservation(self, amount)

    def hold(self, amount: Decimal) -> Reservation:
        """Hold ``amount`` whatever the budget says: for work already sent (a remote batch
        submitted by an earlier run), which must count until its cost is known."""
        with self._lock:
            self._reserved += amount
        return Reservation(self, amount)

    @property
    def reserved(self) -> Decimal:
        """Worst-case cost held by calls in flight (budgeted calls only)."""
        with self._lock:
            return self._reserved

    def _record(
        self,
        model: str,
        usage: Usage,
        cost: Decimal | None,
        reservation: Reservation | None,
        charge: Decimal | None = None,
    ) -> None:
        with self._lock:
            if reservation is not None and reservation._open and reservation._ledger is self:
                reservation._open = False
                self._reserved -= reservation.amount
            if cost is None and charge:
                self._charged += charge
            self._total.add(usage, cost)
            tally = self._by_model.get(model)
            if tally is None:
                tally = self._by_model[model] = _Tally()
            tally.add(usage, cost)

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation._open:
                reservation._open = False
                self._reserved -= reservation.amount

    @property
    def calls(self) -> int:
        with self._lock:
            return self._total.calls

    @property
    def usage(self) -> Usage:
        with self._lock:
            return self._total.usage

    @property
    def cost(self) -> Decimal:
        """Known cost so far in USD; calls to unpriced models are counted in
        ``unpriced_calls``."""
        with self._lock:
            return self._total.cost

    @property
    def charged(self) -> Decimal:
        """What calls of unknown cost count against the budget: a call reserved at a known
        price whose reply turned out to have tokens (or a service tier) without one counts at
        its reservation, or at its priced pieces when they come to more. Not part of
        :attr:`cost`, which holds known costs only."""
        with self._lock:
            return self._charged

    @property
    def unpriced_calls(self) -> int:
        """Calls whose cost is unknown (and so missing from ``cost``)."""
        with self._lock:
            return self._total.unpriced_calls

    def reset(self) -> None:
        """Zero the totals (reservations of calls in flight stay held until they end)."""
        with self._lock:
            self._total = _Tally()
            self._by_model = {}
            self._charged = Decimal(0)

    def as_dict(self) -> dict[str, Any]:
        """``{"total": {...}, "by_model": {model: {...}}}`` with exact Decimal costs; a cost is
        None (unknown) where every call was unpriced, and ``unpriced_calls`` counts the calls
        missing from a known cost."""
        with self._lock:
            return {
                "total": self._total.as_dict(),
                "by_model": {name: t.as_dict() for name, t in sorted(self._by_model.items())},
            }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`as_dict` as JSON; costs become strings so no digit is lost to float."""
        import json  # only exports need it; keeps GPT() light

        return json.dumps(self.as_dict(), default=str, **kwargs)

    def __repr__(self) -> str:
        with self._lock:
            cost = self._total.known_cost
            return f"Ledger(calls={self._total.calls}, cost={'unknown' if cost is None else cost})"


def refusal(budget: Decimal, spent: Decimal, reserved: Decimal, amount: Decimal) -> Exception:
    """The error for a call the budget cannot take, with the figures that decided it."""
    if spent >= budget:
        why = f"budget of ${_usd(budget)} reached (${_usd(spent)} spent)"
    else:
        why = (
            f"budget of ${_usd(budget)} would be crossed: ${_usd(spent)} spent, "
            f"${_usd(reserved)} reserved by calls in flight, and this call may cost up to "
            f"${_usd(amount)}"
        )
    return BudgetExceededError(
        f"{why}: call not sent; lower max_tokens, raise GPT.budget, set it to None, "
        "or reset GPT.ledger"
    )


def _usd(amount: Decimal) -> str:
    return format(amount.normalize(), "f")
