"""Calls the ``before_request`` / ``after_response`` hooks around one facade call.

Only built when some plugin implements one of them, so a call with no such plugin pays
nothing but one attribute check. The hooks see the request, the provider's name and the
endpoint; the key stays in the :class:`~moodlemate.ai._provider.Connection`, which they never get.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from moodlemate.ai.errors import ProviderError

if TYPE_CHECKING:
    import pluggy
    from moodlemate.ai._provider import ChatRequest, Completion

__all__ = ["CallHooks"]


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
        self, request: ChatRequest, provider: str, endpoint: str, send: Callable[[], Completion]
    ) -> Completion:
        """Run ``send()`` between the two hooks; its result or error passes through unchanged."""
        started = self.before(request, provider, endpoint)
        try:
            completion = send()
        except Exception as exc:
            self.after(request, provider, endpoint, started, None, exc)
            raise
        self.after(request, provider, endpoint, started, completion, None)
        return completion

    async def aaround(
        self,
        request: ChatRequest,
        provider: str,
        endpoint: str,
        send: Callable[[], Awaitable[Completion]],
    ) -> Completion:
        """Async :meth:`around`; the hooks themselves are plain functions."""
        started = self.before(request, provider, endpoint)
        try:
            completion = await send()
        except Exception as exc:
            self.after(request, provider, endpoint, started, None, exc)
            raise
        self.after(request, provider, endpoint, started, completion, None)
        return completion

    def before(self, request: ChatRequest, provider: str, endpoint: str) -> float:
        """Run ``before_request``; returns the start time :meth:`after` measures from."""
        self._before(request=request, provider=provider, endpoint=endpoint)
        return time.monotonic()

    def after(
        self,
        request: ChatRequest,
        provider: str,
        endpoint: str,
        started: float,
        completion: Completion | None,
        error: Exception | None,
    ) -> None:
        if completion is not None:
            attempts = completion.attempts
        else:
            attempts = error.attempts if isinstance(error, ProviderError) else 1
        self._after(
            request=request,
            provider=provider,
            endpoint=endpoint,
            completion=completion,
            error=error,
            attempts=attempts,
            elapsed=time.monotonic() - started,
        )
