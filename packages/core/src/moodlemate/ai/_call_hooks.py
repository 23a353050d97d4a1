"""Calls the ``before_request`` / ``after_response`` hooks around one facade call.

Only built when some plugin implements one of them, so a call with no such plugin pays
nothing but one attribute check. The hooks see the request, the provider's name and the
endpoint; the key stays in the :class:`~moodlemate.ai._provider.Connection`, which they never get.

The rules, so a plugin can neither lose a paid answer nor stretch a call unseen:

- ``before_request`` may refuse a request: what it raises reaches the caller, unsent.
- ``after_response`` only observes. By the time it runs the answer is paid for and already
  in the ledger and the spend log; what it raises is logged as a warning and the caller gets
  the answer (or the call's own error) all the same.
- Their time counts against the call's deadline (``until``: ``RetryPolicy.deadline`` from
  the call's start); the request gets only what ``before_request`` left of it. Hooks run in
  the caller's thread and context (OpenTelemetry's spans and retry events depend on that),
  where Python cannot stop a function half-way, so the deadline is checked when a hook
  returns: a ``before_request`` that returns past it raises
  :class:`~moodlemate.ai.errors.HookTimeoutError` and nothing is sent; an ``after_response``
  that returns past it is logged as a warning, and the answer is returned. A hook that
  never returns hangs its call: hand slow work (exports, uploads) to a queue or a thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from moodlemate.ai._secrets import redact
from moodlemate.ai.errors import HookTimeoutError, ProviderError

if TYPE_CHECKING:
    import pluggy
    from moodlemate.ai._provider import ChatRequest, Completion

__all__ = ["CallHooks"]

log = logging.getLogger("moodlemate.ai")


class CallHooks:
    __slots__ = ("_after", "_before")

    def __init__(self, before: pluggy.HookCaller, after: pluggy.HookCaller) -> None:
        self._before = before
        self._after = after

    @classmethod
    def of(cls, pm: pluggy.PluginManager) -> CallHooks | None:
        """The hooks of ``pm``, or None when no plugin implements either."""
        before, after = pm.hook.before_request, pm.hook.after_response
        if not before.get_hookimpls() and not after.get_hookimpls():
            return None
        return cls(before, after)

    def around(
        self,
        request: ChatRequest,
        provider: str,
        endpoint: str,
        send: Callable[[], Completion],
        until: float | None = None,
    ) -> Completion:
        """Run ``send()`` between the two hooks; its result or error passes through unchanged."""
        started = self.before(request, provider, endpoint, until)
        try:
            completion = send()
        except BaseException as exc:  # a failure, or a cancellation (closed early)
            self.after(request, provider, endpoint, started, None, exc, until)
            raise
        self.after(request, provider, endpoint, started, completion, None, until)
        return completion

    async def aaround(
        self,
        request: ChatRequest,
        provider: str,
        endpoint: str,
        send: Callable[[], Awaitable[Completion]],
        until: float | None = None,
    ) -> Completion:
        """Async :meth:`around`; the hooks themselves are plain functions."""
        started = self.before(request, provider, endpoint, until)
        try:
            completion = await send()
        except BaseException as exc:  # a failure, or a cancelled task (closed early)
            self.after(request, provider, endpoint, started, None, exc, until)
            raise
        self.after(request, provider, endpoint, started, completion, None, until)
        return completion

    def before(
        self, request: ChatRequest, provider: str, endpoint: str, until: float | None = None
    ) -> float:
        """Run ``before_request``; returns the start time :meth:`after` measures from."""
        self._before(request=request, provider=provider, endpoint=endpoint)
        now = time.monotonic()
        if until is not None and now >= until:
            raise HookTimeoutError(
                "a plugin's before_request hook ran past the call's deadline "
                "(RetryPolicy.deadline): the request was not sent"
            )
        return now

    def after(
        self,
        request: ChatRequest,
        provider: str,
        endpoint: str,
        started: float,
        completion: Completion | None,
        error: BaseException | None,
        until: float | None = None,
    ) -> None:
        """Run ``after_response``; never raises (see the module docstring)."""
        if completion is not None:
            attempts = completion.attempts
        else:
            attempts = error.attempts if isinstance(error, ProviderError) else 1
        began = time.monotonic()
        try:
            self._after(
                request=request,
                provider=provider,
                endpoint=endpoint,
                completion=completion,
                error=error,
                attempts=attempts,
                elapsed=time.monotonic() - started,
            )
        except Exception as exc:
            log.warning(
                "an after_response hook failed (%s: %s); the call's result stands",
                type(exc).__name__,
                redact(str(exc)),
            )
        if until is not None and began <= until < time.monotonic():
            log.warning(
                "an after_response hook ran past the call's deadline (RetryPolicy.deadline); "
                "the call's result stands, but keep hooks quick: hand slow work to a queue"
            )
