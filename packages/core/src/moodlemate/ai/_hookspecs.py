"""The pluggy contract between the core and plugins.

A plugin is a module (or object) with ``@hookimpl`` functions, found through the
``moodlemate.ai`` entry-point group or passed to :func:`moodlemate.ai.register`. A hook
implementation may take any subset of its spec's arguments, by name. An implementation
whose name matches no spec here is rejected when the plugin loads (pluggy's
``check_pending``), so a typo cannot silently do nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from moodlemate.ai._provider import ChatRequest, Completion, Provider

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "moodlemate.ai"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_providers(register: Callable[[Provider], None]) -> None:
    """Call ``register(provider)`` once for each provider this plugin offers."""


@hookspec
def register_tools() -> Iterable[Any] | None:
    """Return the tools this plugin offers (plain functions, :class:`~moodlemate.ai.Tool`
    values, or ``(definition, function)`` pairs), each named by its tool name: the CLI's
    ``chat -T NAME`` picks them, and :meth:`PluginRegistry.tools` lists them. Called only
    when tools are asked for, never on a plain call."""


@hookspec
def before_request(request: ChatRequest, provider: str, endpoint: str) -> None:
    """Called once per call, before the first attempt is sent (for logging and metrics).

    Never receives the API key. An exception raised here propagates to the caller and the
    request is not sent, so a policy plugin can refuse a request. Its time counts against the
    call's deadline: returning past it, the call raises HookTimeoutError, unsent.
    """


@hookspec
def after_response(
    request: ChatRequest,
    provider: str,
    endpoint: str,
    completion: Completion | None,
    error: BaseException | None,
    attempts: int,
    elapsed: float,
) -> None:
    """Called once per call when it ends: ``completion`` (with usage and cost) on success,
    else the ``error`` the caller is about to receive. A stream closed early (``close()``,
    leaving its ``with`` block) ends with ``GeneratorExit``, a cancelled task with
    ``CancelledError``: an early close, not a failure (the spend log's ``cancelled``).
    ``attempts`` counts retries included; ``elapsed`` is in seconds, waits included. Never
    receives the API key.

    It observes and cannot change the outcome: the answer is already paid for and recorded,
    so an exception raised here, or returning past the call's deadline, is logged as a
    warning and the caller gets the answer all the same."""


@hookspec
def before_tool_run(run_id: str, request: ChatRequest, provider: str, endpoint: str) -> None:
    """Called when a tool run (``GPT.run``/``arun``) starts, before its first model turn, in
    the thread or task that runs it; each model turn is then a call with its own
    ``before_request``/``after_response``. Never receives the API key."""


@hookspec
def after_tool_call(run_id: str, result: Any, started: float) -> None:
    """Called once per tool call of a run, when the calls of its turn have finished (also
    when a tool's error ended the run: for each call that ended, ``cancelled`` included):
    ``result`` is the :class:`~moodlemate.ai._tool_calls.ToolResult` (the call, the output
    sent to the model, the error kind, the seconds it ran) and ``started`` the wall-clock
    time (``time.time()``) the turn's tools began."""


@hookspec
def after_tool_run(run_id: str, run: Any, error: BaseException | None) -> None:
    """Called once when a tool run ends: ``run`` is the :class:`~moodlemate.ai._run.Run`
    (so far, when it failed), ``error`` what the caller is about to receive (a RunLimitError,
    a call's error) or None. A streamed run closed early (``close()``, a ``break`` out of
    the loop, a cancelled task) ends with ``GeneratorExit`` or ``CancelledError``: an early
    close, not a failure."""


@hookspec
def resume_tool_run(run_id: str) -> None:
    """Called when the caller resumes a streamed run (``run_stream``/``arun_stream``: each
    ``next()``, and its close), before the run's code runs, in the caller's thread or task;
    the first call comes before ``before_tool_run``. With :func:`pause_tool_run`, lets a
    plugin make something current for the run's code only (OpenTelemetry makes the run's
    span current here), so it never leaks into the caller's code between events."""


@hookspec
def pause_tool_run(run_id: str) -> None:
    """Called when a streamed run hands an event to the caller (or ends), in the same thread
    or task as the :func:`resume_tool_run` it pairs with: undo what that did."""
