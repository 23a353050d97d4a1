"""Calls the tool-run hooks (``before_tool_run``, ``after_tool_call``, ``after_tool_run``)
around one run, so a plugin (the OpenTelemetry one) can see a run as a whole, and, for a
streamed run, ``resume_tool_run``/``pause_tool_run`` around each step the caller drives, so
what a plugin makes current for the run (a span) never leaks into the caller's code between
events.

Only built when some plugin implements one of them: a run with no such plugin pays one check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy
    from moodlemate.ai._provider import ChatRequest

__all__ = ["RunHooks"]


class RunHooks:
    __slots__ = ("_after_call", "_after_run", "_before_run", "_pause", "_resume")

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._before_run = pm.hook.before_tool_run
        self._after_call = pm.hook.after_tool_call
        self._after_run = pm.hook.after_tool_run
        self._resume = pm.hook.resume_tool_run
        self._pause = pm.hook.pause_tool_run

    @classmethod
    def of(cls, pm: pluggy.PluginManager) -> RunHooks | None:
        """The run hooks of ``pm``, or None when no plugin implements any of them."""
        hooks = cls(pm)
        callers = (hooks._before_run, hooks._after_call, hooks._after_run, hooks._resume)
        if any(h.get_hookimpls() for h in callers):
            return hooks
        return None

    def started(self, run_id: str, request: ChatRequest, provider: str, endpoint: str) -> None:
        self._before_run(run_id=run_id, request=request, provider=provider, endpoint=endpoint)

    def tool_called(self, run_id: str, result: Any, started: float) -> None:
        self._after_call(run_id=run_id, result=result, started=started)

    def ended(self, run_id: str, run: Any, error: BaseException | None) -> None:
        self._after_run(run_id=run_id, run=run, error=error)

    def resumed(self, run_id: str) -> None:
        self._resume(run_id=run_id)

    def paused(self, run_id: str) -> None:
        self._pause(run_id=run_id)
