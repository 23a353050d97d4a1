"""What a streamed tool run reports as it happens (:meth:`GPT.run_stream`).

Every event names the model turn it belongs to (``turn``, from 1). In one turn they come in
this order: the reply's :class:`TextDelta` pieces as they arrive; when the reply has ended, a
:class:`ToolCallRequested` for each call it asks for; then, as the calls run, a
:class:`ToolCallStarted` when one starts (a call refused or with arguments that do not fit
never starts) and a :class:`ToolCallFinished` when one has its result; last, a
:class:`TurnFinished` with the turn as the final :class:`~moodlemate.ai.Run` lists it (its
completion, cost and tool results). When a tool's error ends the run (``raise_tool_errors``),
every call that started still gets its one :class:`ToolCallFinished` (``cancelled`` when it
was cancelled or never got its thread) before the error is raised, and no TurnFinished.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from moodlemate.ai._call_types import Completion, ToolCall
from moodlemate.ai._run_types import Turn
from moodlemate.ai._tool_calls import ToolError, ToolResult

__all__ = [
    "RunEvent",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallRequested",
    "ToolCallStarted",
    "TurnFinished",
]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the model's reply text, as it arrived."""

    turn: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallRequested:
    """The model's reply asked for this call (its arguments are untrusted, not yet checked)."""

    turn: int
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """The call passed its checks and the approval hook, and its function started (a sync
    one was handed to its thread: past 16 calls at once, it waits for one)."""

    turn: int
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    """The call has its result: what the function returned, or what went wrong."""

    turn: int
    result: ToolResult

    @property
    def call(self) -> ToolCall:
        return self.result.call

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def error(self) -> ToolError | None:
        """None when the function returned; else ``unknown_tool``, ``invalid_arguments``,
        ``refused``, ``timeout``, ``raised`` or ``cancelled`` (another tool's error ended
        the run first)."""
        return self.result.error

    @property
    def seconds(self) -> float:
        """How long the function ran (0 when it did not)."""
        return self.result.seconds

    @property
    def output(self) -> str:
        """What the model is told: the result, or the error, redacted."""
        return self.result.output


@dataclass(frozen=True, slots=True)
class TurnFinished:
    """The model turn and its tools are done; ``result`` is the turn as the final run lists
    it (so the turns' costs add up to the run's)."""

    turn: int
    result: Turn

    @property
    def cost(self) -> Decimal | None:
        """The model call's cost (None when unknown)."""
        return self.result.cost

    @property
    def completion(self) -> Completion:
        return self.result.completion


RunEvent = TextDelta | ToolCallRequested | ToolCallStarted | ToolCallFinished | TurnFinished
