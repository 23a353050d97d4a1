"""The budget of remote batches: a part's worst case is held before it is sent, and its real
cost, read from its output file, is settled exactly once.

A remote batch is paid for when the vendor runs it, hours after it was submitted, often by
another run of the program. So the hold outlives the process: before a part is uploaded,
its worst case at batch prices (every request's counted prompt, a typed answer's schema
included, plus its ``max_tokens``, as for a live call) is reserved against the budget (the
shared scope's store when there is one, for :data:`BATCH_RESERVATION_TTL` seconds; else the
instance's ledger), and what was reserved, with the store's reservation id, goes into the
part's state before anything is sent. A part that cannot fit raises BudgetExceededError and
is not sent.

When the part's results are collected their cost (each answered request at batch prices) is
settled: the store frees the reservation and adds the cost in one step, keyed by the batch
id, so a rerun after a kill at any instant adds nothing twice; the part's state then records
``settled``. A store that cannot be reached at that moment leaves the part unsettled with
its cost recorded, and every later run tries again.
"""

from __future__ import annotations

import logging
import weakref
from decimal import Decimal
from typing import TYPE_CHECKING

from moodlemate.ai._budget import worst_case_cost
from moodlemate.ai._shared_budget import SharedReservation
from moodlemate.ai.errors import BudgetExceededError, BudgetStoreError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from moodlemate.ai._gpt import GPT
    from moodlemate.ai._ledger import Ledger, Reservation
    from moodlemate.ai._provider import ChatRequest, Provider
    from moodlemate.ai._remote_batches import RemoteBatches
    from moodlemate.ai.batch.remote_state import Part

__all__ = ["BATCH_RESERVATION_TTL", "PartBudget"]

log = logging.getLogger("moodlemate.ai")

BATCH_RESERVATION_TTL = 7 * 86400.0
"""Seconds a part's reservation holds in a shared store: the 24 h completion window, and
days to spare for the run that collects it."""

_held: weakref.WeakKeyDictionary[Ledger, dict[str, Reservation]] = weakref.WeakKeyDictionary()
"""Parts held in an instance's ledger, by part token: one hold per part however many runs."""


class PartBudget:
    """Reserves and settles the parts of one remote batch run against ``gpt``'s budget."""

    def __init__(self, gpt: GPT) -> None:
        self.gpt = gpt

    @property
    def active(self) -> bool:
        return self.gpt.budget is not None

    def worst_case(
        self,
        provider: Provider,
        api: RemoteBatches,
        endpoint: str | None,
        requests: Iterable[ChatRequest],
    ) -> Decimal | None:
        """The most the requests can cost at batch prices (the standard price, an upper
        bound, where no batch price is known); None when neither is known."""
        total: Decimal | None = None
        for request in requests:
            price = api.price(request.model) or provider.price(request.model, endpoint)
            cost = worst_case_cost(provider, request, endpoint, price)
            if cost is not None:
                total = cost if total is None else total + cost
        return total

    def reserve(self, part: Part, amount: Decimal | None) -> None:
        """Hold ``amount`` for ``part`` and note it in the part (the caller saves the state
        before sending), or raise BudgetExceededError."""
        budget = self.gpt.budget
        if budget is None:
            return
        if amount is None:
            log.warning(
                "remote batch of %s: no price known, so its cost is not counted against the budget",
                part.model,
            )
            amount = Decimal(0)
        shared = self.gpt.shared_budget
        ledger = self.gpt.ledger
        try:
            if shared is not None:
                held = shared.reserve(amount, budget, ledger, ttl=BATCH_RESERVATION_TTL)
                if isinstance(held, SharedReservation):
                    part.reservation, part.period = held.id, held.period
                else:  # the store failed open: the instance's own budget stands in
                    part.period = shared.period()
                    _held.setdefault(ledger, {})[part.token] = held
            else:
                _held.setdefault(ledger, {})[part.token] = ledger.reserve(amount, budget)
        except BudgetStoreError:
            raise
        except BudgetExceededError as exc:
            raise BudgetExceededError(
                f"a remote batch of {len(part.ids)} requests to {part.model} may cost up to "
                f"${amount.normalize():f} at batch prices: {exc.message.split(': call not')[0]}"
                "; nothing of it was submitted"
            ) from None
        part.reserved = str(amount)

    def resume(self, part: Part) -> None:
        """A part an earlier run submitted and held in its own ledger: hold it in this
        instance's ledger too until it is settled (a store's hold outlives the run itself)."""
        if part.reserved is None or part.reservation is not None or part.settled:
            return
        holds = _held.setdefault(self.gpt.ledger, {})
        if part.token not in holds:
            holds[part.token] = self.gpt.ledger.hold(Decimal(part.reserved))

    def settle(self, part: Part, cost: Decimal) -> None:
        """Charge ``cost`` (the part's answers at batch prices) once; marks the part
        ``settled`` unless the store cannot be reached (a later run settles it then)."""
        if part.settled:
            return
        shared = self.gpt.shared_budget
        if shared is not None and (self.active or part.reservation is not None):
            key = f"batch:{part.batch_id or part.token}"
            try:
                shared.settle_once(part.period or shared.period(), key, part.reservation, cost)
            except BudgetStoreError as exc:
                log.warning("%s; the next run settles it", exc.message.split(": call not")[0])
                return
        hold = _held.get(self.gpt.ledger, {}).pop(part.token, None)
        if hold is not None:
            hold.release()  # each answer is already in the ledger at its real cost
        part.settled = True
