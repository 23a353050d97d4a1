"""A budget shared by every process that names the same scope in the same store.

``GPT(budget="20", budget_scope="team-a", log="~/spend.db")`` shares one budget among the
processes of one machine, in the spend log's SQLite file; ``redis="redis://host:6379/0"``
in place of (or beside) the log shares it among every machine that reaches that server
(:mod:`moodlemate.ai._redis_budget`). The reservations of :mod:`moodlemate.ai._budget` move
into the store: a call's worst case is reserved atomically (so no two processes both take
the last dollar), and settled with its real cost, or released, when it ends. N processes
together spend at most the budget plus, per call in flight, what it costs beyond its
reservation.

``budget_window`` ``"day"`` or ``"month"`` (UTC) starts the count afresh each period; None
counts for ever. A reservation nobody settled within :data:`RESERVATION_TTL` seconds (its
process was killed mid-call, or could not reach the store) lapses into spent, at its full,
worst-case amount: the call may have cost that. A settle that fails (the store is down or
restarting) is kept and replayed, before this process's next reserve, after its next settle,
and at its exit; its reservation meanwhile holds (and lapses into spent). The store failing
closes the budget: the call is refused
with :class:`~moodlemate.ai.errors.BudgetStoreError`, never sent unaccounted, unless
``budget_fail_open`` is set, and then the instance's own budget stands in, with a warning,
for :data:`RETRY_STORE_AFTER` seconds before the store is asked again.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from moodlemate.ai._flags import parse_flag
from moodlemate.ai._ledger import Reservation, refusal
from moodlemate.ai.errors import BudgetStoreError, ValidationError

if TYPE_CHECKING:
    from moodlemate.ai._budget_store import BudgetStore
    from moodlemate.ai._ledger import Ledger
    from moodlemate.ai._usage import Usage

__all__ = ["RESERVATION_TTL", "WINDOWS", "SharedBudget"]

log = logging.getLogger("moodlemate.ai._shared_budget")

WINDOWS = ("day", "month")
RESERVATION_TTL = 3600.0
"""Seconds after which a reservation nobody settled (its process died) counts as spent, at
its full amount."""
_WARN_EVERY = 60.0
"""Seconds between two warnings that a failed-open budget is standing in for the store."""
_REPLAY_AFTER = 1.0
"""Seconds after the store failed during which this process does not ask it again: a
reserve is refused (or fails open) and a settle is kept, at once, instead of each waiting
out its own timeout (so a queue of calls behind a dead store drains fast)."""
RETRY_STORE_AFTER = 10.0
"""Seconds a failed-open budget leaves a failed store alone before asking it again (so a
frozen Redis costs one timeout per period, not one per call)."""


class SharedBudget:
    """One scope's budget in one store."""

    def __init__(
        self,
        store: BudgetStore,
        scope: str,
        window: str | None = None,
        *,
        fail_open: bool | str = False,
    ) -> None:
        if not isinstance(scope, str) or not scope.strip():
            raise ValidationError("budget_scope must be a non-empty name")
        if window is not None and window not in WINDOWS:
            raise ValidationError(f"budget_window must be 'day', 'month' or None, not {window!r}")
        self.store = store
        self.scope = scope
        self.window = window
        self.fail_open = parse_flag(fail_open, "fail_open")
        self._warned = -_WARN_EVERY
        self._store_down_until = 0.0
        self._pending: list[tuple[str, int, Decimal | None]] = []
        """Settles the store refused (period, reservation id, cost), replayed later."""
        self._pending_lock = threading.Lock()
        self._replaying = threading.Lock()
        self._replay_at_exit = False
        self._store_failed = -_REPLAY_AFTER

    def __repr__(self) -> str:
        return (
            f"SharedBudget({self.scope!r}, window={self.window!r}, store={self.store!r}, "
            f"fail_open={self.fail_open})"
        )

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
        try:
            return self.store.spent_shared(self.scope, self.period())
        except Exception as exc:
            raise self._unusable(exc) from None

    def reserve(
        self,
        amount: Decimal | None,
        budget: Decimal,
        ledger: Ledger,
        ttl: float = RESERVATION_TTL,
    ) -> Reservation:
        """Hold ``amount`` against the scope's budget for at most ``ttl`` seconds, or raise
        BudgetExceededError (BudgetStoreError when the store fails and the budget fails
        closed)."""
        amount = amount or Decimal(0)
        if self.fail_open and time.monotonic() < self._store_down_until:
            return ledger.reserve(amount, budget)
        self.replay()
        period = self.period()
        try:
            if self._resting():
                raise _Resting(f"it failed less than {_REPLAY_AFTER:g}s ago")
            held, spent, reserved = self.store.reserve_shared(
                self.scope, period, amount, budget, ttl
            )
        except Exception as exc:  # any store failure: closed, or the local budget stands in
            if not isinstance(exc, _Resting):
                self._store_failed = time.monotonic()
            error = self._unusable(exc)
            if not self.fail_open:
                raise error from None
            self._store_down_until = time.monotonic() + RETRY_STORE_AFTER
            self._warn_open(error)
            return ledger.reserve(amount, budget)
        if held is None:
            raise refusal(budget, spent, reserved, amount)
        return SharedReservation(self, period, held, amount)

    def settle_once(self, period: str, key: str, reservation_id: int | None, cost: Decimal) -> bool:
        """Add ``cost`` to ``period`` once per ``key`` and free the reservation (see
        :meth:`BudgetStore.settle_once`); BudgetStoreError when the store cannot be used."""
        try:
            return self.store.settle_once(self.scope, period, key, reservation_id, cost)
        except Exception as exc:
            raise self._unusable(exc) from None

    @property
    def pending(self) -> int:
        """Settles the store refused that this process still has to replay."""
        with self._pending_lock:
            return len(self._pending)

    def settle(self, period: str, reservation_id: int, cost: Decimal | None) -> None:
        """Settle a reservation in the store; when the store fails, keep it for
        :meth:`replay` (the reservation meanwhile holds, then counts as spent)."""
        try:
            if self._resting():
                raise _Resting(f"it failed less than {_REPLAY_AFTER:g}s ago")
            self.store.settle_shared(self.scope, period, reservation_id, cost)
        except Exception as exc:
            self._defer(period, reservation_id, cost, exc)
            return
        self.replay()

    def _resting(self) -> bool:
        """Whether the store failed so recently that it is left alone (:data:`_REPLAY_AFTER`)."""
        return time.monotonic() - self._store_failed < _REPLAY_AFTER

    def replay(self, *, now: bool = False) -> None:
        """Try the settles the store refused again, oldest first, until one fails (not
        within :data:`_REPLAY_AFTER` seconds of a failure, unless ``now``)."""
        if not self._pending:
            return
        if not now and self._resting():
            return
        if not self._replaying.acquire(blocking=False):
            return
        try:
            while True:
                with self._pending_lock:
                    if not self._pending:
                        return
                    period, reservation_id, cost = self._pending[0]
                try:
                    self.store.settle_shared(self.scope, period, reservation_id, cost)
                except Exception:
                    self._store_failed = time.monotonic()
                    return  # the store is still down: next time
                with self._pending_lock:
                    self._pending.pop(0)
        finally:
            self._replaying.release()

    def _defer(
        self, period: str, reservation_id: int, cost: Decimal | None, exc: Exception
    ) -> None:
        if not isinstance(exc, _Resting):
            self._store_failed = time.monotonic()
        with self._pending_lock:
            self._pending.append((period, reservation_id, cost))
            first_exit_hook = not self._replay_at_exit
            self._replay_at_exit = True
        if first_exit_hook:
            import atexit

            atexit.register(self.replay, now=True)
        log.warning(
            "shared budget %r: could not settle a call in %s (%s: %s); the settle is kept and "
            "replayed when the store answers again (its reservation holds meanwhile)%s",
            self.scope,
            self.store.where,
            type(exc).__name__,
            exc,
            "" if cost is None else f", with its cost (${cost})",
        )

    def _unusable(self, exc: Exception) -> BudgetStoreError:
        why = str(exc) if isinstance(exc, _Resting) else f"{type(exc).__name__}: {exc}"
        return BudgetStoreError(
            f"shared budget {self.scope!r}: its store {self.store.where} cannot be used "
            f"({why}): call not sent"
        )

    def _warn_open(self, error: BudgetStoreError) -> None:
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning(
                "%s; budget_fail_open is set, so this process's own budget stands in until "
                "the store answers again",
                error.message.removesuffix(": call not sent"),
            )


class _Resting(ConnectionError):
    """The store failed a moment ago and is left alone for now (not a new failure)."""


class SharedReservation(Reservation):
    """A reservation held in the store: settling records the call locally and adds its real
    cost to the scope; releasing frees it. Store failures are logged, never raised: the
    budget keeps the settle and replays it (:meth:`SharedBudget.replay`)."""

    __slots__ = ("_budget", "_id", "_period")

    def __init__(
        self, budget: SharedBudget, period: str, reservation_id: int, amount: Decimal
    ) -> None:
        super().__init__(None, amount)
        self._budget = budget
        self._period = period
        self._id: int | None = reservation_id

    @property
    def id(self) -> int | None:
        """The store's id of the reservation (None once settled or released)."""
        return self._id

    @property
    def period(self) -> str:
        return self._period

    def settle(
        self,
        ledger: Ledger,
        model: str,
        usage: Usage,
        cost: Decimal | None,
        charge: Decimal | None = None,
    ) -> None:
        ledger._record(model, usage, cost, self, charge)
        self._finish(cost if cost is not None else charge)

    def release(self) -> None:
        self._finish(None)

    def _finish(self, cost: Decimal | None) -> None:
        reservation_id, self._id = self._id, None
        if reservation_id is not None:
            self._budget.settle(self._period, reservation_id, cost)
