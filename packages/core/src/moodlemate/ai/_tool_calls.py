"""Running the tool calls of one model turn: checked, approved, concurrent, bounded, reported.

Every call gets an answer for the model, whatever happens: the function's result, or a sentence
saying what went wrong (an unknown tool, arguments that do not fit, a refusal by the approval
hook, a timeout, an exception; its text redacted, so a key in a traceback never reaches the
model). Only when the caller asks (``raise_errors``) does a tool's exception end the run: no
further call of its turn starts, async tools still running are cancelled, and sync ones (which
cannot be stopped) are waited for within their timeouts; each keeps what came of it, and every
call reported as started is reported ended (``cancelled`` when it was cancelled, or never got
its thread) before the error is raised.

Calls of one turn run at once: sync functions in threads, async ones as tasks on the caller's
loop; each is bounded by its timeout and by what the run has left. A sync function cannot be
stopped from outside: past its timeout its answer is given up and the thread finishes alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import json
import time
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Literal

from moodlemate.ai._call_types import ToolCall
from moodlemate.ai._secrets import redact, redact_exception
from moodlemate.ai._tools import Tool, ToolInputError
from moodlemate.ai.errors import ToolExecutionError

__all__ = [
    "Approval",
    "AsyncToolBatch",
    "Progress",
    "ToolBatch",
    "ToolResult",
    "arun_tool_calls",
    "run_tool_calls",
]

MAX_OUTPUT_CHARS = 100_000
"""Longest tool output sent back to the model; the rest is cut, and the cut said."""
MAX_WORKERS = 16
_KEY_MARGIN = 1024
"""Characters kept past the output limit until redaction (longer than any key)."""
_NAME_SHOWN = 64

ToolError = Literal[
    "unknown_tool", "invalid_arguments", "refused", "timeout", "raised", "cancelled"
]
Approval = Callable[[ToolCall, Tool], "bool | str | Awaitable[bool | str]"]
"""``before_tool_call(call, tool)``: True runs it; False or a reason refuses it (the reason is
what the model is told)."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One tool call and what came of it."""

    call: ToolCall
    output: str
    """What the model was sent back."""
    error: ToolError | None = None
    """None when the tool ran and returned; else what went wrong."""
    seconds: float = 0.0
    """How long the tool ran (0 when it did not)."""
    value: Any = field(default=None, repr=False, compare=False)
    """What the function returned (None when it did not return)."""

    @property
    def ok(self) -> bool:
        return self.error is None


Progress = tuple[int, "ToolResult | None"]
"""What a batch reports as it goes: (the call's index, None) when the call starts running,
(index, its result) when it has one."""


class _Batch:
    """What both batches hold: the calls, their results so far by index, and how they run."""

    def __init__(
        self,
        calls: Sequence[ToolCall],
        tools: Mapping[str, Tool],
        *,
        timeout: float,
        approve: Approval | None = None,
        raise_errors: bool = False,
    ) -> None:
        self.calls = tuple(calls)
        self.results: dict[int, ToolResult] = {}
        self.cancelled: set[int] = set()
        """The calls that started and were cancelled (async tools still running when another
        tool's error ended the run)."""
        self._failures: dict[int, Exception] = {}
        self._started: dict[int, float] = {}
        """When each async call's task began (monotonic), to time a cancelled one."""
        self._tools, self._timeout = tools, timeout
        self._approve, self._raise = approve, raise_errors

    def ordered(self) -> list[ToolResult]:
        return [self.results[i] for i in range(len(self.calls))]

    def _raises(self, index: int, ready: _Ready) -> ToolExecutionError | None:
        """The error that ends the run when call ``index`` raised and the caller asked for
        tool errors to be raised; None otherwise."""
        failure = self._failures.get(index)
        if failure is None or not self._raise:
            return None
        self._raise = False  # one error ends the run: the other calls' are recorded
        return _execution_error(ready, failure)

    def _unreported(
        self, failed: int, started: Iterable[int], reported: set[int], prepared: Sequence[object]
    ) -> Iterator[Progress]:
        """After call ``failed`` raised and the others settled: the result of each started
        call not reported yet, the failed one first, so every start has its end. A call with
        no result was cancelled (an async tool), or never got its thread: ``cancelled``."""
        left = sorted(i for i in started if i != failed and i not in reported)
        for index in [failed, *left]:
            result = self.results.get(index)
            if result is None:
                item = prepared[index]
                assert isinstance(item, _Ready)
                began = self._started.get(index)
                result = _cancelled(item, 0.0 if began is None else time.monotonic() - began)
            yield index, result


class ToolBatch(_Batch):
    """The tool calls of one turn, run at once in threads. Iterating runs them and reports each
    start and each result as it happens (so a streamed run can show them); :attr:`results`
    holds what came back so far, by the call's index.

    Closing the iteration early (the run was closed) starts no further call and waits for the
    running ones, each within its timeout: a sync function cannot be stopped from outside,
    and a run that was closed leaves no tool thread behind that it could still wait for."""

    def __iter__(self) -> Generator[Progress, None, None]:
        prepared = [_prepare(call, self._tools, self._approve) for call in self.calls]
        for index, item in enumerate(prepared):
            if isinstance(item, ToolResult):
                self.results[index] = item
                yield index, item
        runnable = [(i, p) for i, p in enumerate(prepared) if isinstance(p, _Ready)]
        if not runnable:
            return
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(len(runnable), MAX_WORKERS), thread_name_prefix="moodlemate-tool"
        )
        running: dict[concurrent.futures.Future[Any], _Running] = {}
        reported: set[int] = set()
        try:
            for index, ready in runnable:
                future = pool.submit(contextvars.copy_context().run, _call_sync, ready)
                started = time.monotonic()
                running[future] = (index, ready, started, started + ready.timeout(self._timeout))
                yield index, None
            while running:
                nearest = min(ends for _, _, _, ends in running.values())
                done, _ = concurrent.futures.wait(
                    running,
                    timeout=max(nearest - time.monotonic(), 0.0),
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
                now = time.monotonic()
                for future in [f for f in running if f in done or running[f][3] <= now]:
                    index, ready, started, _ = running.pop(future)
                    result = self.results[index] = self._ended(index, ready, future, now - started)
                    error = self._raises(index, ready)
                    if error is not None:
                        pool.shutdown(wait=self._settle(running), cancel_futures=True)
                        handed = (i for i, _ in runnable)  # each was reported started
                        yield from self._unreported(index, handed, reported, prepared)
                        raise error
                    reported.add(index)
                    yield index, result
        except GeneratorExit:
            ended = _wait_for(running)
            pool.shutdown(wait=ended, cancel_futures=True)  # the idle threads exit too
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _ended(
        self, index: int, ready: _Ready, future: concurrent.futures.Future[Any], seconds: float
    ) -> ToolResult:
        if not future.done():
            return _timed_out(ready, seconds)
        try:
            value = future.result()
        except Exception as exc:
            self._failures[index] = exc
            return _raised(ready, exc, seconds)
        return _returned(ready, value, seconds)

    def _settle(self, running: Mapping[concurrent.futures.Future[Any], _Running]) -> bool:
        """After a tool's error ended the run: the calls still waiting for a thread never
        start, the running ones end within their timeouts and keep what came of them; True
        when all ended (no thread is left behind)."""
        ended_at: dict[concurrent.futures.Future[Any], float] = {}
        for future in running:
            future.add_done_callback(lambda f: ended_at.setdefault(f, time.monotonic()))
        ended = _wait_for(running)
        for future, (index, ready, started, _) in running.items():
            if not future.cancelled():
                seconds = ended_at.get(future, time.monotonic()) - started
                self.results[index] = self._ended(index, ready, future, seconds)
        return ended


_Running = tuple[int, "_Ready", float, float]
"""A sync call handed to its thread: its index, the call, when it started and when its
timeout ends."""


def _wait_for(running: Mapping[concurrent.futures.Future[Any], _Running]) -> bool:
    """Let the calls still running finish, each within its own timeout; True when all did."""
    started = [(f, ends) for f, (_, _, _, ends) in running.items() if not f.cancel()]
    for future, ends in started:
        concurrent.futures.wait([future], timeout=max(ends - time.monotonic(), 0.0))
    return all(future.done() for future, _ in started)


def run_tool_calls(
    calls: Sequence[ToolCall],
    tools: Mapping[str, Tool],
    *,
    timeout: float,
    approve: Approval | None = None,
    raise_errors: bool = False,
) -> list[ToolResult]:
    """Run ``calls`` (sync functions in threads, async ones each on a loop of its own),
    every one within ``timeout`` seconds; results in the calls' order."""
    batch = ToolBatch(calls, tools, timeout=timeout, approve=approve, raise_errors=raise_errors)
    for _ in batch:
        pass
    return batch.ordered()


class AsyncToolBatch(_Batch):
    """Async :class:`ToolBatch`: async functions as tasks on the caller's loop, sync ones in
    threads; ``before_tool_call`` may be async. Closing or cancelling the iteration cancels
    every tool task it started and waits for them to end."""

    async def progress(self) -> AsyncGenerator[Progress, None]:
        prepared = [await _aprepare(call, self._tools, self._approve) for call in self.calls]
        for index, item in enumerate(prepared):
            if isinstance(item, ToolResult):
                self.results[index] = item
                yield index, item
        tasks: dict[asyncio.Future[ToolResult], int] = {}
        reported: set[int] = set()
        try:
            for index, item in enumerate(prepared):
                if isinstance(item, _Ready):
                    tasks[asyncio.ensure_future(self._one(index, item))] = index
            await asyncio.sleep(0)  # each task starts (its thread too) before it is said to
            for index in tasks.values():
                yield index, None
            pending: set[asyncio.Future[ToolResult]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=tasks.__getitem__):
                    index = tasks[task]
                    result = self.results[index] = task.result()
                    item = prepared[index]
                    error = self._raises(index, item) if isinstance(item, _Ready) else None
                    if error is not None:
                        await self._settle(tasks, prepared)
                        for left in self._unreported(index, tasks.values(), reported, prepared):
                            yield left
                        raise error
                    reported.add(index)
                    yield index, result
        finally:
            unfinished = [task for task in tasks if not task.done()]
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.gather(*unfinished, return_exceptions=True)

    async def _settle(
        self, tasks: Mapping[asyncio.Future[ToolResult], int], prepared: Sequence[object]
    ) -> None:
        """After a tool's error ended the run: async tools still running are cancelled, sync
        ones (which cannot be stopped) end within their timeouts; each keeps what came of it."""
        unfinished = [task for task in tasks if not task.done()]
        for task in unfinished:
            item = prepared[tasks[task]]
            if isinstance(item, _Ready) and item.tool.is_async:
                task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        for task, index in tasks.items():
            if task.cancelled():
                self.cancelled.add(index)
            elif index not in self.results and task.exception() is None:
                self.results[index] = task.result()

    async def _one(self, index: int, item: _Ready) -> ToolResult:
        started = self._started[index] = time.monotonic()
        limit = item.timeout(self._timeout)
        try:
            async with asyncio.timeout(limit):
                if item.tool.is_async:
                    value = await item.function(**item.arguments)
                else:
                    value = await _in_thread(item, started + limit)
        except TimeoutError:
            return _timed_out(item, time.monotonic() - started)
        except Exception as exc:
            self._failures[index] = exc
            return _raised(item, exc, time.monotonic() - started)
        return _returned(item, value, time.monotonic() - started)


async def _in_thread(item: _Ready, ends: float) -> Any:
    """A sync function on a thread. Cancelled (the run was closed or cancelled), it still waits
    for the thread until ``ends``, the call's timeout: a sync function cannot be stopped, and a
    closed run leaves no thread behind that it could have waited for."""
    context = contextvars.copy_context()
    future = asyncio.get_running_loop().run_in_executor(
        None, functools.partial(context.run, item.function, **item.arguments)
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        left = ends - time.monotonic()
        if left > 0 and not future.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait({future}, timeout=left)
        raise


async def arun_tool_calls(
    calls: Sequence[ToolCall],
    tools: Mapping[str, Tool],
    *,
    timeout: float,
    approve: Approval | None = None,
    raise_errors: bool = False,
) -> list[ToolResult]:
    """Async :func:`run_tool_calls`: async functions as tasks, sync ones in threads; a
    cancelled run cancels every tool task it started."""
    batch = AsyncToolBatch(
        calls, tools, timeout=timeout, approve=approve, raise_errors=raise_errors
    )
    async for _ in batch.progress():
        pass
    return batch.ordered()


@dataclass(frozen=True, slots=True)
class _Ready:
    call: ToolCall
    tool: Tool
    arguments: dict[str, Any]

    @property
    def function(self) -> Callable[..., Any]:
        assert self.tool.function is not None
        return self.tool.function

    def timeout(self, default: float) -> float:
        return min(self.tool.timeout, default) if self.tool.timeout is not None else default


def _prepare(
    call: ToolCall, tools: Mapping[str, Tool], approve: Approval | None
) -> _Ready | ToolResult:
    checked = _check(call, tools)
    if isinstance(checked, ToolResult) or approve is None:
        return checked
    verdict = approve(call, checked.tool)
    if inspect.isawaitable(verdict):
        raise TypeError("an async before_tool_call hook needs the async run (arun)")
    return _approved(checked, verdict)


async def _aprepare(
    call: ToolCall, tools: Mapping[str, Tool], approve: Approval | None
) -> _Ready | ToolResult:
    checked = _check(call, tools)
    if isinstance(checked, ToolResult) or approve is None:
        return checked
    verdict = approve(call, checked.tool)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return _approved(checked, verdict)


def _check(call: ToolCall, tools: Mapping[str, Tool]) -> _Ready | ToolResult:
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools)) or "none"
        return ToolResult(
            call,
            f"Error: there is no tool named {_shown(call.name)} (tools: {known}).",
            "unknown_tool",
        )
    try:
        arguments = tool.bind(call.arguments)
    except ToolInputError as exc:
        return ToolResult(
            call,
            f"Error: the arguments do not fit the tool {tool.name}: {redact(str(exc))}. "
            "Call it again with corrected arguments.",
            "invalid_arguments",
        )
    return _Ready(call, tool, arguments)


def _approved(ready: _Ready, verdict: object) -> _Ready | ToolResult:
    if verdict is True:
        return ready
    reason = verdict if isinstance(verdict, str) and verdict else "the user refused this call"
    return ToolResult(ready.call, f"Error: not run: {reason}.", "refused")


def _call_sync(ready: _Ready) -> Any:
    if ready.tool.is_async:
        return asyncio.run(ready.function(**ready.arguments))
    return ready.function(**ready.arguments)


def _returned(ready: _Ready, value: Any, seconds: float) -> ToolResult:
    return ToolResult(ready.call, _output(value), None, seconds, value)


def _timed_out(ready: _Ready, seconds: float) -> ToolResult:
    return ToolResult(
        ready.call,
        f"Error: the tool {ready.tool.name} did not finish within {seconds:.1f} s.",
        "timeout",
        seconds,
    )


def _cancelled(ready: _Ready, seconds: float) -> ToolResult:
    return ToolResult(
        ready.call,
        f"Error: the tool {ready.tool.name} was cancelled: another tool's error ended the run.",
        "cancelled",
        seconds,
    )


def _execution_error(ready: _Ready, exc: Exception) -> ToolExecutionError:
    """What ends a run that asked for tool errors to be raised, ``exc`` chained as its cause."""
    redact_exception(exc)  # chained as the cause: a traceback would print its text
    error = ToolExecutionError(
        f"the tool {ready.tool.name} raised {type(exc).__name__}: {redact(_text_of(exc))[:500]}",
        call=ready.call,
    )
    error.__cause__ = exc
    return error


def _raised(ready: _Ready, exc: Exception, seconds: float) -> ToolResult:
    text = redact(f"{type(exc).__name__}: {_text_of(exc)}")[:2000]
    return ToolResult(
        ready.call, f"Error: the tool {ready.tool.name} failed: {text}", "raised", seconds
    )


def _output(value: Any) -> str:
    """What the model is told a tool returned: the text, or JSON (``str`` for what JSON cannot
    hold), redacted and cut. A value that cannot be shown at all (nested past the recursion
    limit, a ``__str__`` that raises) is said to be so: a tool's odd return never ends the run."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except Exception:
            text = _text_of(value)
    # Cut before redacting (a tool may return gigabytes), with a margin longer than any key;
    # after redacting, the margin's end (which may hold part of a key) is dropped.
    size = len(text)
    if size > MAX_OUTPUT_CHARS:
        kept = redact(text[: MAX_OUTPUT_CHARS + _KEY_MARGIN])
        if size > MAX_OUTPUT_CHARS + _KEY_MARGIN:
            kept = kept[: len(kept) - _KEY_MARGIN]
        if len(kept) > MAX_OUTPUT_CHARS or size > MAX_OUTPUT_CHARS + _KEY_MARGIN:
            return f"{kept[:MAX_OUTPUT_CHARS]}\n[... the output was {size:,} characters; cut]"
        return kept
    return redact(text)


def _text_of(value: object) -> str:
    """``str(value)``, or a note saying it could not be made (raised, or nested too deep)."""
    try:
        return str(value)
    except Exception as exc:
        return f"<a {type(value).__name__} that cannot be shown: {type(exc).__name__}>"


def _shown(name: str) -> str:
    """A name the model sent, quoted and cut: an unknown name can be any length."""
    if len(name) <= _NAME_SHOWN:
        return repr(name)
    return f"{name[:_NAME_SHOWN]!r}... ({len(name):,} characters)"
