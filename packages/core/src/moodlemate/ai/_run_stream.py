"""A tool run as it happens: ``for event in gpt.run_stream(...)`` (see
:mod:`moodlemate.ai._run_events` for the events and their order).

The run is the one of :meth:`GPT.run` (:mod:`moodlemate.ai._run`), each model turn streamed;
its bounds, accounting and errors are the same, and once the iteration has ended ``.run`` is
the :class:`~moodlemate.ai.Run` that ``run`` would have returned. Nothing is sent before the
first ``next()``. Closing it early (``close()``, leaving a ``with`` block, ``aclose()``, a
cancelled task) closes the turn's stream (its reservation released, its spend-log row written),
starts no further tool call, and ends the tool calls running: async ones are cancelled, sync
ones are waited for, each within its timeout. Each step the caller drives (a ``next()``, the
close) runs between the ``resume_tool_run``/``pause_tool_run`` hooks, so what a plugin makes
current for the run (its OpenTelemetry span) is current for the run's code only, never for
the caller's code between events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from moodlemate.ai._run import RunLoop, arun_events, run_events

if TYPE_CHECKING:
    from moodlemate.ai._run_events import RunEvent
    from moodlemate.ai._run_types import Run

__all__ = ["AsyncRunStream", "RunStream"]

T = TypeVar("T")


def _step(loop: RunLoop, step: Callable[[], T]) -> T:
    """``step()`` between the resume and pause hooks (when a plugin has them)."""
    hooks = loop.hooks
    if hooks is None:
        return step()
    hooks.resumed(loop.id)
    try:
        return step()
    finally:
        hooks.paused(loop.id)


async def _astep(loop: RunLoop, step: Callable[[], Awaitable[T]]) -> T:
    """Async :func:`_step`: both hooks in the caller's task, around the awaited step."""
    hooks = loop.hooks
    if hooks is None:
        return await step()
    hooks.resumed(loop.id)
    try:
        return await step()
    finally:
        hooks.paused(loop.id)


class RunStream(Iterator["RunEvent"]):
    """The events of one tool run, as they happen; ``.run`` once it has ended."""

    def __init__(self, loop: RunLoop) -> None:
        self._loop = loop
        self._events = run_events(loop, streamed=True)

    @property
    def id(self) -> str:
        """The run's id (``Run.id``; the spend log's ``run_id``), known before it starts."""
        return self._loop.id

    @property
    def run(self) -> Run | None:
        """The run, once it has ended with an answer or a ``stop_after`` tool; else None (a
        run stopped by a bound raised a RunLimitError carrying it)."""
        return self._loop.result

    def __iter__(self) -> RunStream:
        return self

    def __next__(self) -> RunEvent:
        return _step(self._loop, self._events.__next__)

    def close(self) -> None:
        _step(self._loop, self._events.close)

    def __enter__(self) -> RunStream:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncRunStream(AsyncIterator["RunEvent"]):
    """Async :class:`RunStream`: ``async for event in gpt.arun_stream(...)``."""

    def __init__(self, loop: RunLoop) -> None:
        self._loop = loop
        self._events = arun_events(loop, streamed=True)

    @property
    def id(self) -> str:
        return self._loop.id

    @property
    def run(self) -> Run | None:
        return self._loop.result

    def __aiter__(self) -> AsyncRunStream:
        return self

    async def __anext__(self) -> RunEvent:
        return await _astep(self._loop, self._events.__anext__)

    async def aclose(self) -> None:
        await _astep(self._loop, self._events.aclose)

    async def __aenter__(self) -> AsyncRunStream:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
