"""What a shared budget needs of the store that holds it, whichever store that is.

Two stores implement it: the spend log's SQLite file (:class:`moodlemate.ai._spend_log.SpendLog`,
every process on one machine) and Redis (:class:`moodlemate.ai._redis_budget.RedisBudgetStore`,
every process on every machine that reaches it). :mod:`moodlemate.ai._shared_budget` speaks
only this protocol, so the budget's rules are written once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from decimal import Decimal

__all__ = ["BudgetStore"]


class BudgetStore(Protocol):
    """Atomic reservations against one scope's budget, shared by every process using it."""

    @property
    def where(self) -> str:
        """The store, for messages (a file's path, a Redis URL without its password)."""
        ...

    def reserve_shared(
        self, scope: str, period: str, amount: Decimal, budget: Decimal, ttl: float
    ) -> tuple[int | None, Decimal, Decimal]:
        """Atomically hold ``amount`` unless what ``period`` spent plus the live
        reservations plus it would cross ``budget``. Returns (reservation id, or None when
        refused; spent; reserved). A reservation unsettled after ``ttl`` seconds lapses."""
        ...

    def settle_shared(
        self, scope: str, period: str, reservation_id: int, cost: Decimal | None
    ) -> None:
        """Free a reservation and add the call's real cost (None adds nothing) to the
        period it was reserved in, even when the reservation already lapsed."""
        ...

    def settle_once(
        self, scope: str, period: str, key: str, reservation_id: int | None, cost: Decimal
    ) -> bool:
        """:meth:`settle_shared` at most once per ``key`` (a remote batch's id), however
        often it is asked: a rerun after a kill charges nothing twice. True when this call
        added the cost; a reservation given is freed either way."""
        ...

    def spent_shared(self, scope: str, period: str) -> Decimal:
        """What every process spent in ``scope`` during ``period``."""
        ...
