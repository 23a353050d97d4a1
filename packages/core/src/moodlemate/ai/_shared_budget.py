"""A budget shared by every process on a machine, held in the spend log's SQLite file.

``GPT(budget="20", budget_scope="team-a", budget_window="day", log="~/spend.db")``: every
instance, in any process, naming the same scope and file draws on one budget. The
reservations of :mod:`moodlemate.ai._budget` move into the file: a call's worst case is
reserved in one ``BEGIN IMMEDIATE`` transaction (so no two processes both take the last
dollar), and settled with its real cost, or released, when it ends. N processes together
spend at most the budget plus, per call in flight, what it costs beyond its reservation.

``budget_window`` ``"day"`` or ``"month"`` (UTC) starts the count afresh each period; None
counts for ever. A reservation a crashed process never settled expires after
:data:`RESERVATION_TTL` seconds. The store failing closes the budget: the call is refused
(BudgetExceededError saying why), never sent unaccounted.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from moodlemate.ai._ledger import Reservation, refusal
from moodlemate.ai.errors import BudgetExceededError, ValidationError

if TYPE_CHECKING:
    from moodlemate.ai._ledger import Ledger
    from moodlemate.ai._spend_log import SpendLog
    from moodlemate.ai._usage import Usage

__all__ = ["RESERVATION_TTL", "WINDOWS", "SharedBudget"]

log = logging.getLogger("moodlemate.ai._shared_budget")

WINDOWS = ("day", "month")
RESERVATION_TTL = 3600.0
"""Seconds after which a reservation nobody settled (its process died) stops counting."""


class SharedBudget:
    """One scope's budget in one spend log file."""

    def __init__(self, store: SpendLog, scope: str, window: str | None = None) -> None:
        if not isinstance(scope, str) or not scope.strip():
            raise ValidationError("budget_scope must be a non-empty name")
        if window is not None and window not in WINDOWS:
            raise ValidationError(f"budget_window must be 'day', 'month' or None, not {window!r}")
        self.store = store
        self.scope = scope
        self.window = window

    def __repr__(self) -> str:
        return f"SharedBudget({self.scope!r}, window={self.window!r}, store={self.store!r})"

    def period(self, now: datetime | None = None) -> str:
        moment = now or datetime.now(UTC)
        if self.window == "day":
            return moment.strftime("%Y-%m-%d")
        if self.window == "month":
            return moment.strftime("%Y-%m")
        return "all"

    @property
    def spent(self) -> Decimal:
        """What every process spent in this scope in the current period."""
        return self.store.spent_shared(self.scope, self.period())

    def reserve(self, amount: Decimal | None, budget: Decimal) -> Reservation:
        """Hold ``amount`` against the scope's budget, or raise BudgetExceededError."""
        amount = amount or Decimal(0)
        try:
            held, spent, reserved = self.store.reserve_shared(
                self.scope, self.period(), amount, budget, RESERVATION_TTL
            )
        except Exception as exc:  # any store failure closes the budget
            raise BudgetExceededError(
                f"shared budget {self.scope!r}: its store {self.store.path} cannot be used "
                f"({type(exc).__name__}: {exc}): call not sent"
            ) from None
        if held is None:
            raise refusal(budget, spent, reserved, amount)
        return SharedReservation(self, held, amount)


class SharedReservation(Reservation):
    """A reservation held in the store: settling records the call locally and adds its real
    cost to the scope; releasing frees it. Store failures are logged, never raised (the
    reservation then expires by itself)."""

    __slots__ = ("_budget", "_id")

    def __init__(self, budget: SharedBudget, reservation_id: int, amount: Decimal) -> None:
        super().__init__(None, amount)
        self._budget = budget
        self._id: int | None = reservation_id

    def settle(self, ledger: Ledger, model: str, usage: Usage, cost: Decimal | None) -> None:
        ledger._record(model, usage, cost, self)
        self._finish(cost)

    def release(self) -> None:
        self._finish(None)

    def _finish(self, cost: Decimal | None) -> None:
        reservation_id, self._id = self._id, None
        if reservation_id is None:
            return
        try:
            self._budget.store.settle_shared(reservation_id, cost)
        except Exception as exc:  # the call is done; the reservation expires on its own
            log.warning(
                "shared budget %r: could not settle a call in %s (%s: %s); its reservation "
                "holds until it expires",
                self._budget.scope,
                self._budget.store.path,
                type(exc).__name__,
                exc,
            )
