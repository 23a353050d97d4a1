"""What a tool run is made of and gives back: its settings, its turns, the run itself.

Plain frozen values, apart from the loop that makes them (:mod:`moodlemate.ai._run`), so the
events of a streamed run (:mod:`moodlemate.ai._run_events`) can carry them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from moodlemate.ai._call_types import Completion, Message
from moodlemate.ai._tool_calls import Approval, ToolResult
from moodlemate.ai._usage import Usage, summed_cost
from moodlemate.ai.errors import ValidationError

__all__ = ["DEFAULT_TOOL_TIMEOUT", "MAX_TURNS_LIMIT", "Run", "RunSettings", "Stopped", "Turn"]

DEFAULT_TOOL_TIMEOUT = 60.0
MAX_TURNS_LIMIT = 1000

Stopped = Literal["answer", "stop_after"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One model turn of a run and the tool calls it asked for."""

    number: int
    """1 for the first turn."""
    completion: Completion
    tool_results: tuple[ToolResult, ...] = ()
    """The tool calls the reply asked for, run (or refused), in order."""
    seconds: float = 0.0
    """The model call, retries included."""
    tool_seconds: float = 0.0
    """The tools of this turn, run together (wall time)."""

    @property
    def cost(self) -> Decimal | None:
        return self.completion.cost


@dataclass(frozen=True, slots=True)
class Run:
    """A whole tool run: every turn, what it cost, and the conversation it made."""

    id: str
    turns: tuple[Turn, ...]
    messages: tuple[Message, ...]
    """The conversation: the request's messages, then each reply and its tool results."""
    stopped: Stopped | None = None
    """``answer`` (the model replied without tool calls), ``stop_after`` (a named tool ran);
    None for a run cut short (in a RunLimitError)."""
    tool_definition_tokens: int | None = None
    """Prompt tokens the tool definitions add to each turn (None when they cannot be counted)."""
    seconds: float = 0.0

    @property
    def text(self) -> str:
        """The last reply's text: the answer when the run ended with one."""
        return self.turns[-1].completion.text if self.turns else ""

    @property
    def tool_calls(self) -> tuple[ToolResult, ...]:
        """Every tool call of the run, in order."""
        return tuple(result for turn in self.turns for result in turn.tool_results)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for turn in self.turns:
            total = total + turn.completion.usage
        return total

    @property
    def cost(self) -> Decimal | None:
        """Every turn's cost, summed; None when any turn's cost is unknown."""
        return summed_cost(turn.cost for turn in self.turns)


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How one run is bounded and steered (checked before anything is sent)."""

    max_turns: int = 8
    budget: Decimal | None = None
    deadline: float | None = None
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT
    tool_choice: str | Mapping[str, Any] | None = None
    stop_after: Collection[str] = ()
    before_tool_call: Approval | None = None
    raise_tool_errors: bool = False

    def __post_init__(self) -> None:
        turns = self.max_turns
        if (
            isinstance(turns, bool)
            or not isinstance(turns, int)
            or not 1 <= turns <= MAX_TURNS_LIMIT
        ):
            raise ValidationError(f"max_turns must be an int from 1 to {MAX_TURNS_LIMIT}")
        for name in ("deadline", "tool_timeout"):
            value = getattr(self, name)
            if value is None and name == "deadline":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValidationError(f"{name} must be a positive number of seconds")
        if self.before_tool_call is not None and not callable(self.before_tool_call):
            raise ValidationError("before_tool_call must be callable")
        if isinstance(self.stop_after, str):
            object.__setattr__(self, "stop_after", (self.stop_after,))
