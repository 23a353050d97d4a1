"""Running the tool calls of one model turn: checked, approved, concurrent, bounded, reported.

Every call gets an answer for the model, whatever happens: the function's result, or a sentence
saying what went wrong (an unknown tool, arguments that do not fit, a refusal by the approval
hook, a timeout, an exception; its text redacted, so a key in a traceback never reaches the
model). Only when the caller asks (``raise_errors``) does a tool's exception end the run.

Calls of one turn run at once: sync functions in threads, async ones as tasks on the caller's
loop; each is bounded by its timeout and by what the run has left. A sync function cannot be
stopped from outside: past its timeout its answer is given up and the thread finishes alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from moodlemate.ai._call_types import ToolCall
from moodlemate.ai._secrets import redact, redact_exception
from moodlemate.ai._tools import Tool, ToolInputError
from moodlemate.ai.errors import ToolExecutionError

__all__ = [
    "Approval",
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

ToolError = Literal["unknown_tool", "invalid_arguments", "refused", "timeout", "raised"]
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
    prepared = [_prepare(call, tools, approve) for call in calls]
    runnable = [p for p in prepared if isinstance(p, _Ready)]
    results: dict[int, ToolResult] = {
        i: p for i, p in enumerate(prepared) if isinstance(p, ToolResult)
    }
    if runnable:
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(len(runnable), MAX_WORKERS), thread_name_prefix="moodlemate-tool"
        )
        try:
            futures = {
                prepared.index(ready): (
                    ready,
                    pool.submit(contextvars.copy_context().run, _call_sync, ready),
                    time.monotonic(),
                )
                for ready in runnable
            }
            ends = time.monotonic() + timeout
            for index, (ready, future, started) in futures.items():
                limit = min(ready.timeout(timeout), max(ends - time.monotonic(), 0.0))
                try:
                    value = future.result(timeout=max(limit - (time.monotonic() - started), 0.0))
                except concurrent.futures.TimeoutError:
                    results[index] = _timed_out(ready, time.monotonic() - started)
                except Exception as exc:
                    results[index] = _raised(ready, exc, time.monotonic() - started, raise_errors)
                else:
                    results[index] = _returned(ready, value, time.monotonic() - started)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return [results[i] for i in range(len(calls))]


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
    prepared = [await _aprepare(call, tools, approve) for call in calls]

    async def one(item: _Ready | ToolResult) -> ToolResult:
        if isinstance(item, ToolResult):
            return item
        started = time.monotonic()
        try:
            async with asyncio.timeout(item.timeout(timeout)):
                if item.tool.is_async:
                    value = await item.function(**item.arguments)
                else:
                    value = await asyncio.to_thread(item.function, **item.arguments)
        except TimeoutError:
            return _timed_out(item, time.monotonic() - started)
        except Exception as exc:
            return _raised(item, exc, time.monotonic() - started, raise_errors)
        return _returned(item, value, time.monotonic() - started)

    tasks = [asyncio.ensure_future(one(item)) for item in prepared]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


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


def _raised(ready: _Ready, exc: Exception, seconds: float, raise_errors: bool) -> ToolResult:
    if raise_errors:
        redact_exception(exc)  # chained as the cause: a traceback would print its text
        raise ToolExecutionError(
            f"the tool {ready.tool.name} raised {type(exc).__name__}: "
            f"{redact(_text_of(exc))[:500]}",
            call=ready.call,
        ) from exc
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
