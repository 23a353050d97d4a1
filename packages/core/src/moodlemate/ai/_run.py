"""The tool loop: ask the model, run the tools it asks for, give it their results, until it answers.

Every model turn is one :class:`~moodlemate.ai._call.Call` (retried, reserved against the
instance's budget, priced, logged, hooked like any call); this module adds only what is about the
run as a whole:

* **bounds**: ``max_turns`` model turns; a run ``budget`` in USD, checked before each turn against
  the turn's worst case (the next turn is not sent when it could cross it); a run ``deadline`` in
  seconds over model turns and tool time together (each turn's retry deadline and each tool's
  timeout are cut to what is left). Reaching one raises a :class:`RunLimitError` that carries the
  run so far, its cost included.
* **accounting**: the result lists every turn with its completion, cost and tool calls (each with
  its time), the total usage and cost, and the prompt tokens the tool definitions add per turn.
* **control**: a ``before_tool_call`` approval hook, ``tool_choice`` (a forced choice applies to
  the first turn only, or the model could never answer), ``stop_after`` tool names.

A turn the model answers with tool calls at the ``max_turns`` limit does not run them: no turn is
left to read their results.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from moodlemate.ai._budget import worst_case_cost
from moodlemate.ai._call import RunTurn
from moodlemate.ai._call_types import ChatRequest, Completion, Message
from moodlemate.ai._options import options_from
from moodlemate.ai._tool_calls import Approval, ToolResult, arun_tool_calls, run_tool_calls
from moodlemate.ai._tools import MAX_ARGUMENT_CHARS, Tool
from moodlemate.ai._usage import Usage
from moodlemate.ai.errors import (
    APITimeoutError,
    MaxTurnsError,
    RunBudgetError,
    RunDeadlineError,
    ValidationError,
)

if TYPE_CHECKING:
    from moodlemate.ai._facade import Facade

__all__ = ["DEFAULT_TOOL_TIMEOUT", "Run", "RunSettings", "Turn", "arun_tools", "run_tools"]

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
        costs = [turn.cost for turn in self.turns]
        if any(cost is None for cost in costs):
            return None
        return sum((cost for cost in costs if cost is not None), Decimal(0))


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


class _Loop:
    """The state both twins share: the history, the turns, the clock and the money."""

    def __init__(
        self, gpt: Facade, request: ChatRequest, tools: Mapping[str, Tool], settings: RunSettings
    ) -> None:
        if not tools:
            raise ValidationError("a run needs at least one tool")
        unknown = [name for name in settings.stop_after if name not in tools]
        if unknown:
            raise ValidationError(f"stop_after names no tool of the run: {', '.join(unknown)}")
        self.gpt = gpt
        self.tools = tools
        self.settings = settings
        self.id = f"run_{uuid.uuid4().hex[:16]}"
        self.started = time.monotonic()
        deadline = settings.deadline if settings.deadline is not None else gpt.retry.deadline
        self.ends = self.started + deadline
        self.provider, self.model = gpt.route(request.model)
        self.endpoint = gpt.provider_connection(request.model)[1].endpoint
        definitions = tuple(
            self.provider.tool_definition(self.model, tool.definition()) for tool in tools.values()
        )
        named = request.options.named()
        named["tools"] = list(definitions)
        if settings.tool_choice is not None:
            named["tool_choice"] = settings.tool_choice
        self.first = replace(request, options=options_from(named))
        named.pop("tool_choice", None)
        self.later = replace(request, options=options_from(named))
        self.history = list(request.messages)
        self.turns: list[Turn] = []
        self.spent = Decimal(0)
        self.definition_tokens = _definition_tokens(gpt, request, definitions)
        self.cut = False
        self.hooks = gpt._run_hooks()
        self.tools_started = 0.0  # wall-clock time the current turn's tools began

    # -- before and after each step ---------------------------------------------------------

    def next_request(self) -> ChatRequest:
        """The next turn's request, or a RunLimitError when the run may not take it."""
        remaining = self.remaining()
        if remaining <= 0:
            raise RunDeadlineError(
                f"the run's deadline ran out after {len(self.turns)} turn(s)", self.partial()
            )
        base = self.first if not self.turns else self.later
        request = replace(base, messages=tuple(self.history))
        budget = self.settings.budget
        if budget is not None:
            worst = worst_case_cost(self.provider, request, self.endpoint)
            if worst is not None and self.spent + worst > budget:
                raise RunBudgetError(
                    f"the run's next turn could cost up to ${worst}; ${budget - self.spent} of "
                    f"its ${budget} budget is left (spent ${self.spent} in {len(self.turns)} "
                    "turn(s)); it was not sent",
                    self.partial(),
                )
        return request

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def answered(self, completion: Completion, seconds: float) -> list[Any] | None:
        """Record the reply; the tool calls to run, or None when the run is over."""
        self.spent += completion.cost or Decimal(0)
        message = _unique_call_ids(completion.message, len(self.turns) + 1)
        self.history.append(_kept(message))
        number = len(self.turns) + 1
        self.turns.append(Turn(number, completion, seconds=seconds))
        if not message.tool_calls:
            return None
        if number >= self.settings.max_turns:
            raise MaxTurnsError(
                f"the model still asked for tools after {number} turn(s) (max_turns="
                f"{self.settings.max_turns}); its last tool calls were not run",
                self.partial(),
            )
        return list(message.tool_calls)

    def ran(self, results: list[ToolResult], seconds: float) -> bool:
        """Record the tool results; True when a ``stop_after`` tool ran."""
        self.turns[-1] = replace(self.turns[-1], tool_results=tuple(results), tool_seconds=seconds)
        for result in results:
            self.history.append(Message("tool", result.output, tool_call_id=result.call.id))
            if self.hooks is not None:
                self.hooks.tool_called(self.id, result, self.tools_started)
        stop = self.settings.stop_after
        return any(result.ok and result.call.name in stop for result in results)

    def tool_timeout(self) -> float:
        remaining = self.remaining()
        if remaining <= 0:
            raise RunDeadlineError(
                f"the run's deadline ran out after {len(self.turns)} turn(s), before its tools ran",
                self.partial(),
            )
        return min(self.settings.tool_timeout, remaining)

    def partial(self, stopped: Stopped | None = None) -> Run:
        return Run(
            id=self.id,
            turns=tuple(self.turns),
            messages=tuple(self.history),
            stopped=stopped,
            tool_definition_tokens=self.definition_tokens,
            seconds=time.monotonic() - self.started,
        )

    # -- sending ------------------------------------------------------------------------------

    def call(self, request: ChatRequest) -> Any:
        """The prepared call for ``request``, its retry deadline cut to what the run has left."""
        call = replace(self.gpt.prepare(request), run_turn=self.run_turn())
        deadline = min(call.policy.deadline, max(self.remaining(), 0.001))
        self.cut = deadline < call.policy.deadline
        return replace(call, policy=replace(call.policy, deadline=deadline))

    def run_turn(self) -> RunTurn:
        """The next turn's tag for its spend-log row."""
        return RunTurn(self.id, len(self.turns) + 1)

    def timed_out(self, exc: APITimeoutError) -> RunDeadlineError:
        """A turn that timed out because the run's deadline cut it short is the run's deadline
        (carrying the run so far), not a slow server's timeout."""
        if not self.cut:
            raise exc
        return RunDeadlineError(
            f"the run's deadline ran out during turn {len(self.turns) + 1}", self.partial()
        )


def run_tools(
    gpt: Facade, request: ChatRequest, tools: Mapping[str, Tool], settings: RunSettings
) -> Run:
    """Run the tool loop for ``request`` (see the module's docstring)."""
    loop = _Loop(gpt, request, tools, settings)
    hooks = loop.hooks
    if hooks is None:
        return _drive(loop)
    hooks.started(loop.id, request, loop.provider.name, loop.endpoint)
    try:
        run = _drive(loop)
    except BaseException as exc:
        hooks.ended(loop.id, getattr(exc, "run", None) or loop.partial(), exc)
        raise
    hooks.ended(loop.id, run, None)
    return run


def _drive(loop: _Loop) -> Run:
    gpt, settings, tools = loop.gpt, loop.settings, loop.tools
    while True:
        next_request = loop.next_request()
        started = time.monotonic()
        if gpt.fallbacks:
            completion = gpt.send(next_request, run_turn=loop.run_turn())
        else:
            try:
                completion = loop.call(next_request).send()
            except APITimeoutError as exc:
                raise loop.timed_out(exc) from exc
            gpt._remember(completion)
        calls = loop.answered(completion, time.monotonic() - started)
        if calls is None:
            return loop.partial("answer")
        started = time.monotonic()
        loop.tools_started = time.time()
        results = run_tool_calls(
            calls,
            tools,
            timeout=loop.tool_timeout(),
            approve=settings.before_tool_call,
            raise_errors=settings.raise_tool_errors,
        )
        if loop.ran(results, time.monotonic() - started):
            return loop.partial("stop_after")


async def arun_tools(
    gpt: Facade, request: ChatRequest, tools: Mapping[str, Tool], settings: RunSettings
) -> Run:
    """Async :func:`run_tools`: async tools run as tasks on this loop, sync ones in threads."""
    loop = _Loop(gpt, request, tools, settings)
    hooks = loop.hooks
    if hooks is None:
        return await _adrive(loop)
    hooks.started(loop.id, request, loop.provider.name, loop.endpoint)
    try:
        run = await _adrive(loop)
    except BaseException as exc:
        hooks.ended(loop.id, getattr(exc, "run", None) or loop.partial(), exc)
        raise
    hooks.ended(loop.id, run, None)
    return run


async def _adrive(loop: _Loop) -> Run:
    gpt, settings, tools = loop.gpt, loop.settings, loop.tools
    while True:
        next_request = loop.next_request()
        started = time.monotonic()
        if gpt.fallbacks:
            completion = await gpt.asend(next_request, run_turn=loop.run_turn())
        else:
            try:
                completion = await loop.call(next_request).asend()
            except APITimeoutError as exc:
                raise loop.timed_out(exc) from exc
            gpt._remember(completion)
        calls = loop.answered(completion, time.monotonic() - started)
        if calls is None:
            return loop.partial("answer")
        started = time.monotonic()
        loop.tools_started = time.time()
        results = await arun_tool_calls(
            calls,
            tools,
            timeout=loop.tool_timeout(),
            approve=settings.before_tool_call,
            raise_errors=settings.raise_tool_errors,
        )
        if loop.ran(results, time.monotonic() - started):
            return loop.partial("stop_after")


def _unique_call_ids(message: Message, turn: int) -> Message:
    """``message`` with an id of its own for each tool call: a model may repeat an id in one
    turn or send none, and every call needs its own answer, matched by id (a request answering
    one id twice is refused before it is sent). Good ids are kept as they are."""
    seen: set[str] = set()
    calls = []
    for number, call in enumerate(message.tool_calls):
        if call.id and call.id not in seen:
            seen.add(call.id)
            calls.append(call)
            continue
        fresh = f"call_t{turn}_{number}"
        while fresh in seen:
            fresh += "_"
        seen.add(fresh)
        calls.append(replace(call, id=fresh))
    if all(a is b for a, b in zip(calls, message.tool_calls, strict=True)):
        return message
    return replace(message, tool_calls=tuple(calls))


def _kept(message: Message) -> Message:
    """``message`` as the history keeps it: arguments too long to be read (never run; the
    tool result says so) are kept as ``{}``, or every later turn would carry them back and
    the run would end over the context window instead of letting the model try again."""
    if all(len(call.arguments) <= MAX_ARGUMENT_CHARS for call in message.tool_calls):
        return message
    calls = tuple(
        replace(call, arguments="{}") if len(call.arguments) > MAX_ARGUMENT_CHARS else call
        for call in message.tool_calls
    )
    return replace(message, tool_calls=calls)


def _definition_tokens(
    gpt: Facade, request: ChatRequest, definitions: tuple[Mapping[str, Any], ...]
) -> int | None:
    """Prompt tokens the definitions add (counted with and without them, locally)."""
    try:
        probe = [{"role": "user", "content": "x"}]
        with_tools = gpt.count_message_tokens(probe, request.model, tools=definitions)
        without = gpt.count_message_tokens(probe, request.model)
    except Exception:
        return None
    return int(with_tools.tokens) - int(without.tokens)
