"""Fallbacks: when one model's retries end in an outage, the call goes on to the next.

An instance's chain is its call's model, then each entry of ``GPT.fallbacks`` (model strings,
``provider:model`` routes included). Each entry is prepared as a call of its own: its own
provider, endpoint and key rules (a routed entry never carries the instance's key), its own
budget and context-window checks, its own retry policy run and its own ledger line at its own
model's price.

When the next entry is tried (:func:`falls_back`):

- the entry's retries ended in an outage: one of ``fallback_on`` (default :data:`OUTAGES`:
  5xx, timeouts, connection errors, rate limits that outlasted the policy, malformed bodies);
- the prompt does not fit the entry's context window (another model's may be larger);
- quota or credits ran out, only when the next entry goes to a different provider.

Never on errors another model would repeat: a bad request, an invalid or missing key for the
entry, a budget reached, input validation. Those raise at once, as without fallbacks. A stream
falls back only before its first delta; after it, text has reached the caller.

The served :class:`~moodlemate.ai._provider.Completion` names its entry (``served_by``) and what
failed before it (``failed_before``); an error that ends the chain carries ``failed_before`` too.
The call hooks see one call: before the first entry sent, after the chain ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from moodlemate.ai._provider import FailedEntry
from moodlemate.ai.errors import (
    APIConnectionError,
    ConflictError,
    ContextWindowExceededError,
    MalformedResponseError,
    MoodlemateError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    ValidationError,
)

if TYPE_CHECKING:
    from moodlemate.ai._call import Call
    from moodlemate.ai._call_hooks import CallHooks
    from moodlemate.ai._provider import ChatRequest, Completion, Provider

__all__ = [
    "OUTAGES",
    "FailedEntry",
    "FallbackChain",
    "check_fallback_on",
    "check_fallbacks",
    "falls_back",
]

log = logging.getLogger("moodlemate.ai")

OUTAGES: tuple[type[ProviderError], ...] = (
    ServerError,
    APIConnectionError,  # APITimeoutError too
    RateLimitError,
    MalformedResponseError,
    ConflictError,
)
"""What ends an entry's retries and moves the call on to the next entry, by default."""

MAX_FALLBACKS = 16
"""More entries than any sane chain: a longer list is a mistake (a file's lines pasted)."""


def check_fallback_on(
    errors: type[BaseException] | Iterable[type[BaseException]] | None,
) -> tuple[type[BaseException], ...] | None:
    """The validated ``GPT.fallback_on``: exception classes, or None for :data:`OUTAGES`."""
    if errors is None:
        return None
    checked: tuple[object, ...] = (errors,) if isinstance(errors, type) else tuple(errors)
    classes: list[type[BaseException]] = []
    for error in checked:
        if not (isinstance(error, type) and issubclass(error, BaseException)):
            raise ValidationError(f"fallback_on takes exception classes, not {error!r}")
        classes.append(error)
    return tuple(classes)


def check_fallbacks(models: Iterable[str] | None) -> tuple[str, ...]:
    """The validated entries: non-empty model strings, at most :data:`MAX_FALLBACKS`."""
    if models is None:
        return ()
    if isinstance(models, str):
        raise ValidationError("fallbacks must be a list of model names, not one string")
    from moodlemate.ai._validation import check_model

    entries = tuple(models)
    if len(entries) > MAX_FALLBACKS:
        raise ValidationError(f"at most {MAX_FALLBACKS} fallbacks, not {len(entries)}")
    return tuple(check_model(entry) for entry in entries)


def falls_back(
    exc: BaseException,
    failed: Provider | None,
    following: Provider | None,
    on: Sequence[type[BaseException]] = OUTAGES,
) -> bool:
    """Whether ``exc``, ending an entry at ``failed``, moves the call to the next entry (at
    ``following``). Quota is per account: only another provider can help."""
    if isinstance(exc, QuotaExceededError):
        return failed is None or following is None or following.name != failed.name
    if isinstance(exc, ContextWindowExceededError):
        return True
    return isinstance(exc, tuple(on))


class FallbackChain:
    """One call over its entries: prepare each in turn, send, stop at the first that serves."""

    def __init__(
        self,
        request: ChatRequest,
        fallbacks: Sequence[str],
        *,
        prepare: Callable[[ChatRequest], Call],
        route: Callable[[str], Provider],
        hooks: CallHooks | None,
        on: Sequence[type[BaseException]] | None = None,
    ) -> None:
        self.request = request
        self.models = (request.model, *fallbacks)
        self._prepare = prepare
        self._route = route
        self._hooks = hooks
        self._on = OUTAGES if on is None else tuple(on)
        self.failures: list[FailedEntry] = []
        self._started: float | None = None
        self._first: Call | None = None
        for model in fallbacks:  # an entry naming a provider that is not installed: now,
            route(model)  # before anything is sent, not after the first outage

    # -- one entry -----------------------------------------------------------------------

    def prepare(self, index: int) -> Call:
        """Entry ``index`` as a call of its own; the hooks start with the first one ready."""
        call = self._prepare(replace(self.request, model=self.models[index]))
        if self._first is None:
            self._first = call
            if self._hooks is not None:
                self._started = self._hooks.before(
                    call.request, call.provider.name, call.connection.endpoint
                )
        return call

    def failed(
        self, index: int, exc: BaseException, provider: Provider | None, began: float
    ) -> int:
        """Record entry ``index``'s failure and return the entry to try next; or raise
        ``exc`` when the chain ends with it."""
        following = self._next(index, exc, provider)
        if following is None or not isinstance(exc, MoodlemateError):
            if isinstance(exc, MoodlemateError):
                exc.failed_before = tuple(self.failures)
            self.ended(None, exc)
            raise exc
        model = self.models[index]
        name = provider.name if provider is not None else self._provider_name(model)
        entry = FailedEntry(
            model=model,
            provider=name,
            error=type(exc).__name__,
            message=exc.message,
            status_code=getattr(exc, "status_code", None),
            attempts=exc.attempts if isinstance(exc, ProviderError) else 0,
            elapsed=time.monotonic() - began,
        )
        self.failures.append(entry)
        for skipped in self.models[index + 1 : following]:  # the same account: out of quota too
            note = f"not tried: {name} is out of quota"
            self.failures.append(FailedEntry(skipped, name, entry.error, note))
        log.warning(
            "%s %s failed (%s: %s); falling back to %s",
            name,
            model,
            entry.error,
            entry.message,
            self.models[following],
        )
        return following

    def _next(self, index: int, exc: BaseException, provider: Provider | None) -> int | None:
        """The entry ``exc`` moves the call on to, or None when it ends the chain."""
        for candidate in range(index + 1, len(self.models)):
            following = self._following(candidate)
            quota = isinstance(exc, QuotaExceededError)
            if quota and provider and following and following.name == provider.name:
                continue
            return candidate if falls_back(exc, provider, following, self._on) else None
        return None

    def served(self, index: int, completion: Completion) -> Completion:
        completion = replace(
            completion, served_by=self.models[index], failed_before=tuple(self.failures)
        )
        self.ended(completion, None)
        return completion

    def ended(self, completion: Completion | None, error: BaseException | None) -> None:
        """The after hook, once, for the entry the before hook saw."""
        if self._hooks is None or self._first is None or self._started is None:
            return
        first = self._first
        started, self._started = self._started, None
        self._hooks.after(
            first.request,
            first.provider.name,
            first.connection.endpoint,
            started,
            completion,
            error,
        )

    def _following(self, index: int) -> Provider | None:
        try:
            return self._route(self.models[index])
        except MoodlemateError:
            return None  # the next entry reports its own problem when prepared

    def _provider_name(self, model: str) -> str:
        try:
            return self._route(model).name
        except MoodlemateError:
            return model.partition(":")[0]

    # -- the whole call ------------------------------------------------------------------

    def send(self, send: Callable[[Call], Completion]) -> Completion:
        """Sync: each entry through ``send`` (its retried, accounted send, without the hooks:
        they run once around the whole chain)."""
        index = 0
        while True:
            began = time.monotonic()
            provider = None
            try:
                call = self.prepare(index)
                provider = call.provider
                completion = send(call)
            except Exception as exc:
                index = self.failed(index, exc, provider, began)
                continue
            return self.served(index, completion)

    async def asend(self, send: Callable[[Call], Awaitable[Completion]]) -> Completion:
        """Async :meth:`send`."""
        index = 0
        while True:
            began = time.monotonic()
            provider = None
            try:
                call = self.prepare(index)
                provider = call.provider
                completion = await send(call)
            except Exception as exc:
                index = self.failed(index, exc, provider, began)
                continue
            return self.served(index, completion)
