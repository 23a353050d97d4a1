"""One call, prepared once and run one way: the pipeline every facade method goes through.

:meth:`GPT.prepare` does what every call needs before sending, once: route a
``provider:model`` string, take the credentials snapshot (:mod:`moodlemate.ai._credentials`),
check the context window. The :class:`Call` it returns carries that and a snapshot of the
instance's policy, limits and accounts, and runs as sync or async (the streams of
:mod:`moodlemate.ai._streaming` and the chains of :mod:`moodlemate.ai._fallbacks` drive the same
object): reserve the worst case against the budget, send under the retry policy and the
bounds (each attempt first waits for capacity under the rate limits, :mod:`moodlemate.ai._pacing`),
then price, settle, log and fire the hooks. Changing the instance's settings while a
call runs changes the next call, never this one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING

from moodlemate.ai._budget import reserve
from moodlemate.ai._credentials import explain_unsent_key
from moodlemate.ai._evolve import evolved, plain
from moodlemate.ai._network_failure import name_the_failure
from moodlemate.ai._off_loop import off_loop
from moodlemate.ai._pacing import PACED
from moodlemate.ai._plausible import (
    bounded,
    ceiling,
    cost_of,
    scrubbed,
    unknown_cost_charge,
)
from moodlemate.ai._provider import DEFAULT_IMAGE_TOKENS
from moodlemate.ai._urls import origin
from moodlemate.ai.errors import APIConnectionError, ProviderError, RateLimitError

if TYPE_CHECKING:
    from moodlemate.ai._bounds import ResponseLimits
    from moodlemate.ai._call_hooks import CallHooks
    from moodlemate.ai._ledger import Ledger, Reservation
    from moodlemate.ai._pacing import Pacer
    from moodlemate.ai._pricing import CostBreakdown, Price
    from moodlemate.ai._provider import ChatRequest, Completion, Connection, Provider
    from moodlemate.ai._rate_limit_headers import RateLimits
    from moodlemate.ai._retry import RetryPolicy
    from moodlemate.ai._shared_budget import SharedBudget
    from moodlemate.ai._spend_log import SpendLog

__all__ = ["Accounts", "Call", "RunTurn"]

log = logging.getLogger("moodlemate.ai")


@dataclass(frozen=True, slots=True)
class Accounts:
    """Where an instance's calls are counted: its ledger and budget, the budget shared with
    other processes, the spend log, the models whose missing price was already noted, and the
    pacer that spaces attempts under the servers' rate limits."""

    ledger: Ledger
    budget: Decimal | None
    shared: SharedBudget | None
    log: SpendLog | None
    unpriced: set[str]
    pacer: Pacer | None = None


@dataclass(frozen=True, slots=True)
class RunTurn:
    """Which tool run, and which of its turns, a call is: written on the call's spend-log row,
    so a run's rows can be found and added up."""

    run_id: str
    turn: int


@plain
@dataclass(frozen=True, slots=True)
class Call:
    """A prepared call: where it goes, as whom, how hard to try, where it is counted."""

    provider: Provider
    connection: Connection
    request: ChatRequest
    policy: RetryPolicy
    limits: ResponseLimits
    accounts: Accounts
    hooks: CallHooks | None = None
    """The plugins' call hooks, or None when no plugin implements them."""
    run_turn: RunTurn | None = None
    """Set by a tool run on each turn's call (see :mod:`moodlemate.ai._run`)."""

    @property
    def label(self) -> str:
        return f"{self.provider.name} {self.request.model}"

    def at(self, timeout: float) -> Connection:
        """The connection for one attempt, bounded by ``timeout``."""
        return evolved(self.connection, timeout=timeout)

    def with_request(self, request: ChatRequest) -> Call:
        return evolved(self, request=request)

    # -- running it ----------------------------------------------------------------------

    def send(self) -> Completion:
        """Send between the call hooks: reserve, retry under the bounds, account. The
        hooks' time counts against the call's deadline (:mod:`moodlemate.ai._call_hooks`)."""
        hooks = self.hooks
        if hooks is None:
            return self.send_unhooked()
        until = time.monotonic() + self.policy.deadline
        endpoint = self.connection.endpoint

        def send() -> Completion:
            return self.until(until).send_unhooked()

        return hooks.around(self.request, self.provider.name, endpoint, send, until)

    async def asend(self) -> Completion:
        """Async :meth:`send`."""
        hooks = self.hooks
        if hooks is None:
            return await self.asend_unhooked()
        until = time.monotonic() + self.policy.deadline
        endpoint = self.connection.endpoint

        async def send() -> Completion:
            return await self.until(until).asend_unhooked()

        return await hooks.aaround(self.request, self.provider.name, endpoint, send, until)

    def until(self, moment: float) -> Call:
        """This call with a deadline ending at ``moment`` (what the hooks before it left)."""
        left = moment - time.monotonic()
        if left >= self.policy.deadline:
            return self
        return replace(self, policy=replace(self.policy, deadline=max(left, 0.001)))

    def send_unhooked(self) -> Completion:
        """:meth:`send` without the hooks (a stream or a chain runs them around itself)."""
        provider, request = self.provider, self.request
        sent = 0

        def attempt(timeout: float) -> Completion:
            nonlocal sent
            self.pace(timeout)
            sent += 1
            try:
                return provider.execute(self.at(timeout), request)
            except BaseException as exc:
                self.unanswered(exc)
                raise

        reservation = self.reserve()
        try:
            completion, attempts = self.policy.run(attempt, self.label, self.limits)
        except BaseException as exc:
            self.failed(exc, reservation, sent=sent > 0)
            raise
        return self.settle(completion, attempts, reservation)

    async def asend_unhooked(self) -> Completion:
        """Async :meth:`send_unhooked`."""
        provider, request = self.provider, self.request
        sent = 0

        async def attempt(timeout: float) -> Completion:
            nonlocal sent
            await self.apace(timeout)
            sent += 1
            try:
                return await provider.aexecute(self.at(timeout), request)
            except BaseException as exc:
                self.unanswered(exc)
                raise

        reservation = await self.areserve()
        try:
            completion, attempts = await self.policy.arun(attempt, self.label, self.limits)
        except BaseException as exc:
            await self.afailed(exc, reservation, sent=sent > 0)
            raise
        return await self.asettle(completion, attempts, reservation)

    # -- the steps, shared with streams --------------------------------------------------

    def reserve(self) -> Reservation:
        """Reserve the worst-case cost against the budget, or raise BudgetExceededError."""
        accounts = self.accounts
        return reserve(
            accounts.ledger,
            accounts.budget,
            self.provider,
            self.request,
            self.connection.endpoint,
            accounts.shared,
        )

    async def areserve(self) -> Reservation:
        """:meth:`reserve` for async calls: a shared budget's store (a file, Redis) is asked
        from a store thread (:mod:`moodlemate.ai._off_loop`), so a slow store never blocks
        the event loop."""
        if self.accounts.shared is None or self.accounts.budget is None:
            return self.reserve()
        return await off_loop(self.reserve)

    @property
    def stored(self) -> bool:
        """Whether ending this call touches a store (a shared budget, a spend log)."""
        accounts = self.accounts
        return accounts.log is not None or (
            accounts.shared is not None and accounts.budget is not None
        )

    async def afailed(
        self, error: BaseException, reservation: Reservation, *, sent: bool = True
    ) -> None:
        """:meth:`failed` for async calls, its store work on a store thread."""
        if not self.stored:
            self.failed(error, reservation, sent=sent)
            return
        await off_loop(lambda: self.failed(error, reservation, sent=sent))

    async def asettle(
        self, completion: Completion, attempts: int, reservation: Reservation
    ) -> Completion:
        """:meth:`settle` for async calls, its store work on a store thread."""
        if not self.stored:
            return self.settle(completion, attempts, reservation)
        return await off_loop(self.settle, completion, attempts, reservation)

    def pace(self, timeout: float) -> None:
        """Wait for capacity under the rate limits for one attempt of ``timeout`` seconds."""
        pacer = self.accounts.pacer
        if pacer is not None:
            pacer.acquire(
                origin(self.connection.endpoint),
                self.request.model,
                self.pace_tokens(),
                time.monotonic() + timeout,
            )

    async def apace(self, timeout: float) -> None:
        """Async :meth:`pace`."""
        pacer = self.accounts.pacer
        if pacer is not None:
            await pacer.aacquire(
                origin(self.connection.endpoint),
                self.request.model,
                self.pace_tokens(),
                time.monotonic() + timeout,
            )

    def unanswered(self, error: BaseException) -> None:
        """An attempt failed: let another call probe a new model, and on a server's 429 hold
        the model for the time it asked, for every call that paces. A server that could not be
        reached is named with the cause, before the retry warning logs the error."""
        if isinstance(error, APIConnectionError):
            name_the_failure(error, self.connection.endpoint)
        pacer = self.accounts.pacer
        if pacer is None:
            return
        where, model = origin(self.connection.endpoint), self.request.model
        pacer.unanswered(where, model)
        if isinstance(error, RateLimitError) and error.retry_after and error.code != PACED:
            pacer.hold(where, model, error.retry_after, self.policy.max_server_wait)

    def opened(self, stated: RateLimits | None) -> None:
        """A stream opened: what its headers said about the limits is known now, not at its
        end (a long stream must not keep a new model's probe out for its whole length)."""
        pacer = self.accounts.pacer
        if pacer is not None:
            pacer.learn(
                origin(self.connection.endpoint),
                self.request.model,
                stated,
                self.policy.max_server_wait,
            )

    def pace_tokens(self) -> int:
        """The tokens a rate limiter counts for this request up front, as OpenAI does: the
        prompt (about four characters a token) plus ``max_tokens``."""
        messages = self.request.messages
        characters = sum(
            len(m.content) if type(m.content) is str else len(m.text) for m in messages
        )
        # An image, file or audio part counts as the default image figure: an estimate.
        parts = sum(len(m.content) for m in messages if type(m.content) is not str)
        return -(-characters // 4) + parts * DEFAULT_IMAGE_TOKENS + (self.request.max_tokens or 0)

    def failed(self, error: BaseException, reservation: Reservation, *, sent: bool = True) -> None:
        """A call that ended without a completion: release its reservation, log it (when
        anything was sent), and say in the error why no key was sent when one was withheld."""
        reservation.release()
        if self.accounts.pacer is not None:  # a probe that ended without a response to learn
            self.accounts.pacer.unanswered(origin(self.connection.endpoint), self.request.model)
        spend_log = self.accounts.log
        if spend_log is not None and sent:
            spend_log.record_call(
                provider=self.provider.name,
                endpoint=self.connection.endpoint,
                request=self.request,
                error=error,
                latency=time.monotonic() - reservation.started,
                run_id=None if self.run_turn is None else self.run_turn.run_id,
                turn=None if self.run_turn is None else self.run_turn.turn,
            )
        if isinstance(error, ProviderError):
            explain_unsent_key(error, self.connection)

    def _note_unknown_cost(self, completion: Completion, pieces: CostBreakdown | None) -> None:
        """Say once per model why a call's cost is unknown, and whether a budget counts it."""
        provider, request, endpoint = self.provider, self.request, self.connection.endpoint
        price = provider.price(request.model, endpoint)
        counted = price is not None
        tier = completion.service_tier
        if price is not None and tier not in (None, "default"):
            price = provider.tier_price(request.model, tier, endpoint)
            why = f"no {tier}-tier price known for" if price is None else ""
        else:
            why = "no price known for" if price is None else ""
        if pieces is not None and not why:
            why = f"no {' or '.join(pieces.unpriced)} price known for"
        why = why or "the server reported no usage for"
        # A local or custom server's models have no price: worth a note, not a warning on
        # every run. On the vendor's own service a missing price is a real gap.
        vendor = provider.recognises(endpoint)
        log.log(
            logging.WARNING if vendor else logging.INFO,
            "%s %s model %r: its cost is recorded as unknown (and %s)",
            why,
            provider.name,
            request.model,
            "counted against a budget at what it reserved"
            if counted
            else "not counted against a budget",
        )

    def settle(self, completion: Completion, attempts: int, reservation: Reservation) -> Completion:
        """Price ``completion`` from the catalog of the endpoint it came from (one provider
        object serves every instance and endpoint), settle the reservation, log the call."""
        provider, request, endpoint = self.provider, self.request, self.connection.endpoint
        accounts = self.accounts
        # What the server said is untrusted: its strings pass the redactor, its usage is
        # bounded by what the request could produce, its model name cannot pick the price.
        limit = ceiling(provider, request, endpoint) if completion.usage_reported else None
        completion = bounded(scrubbed(completion), limit)

        def price_of(model: str) -> Price | None:
            return provider.tier_price(model, completion.service_tier, endpoint)

        cost, priced_model, pieces = cost_of(
            completion, request.model, provider.same_model, price_of, limit
        )
        if cost is None and request.model not in accounts.unpriced:
            accounts.unpriced.add(request.model)
            self._note_unknown_cost(completion, pieces)
        charge = unknown_cost_charge(completion, cost, pieces, reservation.amount)
        reservation.settle(accounts.ledger, request.model, completion.usage, cost, charge)
        if accounts.pacer is not None:
            accounts.pacer.learn(
                origin(endpoint), request.model, completion.rate_limits, self.policy.max_server_wait
            )
        completion = evolved(
            completion,
            cost=cost,
            priced_model=priced_model,
            attempts=attempts,
            cost_breakdown=pieces,
        )
        if accounts.log is not None:
            accounts.log.record_call(
                provider=provider.name,
                endpoint=endpoint,
                request=request,
                completion=completion,
                attempts=attempts,
                latency=time.monotonic() - reservation.started,
                run_id=None if self.run_turn is None else self.run_turn.run_id,
                turn=None if self.run_turn is None else self.run_turn.turn,
                charge=charge,
            )
        return completion
