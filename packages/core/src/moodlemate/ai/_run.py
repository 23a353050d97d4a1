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

One engine runs every flavour: a generator of :mod:`~moodlemate.ai._run_events` (an async one for
the async twins) that sends each turn whole (``run``) or streamed (``run_stream``, each turn a
stream through :mod:`moodlemate.ai._streaming`); ``run`` drains it. A run sends every turn where
its first went: the destination (endpoint, key, headers) is pinned when the run starts, so a
``configure`` meanwhile changes the next run, never this one.

A conversation's run (``Conversation.ask`` with tools) gives a ``refit``: when the server refuses
a turn as longer than its window, the conversation's older turns are trimmed and that turn is
sent once more with the run's own messages kept, so no tool that ran is run again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from moodlemate.ai._budget import worst_case_cost
from moodlemate.ai._call import Call, RunTurn
from moodlemate.ai._call_types import ChatRequest, Completion, Message, ToolCall
from moodlemate.ai._closed_early import closed_early
from moodlemate.ai._off_loop import off_loop
from moodlemate.ai._options import options_from
from moodlemate.ai._plausible import unknown_cost_charge
from moodlemate.ai._run_events import (
    RunEvent,
    TextDelta,
    ToolCallFinished,
    ToolCallRequested,
    ToolCallStarted,
    TurnFinished,
)
from moodlemate.ai._run_types import (
    DEFAULT_TOOL_TIMEOUT,
    MAX_TURNS_LIMIT,
    Run,
    RunSettings,
    Stopped,
    Turn,
)
from moodlemate.ai._tool_calls import AsyncToolBatch, ToolBatch, ToolResult
from moodlemate.ai._tools import MAX_ARGUMENT_CHARS, Tool
from moodlemate.ai.errors import (
    APITimeoutError,
    MaxTurnsError,
    ReplyError,
    RunBudgetError,
    RunDeadlineError,
    ServerContextWindowExceededError,
    StreamInterruptedError,
    ToolExecutionError,
    ValidationError,
)

if TYPE_CHECKING:
    from moodlemate.ai._facade import Facade
    from moodlemate.ai._streaming import AsyncTextStream, TextStream

Refit = Callable[
    [ServerContextWindowExceededError, tuple[Message, ...], tuple[Message, ...]],
    tuple[Message, ...],
]
"""``refit(error, sent, tail)``: after the server refused ``sent`` as too long, the messages
before the run's own ``tail``, trimmed to fit (a ContextWindowExceededError when they cannot)."""

__all__ = [
    "DEFAULT_TOOL_TIMEOUT",
    "MAX_TURNS_LIMIT",
    "Run",
    "RunSettings",
    "Turn",
    "arun_events",
    "arun_tools",
    "run_events",
    "run_tools",
]


class RunLoop:
    """The state every flavour shares: the history, the turns, the clock, the money, and the
    destination pinned at the start."""

    def __init__(
        self,
        gpt: Facade,
        request: ChatRequest,
        tools: Mapping[str, Tool],
        settings: RunSettings,
        refit: Refit | None = None,
    ) -> None:
        if not tools:
            raise ValidationError("a run needs at least one tool")
        unknown = [name for name in settings.stop_after if name not in tools]
        if unknown:
            raise ValidationError(f"stop_after names no tool of the run: {', '.join(unknown)}")
        self.gpt = gpt
        self.request = request
        self.tools = tools
        self.settings = settings
        self.id = f"run_{uuid.uuid4().hex[:16]}"
        self.started = time.monotonic()
        deadline = settings.deadline if settings.deadline is not None else gpt.retry.deadline
        self.ends = self.started + deadline
        self.target = gpt._pinned()
        self.provider, self.model = gpt._route(request.model, self.target)
        self.endpoint = gpt._endpoint(request.model, self.target)
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
        self.prefix = len(request.messages)
        """How many messages of the history come before the run's own."""
        self._refit = refit
        self._refitted = 0  # the turn last sent again after a refusal as too long
        self.turns: list[Turn] = []
        self.spent = Decimal(0)
        self.worst: Decimal | None = None
        """The worst case of the turn being sent (with a run ``budget`` only)."""
        self.definition_tokens = _definition_tokens(gpt, request, definitions)
        self.cut = False
        self.hooks = gpt._run_hooks()
        self.tools_started = 0.0  # wall-clock time the current turn's tools began
        self.result: Run | None = None
        """The run, once it has ended with an answer or a ``stop_after`` tool."""

    # -- before and after each step ---------------------------------------------------------

    @property
    def number(self) -> int:
        """The number of the turn being sent (or just answered)."""
        return len(self.turns) + 1

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
            worst = self.worst = worst_case_cost(self.provider, request, self.endpoint)
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

    def refitted(self, exc: ServerContextWindowExceededError, sent: ChatRequest) -> bool:
        """After the server refused a turn as too long: True when the messages before the
        run's own were trimmed to fit (send the turn again: the tools that ran are not run
        again), False when there is no ``refit`` or this turn was refitted already."""
        if self._refit is None or self._refitted == self.number:
            return False
        self._refitted = self.number
        tail = tuple(self.history[self.prefix :])
        prefix = self._refit(exc, sent.messages, tail)
        self.history = [*prefix, *tail]
        self.prefix = len(prefix)
        return True

    def answered(self, completion: Completion, seconds: float) -> tuple[ToolCall, ...]:
        """Record the reply; the tool calls it asks for (none: the run has its answer). A
        reply that cannot be priced counts as the instance's budget counts it (at least its
        worst case): the run's budget must not let such turns go on unseen."""
        cost = completion.cost
        if cost is None:
            charge = unknown_cost_charge(
                completion, None, completion.cost_breakdown, self.worst or Decimal(0)
            )
            cost = charge or Decimal(0)
        self.spent += cost
        message = _unique_call_ids(completion.message, self.number)
        self.history.append(_kept(message))
        self.turns.append(Turn(self.number, completion, seconds=seconds))
        return message.tool_calls

    def out_of_turns(self) -> MaxTurnsError | None:
        """The error for tool calls asked for at the ``max_turns`` limit (not run)."""
        number = len(self.turns)
        if number < self.settings.max_turns:
            return None
        return MaxTurnsError(
            f"the model still asked for tools after {number} turn(s) (max_turns="
            f"{self.settings.max_turns}); its last tool calls were not run",
            self.partial(),
        )

    def batch_settings(self) -> dict[str, Any]:
        """How this turn's tool calls run (a RunDeadlineError when no time is left)."""
        self.tools_started = time.time()
        return {
            "timeout": self.tool_timeout(),
            "approve": self.settings.before_tool_call,
            "raise_errors": self.settings.raise_tool_errors,
        }

    def ran(self, results: list[ToolResult], seconds: float) -> bool:
        """Record the tool results; True when a ``stop_after`` tool ran."""
        self.turns[-1] = replace(self.turns[-1], tool_results=tuple(results), tool_seconds=seconds)
        for result in results:
            self.history.append(Message("tool", result.output, tool_call_id=result.call.id))
        self.tools_ended(results)
        stop = self.settings.stop_after
        return any(result.ok and result.call.name in stop for result in results)

    def tools_ended(self, results: Sequence[ToolResult]) -> None:
        """The ``after_tool_call`` hook for each call (its OpenTelemetry span): once the
        turn's tools have run, or, when a tool's error ended the run, for each call that
        ended before the error was raised."""
        if self.hooks is not None:
            for result in results:
                self.hooks.tool_called(self.id, result, self.tools_started)

    def finished(self) -> TurnFinished:
        return TurnFinished(self.turns[-1].number, self.turns[-1])

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

    def ended(self, stopped: Stopped) -> Run:
        self.result = self.partial(stopped)
        return self.result

    # -- the spend log's record of each turn's tool calls --------------------------------------

    def outcomes(
        self,
        calls: Sequence[ToolCall],
        batch: ToolBatch | AsyncToolBatch | None,
        error: BaseException | None,
    ) -> tuple[str, int, list[tuple[int, str, float | None]]] | None:
        """What the spend log keeps of this turn's calls: each one's outcome and time (never
        its arguments or result); None when there is no log. A call with no result is
        ``cancelled`` when it started (or the run was closed early), else ``not_run``."""
        if self.gpt.log is None or not calls:
            return None
        results = batch.results if batch is not None else {}
        cancelled = batch.cancelled if batch is not None else set()
        closed = closed_early(error)
        rows: list[tuple[int, str, float | None]] = []
        for index, call in enumerate(calls):
            result = results.get(index)
            if result is not None:
                rows.append((index, result.error or "ok", round(result.seconds * 1000, 3)))
            elif isinstance(error, ToolExecutionError) and error.call is call:
                rows.append((index, "raised", None))
            else:
                ended = "cancelled" if closed or index in cancelled else "not_run"
                rows.append((index, ended, None))
        return self.id, len(self.turns), rows

    def record(self, outcomes: tuple[str, int, list[tuple[int, str, float | None]]] | None) -> None:
        log = self.gpt.log
        if outcomes is not None and log is not None:
            log.record_tool_outcomes(*outcomes)

    async def arecord(
        self, outcomes: tuple[str, int, list[tuple[int, str, float | None]]] | None
    ) -> None:
        if outcomes is not None and self.gpt.log is not None:
            await off_loop(self.record, outcomes)

    # -- sending ------------------------------------------------------------------------------

    def call(self, request: ChatRequest, *, streamed: bool = False) -> Call:
        """The prepared call for ``request`` to the pinned destination, its retry deadline (and
        for a stream, its whole length) cut to what the run has left."""
        call = replace(self.gpt.prepare(request, target=self.target), run_turn=self.run_turn())
        left = max(self.remaining(), 0.001)
        policy = call.policy
        self.cut = left < policy.deadline
        policy = replace(policy, deadline=min(policy.deadline, left))
        if streamed and (policy.stream_deadline is None or left < policy.stream_deadline):
            self.cut = True
            policy = replace(policy, stream_deadline=left)
        return replace(call, policy=policy)

    def run_turn(self) -> RunTurn:
        """The next turn's tag for its spend-log row."""
        return RunTurn(self.id, self.number)

    def timed_out(self, exc: APITimeoutError | StreamInterruptedError) -> RunDeadlineError:
        """A turn that timed out because the run's deadline cut it short is the run's deadline
        (carrying the run so far), not a slow server's timeout."""
        if isinstance(exc, StreamInterruptedError) and (
            not isinstance(exc.__cause__, APITimeoutError) or self.remaining() > 0.05
        ):
            raise exc  # a stream cut by the server, or by its own idle bound
        if not self.cut:
            raise exc
        return RunDeadlineError(
            f"the run's deadline ran out during turn {self.number}", self.partial()
        )

    def send(self, request: ChatRequest) -> Completion:
        gpt = self.gpt
        if gpt.fallbacks:
            completion = gpt._chain(request, self.run_turn(), self.target).send(Call.send_unhooked)
        else:
            try:
                completion = self.call(request).send()
            except APITimeoutError as exc:
                raise self.timed_out(exc) from exc
        gpt._remember(completion)
        return completion

    async def asend(self, request: ChatRequest) -> Completion:
        gpt = self.gpt
        if gpt.fallbacks:
            completion = await gpt._chain(request, self.run_turn(), self.target).asend(
                Call.asend_unhooked
            )
        else:
            try:
                completion = await self.call(request).asend()
            except APITimeoutError as exc:
                raise self.timed_out(exc) from exc
        gpt._remember(completion)
        return completion

    def stream(self, request: ChatRequest) -> TextStream:
        """The turn as a stream through the stream pipeline (fallbacks included)."""
        from moodlemate.ai._streaming import TextStream

        request, gpt = replace(request, stream=True), self.gpt
        if gpt.fallbacks:
            from moodlemate.ai._fallback_streams import FallbackStream

            return FallbackStream(gpt._chain(request, self.run_turn(), self.target), gpt._remember)
        return TextStream(self.call(request, streamed=True), gpt._remember)

    def astream(self, request: ChatRequest) -> AsyncTextStream:
        from moodlemate.ai._streaming import AsyncTextStream

        request, gpt = replace(request, stream=True), self.gpt
        if gpt.fallbacks:
            from moodlemate.ai._fallback_streams import AsyncFallbackStream

            chain = gpt._chain(request, self.run_turn(), self.target)
            return AsyncFallbackStream(chain, gpt._remember)
        return AsyncTextStream(self.call(request, streamed=True), gpt._remember)


# -- the engine: sync ----------------------------------------------------------------------------


def run_events(loop: RunLoop, *, streamed: bool) -> Generator[RunEvent, None, Run]:
    """The run as events, between the run hooks; returns the Run (also ``loop.result``)."""
    hooks = loop.hooks
    if hooks is None:
        return (yield from _turns(loop, streamed))
    hooks.started(loop.id, loop.request, loop.provider.name, loop.endpoint)
    try:
        run = yield from _turns(loop, streamed)
    except BaseException as exc:
        hooks.ended(loop.id, getattr(exc, "run", None) or loop.partial(), exc)
        raise
    hooks.ended(loop.id, run, None)
    return run


def _turns(loop: RunLoop, streamed: bool) -> Generator[RunEvent, None, Run]:
    while True:
        request = loop.next_request()
        started = time.monotonic()
        try:
            if streamed:
                completion = yield from _streamed(loop, request)
            else:
                completion = loop.send(request)
        except ServerContextWindowExceededError as exc:
            if not loop.refitted(exc, request):
                raise
            continue
        calls = loop.answered(completion, time.monotonic() - started)
        number = loop.number - 1
        for call in calls:
            yield ToolCallRequested(number, call)
        if not calls:
            yield loop.finished()
            return loop.ended("answer")
        batch = None
        ended: dict[int, ToolResult] = {}
        started = time.monotonic()
        try:
            limit = loop.out_of_turns()
            if limit is not None:
                raise limit
            batch = ToolBatch(calls, loop.tools, **loop.batch_settings())
            progress = iter(batch)
            try:
                for index, result in progress:
                    if result is None:
                        yield ToolCallStarted(number, calls[index])
                    else:
                        ended[index] = result
                        yield ToolCallFinished(number, result)
            finally:  # closed early: its running tools end before the outcomes are recorded
                progress.close()
        except BaseException as exc:
            loop.record(loop.outcomes(calls, batch, exc))
            if isinstance(exc, ToolExecutionError):
                loop.tools_ended([ended[i] for i in sorted(ended)])
            if isinstance(exc, MaxTurnsError):
                yield loop.finished()
            raise
        loop.record(loop.outcomes(calls, batch, None))
        stop = loop.ran(batch.ordered(), time.monotonic() - started)
        yield loop.finished()
        if stop:
            return loop.ended("stop_after")


def _streamed(loop: RunLoop, request: ChatRequest) -> Generator[RunEvent, None, Completion]:
    """One turn as a stream: its text deltas as they come, then its completion."""
    number = loop.number
    stream = loop.stream(request)
    try:
        with stream:
            for delta in stream:
                yield TextDelta(number, delta)
    except ReplyError:  # no text (tool calls only, say): the turn's reply all the same
        if stream.completion is None:
            raise
    except (APITimeoutError, StreamInterruptedError) as exc:
        raise loop.timed_out(exc) from exc
    assert stream.completion is not None  # set when a stream ends
    return stream.completion


def run_tools(
    gpt: Facade,
    request: ChatRequest,
    tools: Mapping[str, Tool],
    settings: RunSettings,
    refit: Refit | None = None,
) -> Run:
    """Run the tool loop for ``request`` (see the module's docstring)."""
    events = run_events(RunLoop(gpt, request, tools, settings, refit), streamed=False)
    while True:
        try:
            next(events)
        except StopIteration as stop:
            run: Run = stop.value
            return run


# -- the engine: async ---------------------------------------------------------------------------


async def arun_events(loop: RunLoop, *, streamed: bool) -> AsyncGenerator[RunEvent, None]:
    """Async :func:`run_events`; the Run is ``loop.result`` once it ends."""
    hooks = loop.hooks
    if hooks is not None:
        hooks.started(loop.id, loop.request, loop.provider.name, loop.endpoint)
    turns = _aturns(loop, streamed)
    try:
        try:
            async for event in turns:
                yield event
        finally:  # unlike `yield from`, `async for` does not pass an early close on
            await turns.aclose()
    except BaseException as exc:
        if hooks is not None:
            hooks.ended(loop.id, getattr(exc, "run", None) or loop.partial(), exc)
        raise
    if hooks is not None:
        assert loop.result is not None
        hooks.ended(loop.id, loop.result, None)


async def _aturns(loop: RunLoop, streamed: bool) -> AsyncGenerator[RunEvent, None]:
    while True:
        request = loop.next_request()
        started = time.monotonic()
        try:
            if streamed:
                stream = loop.astream(request)
                try:
                    async with stream:
                        async for delta in stream:
                            yield TextDelta(loop.number, delta)
                except ReplyError:
                    if stream.completion is None:
                        raise
                except (APITimeoutError, StreamInterruptedError) as exc:
                    raise loop.timed_out(exc) from exc
                assert stream.completion is not None
                completion = stream.completion
            else:
                completion = await loop.asend(request)
        except ServerContextWindowExceededError as exc:
            if not loop.refitted(exc, request):
                raise
            continue
        calls = loop.answered(completion, time.monotonic() - started)
        number = loop.number - 1
        for call in calls:
            yield ToolCallRequested(number, call)
        if not calls:
            yield loop.finished()
            loop.ended("answer")
            return
        batch = None
        ended: dict[int, ToolResult] = {}
        started = time.monotonic()
        try:
            limit = loop.out_of_turns()
            if limit is not None:
                raise limit
            batch = AsyncToolBatch(calls, loop.tools, **loop.batch_settings())
            progress = batch.progress()
            try:
                async for index, result in progress:
                    if result is None:
                        yield ToolCallStarted(number, calls[index])
                    else:
                        ended[index] = result
                        yield ToolCallFinished(number, result)
            finally:  # `async for` does not close it early: its tool tasks end here
                await progress.aclose()
        except BaseException as exc:
            await loop.arecord(loop.outcomes(calls, batch, exc))
            if isinstance(exc, ToolExecutionError):
                loop.tools_ended([ended[i] for i in sorted(ended)])
            if isinstance(exc, MaxTurnsError):
                yield loop.finished()
            raise
        await loop.arecord(loop.outcomes(calls, batch, None))
        stop = loop.ran(batch.ordered(), time.monotonic() - started)
        yield loop.finished()
        if stop:
            loop.ended("stop_after")
            return


async def arun_tools(
    gpt: Facade,
    request: ChatRequest,
    tools: Mapping[str, Tool],
    settings: RunSettings,
    refit: Refit | None = None,
) -> Run:
    """Async :func:`run_tools`: async tools run as tasks on this loop, sync ones in threads."""
    loop = RunLoop(gpt, request, tools, settings, refit)
    events = arun_events(loop, streamed=False)
    try:
        async for _ in events:
            pass
    finally:
        await events.aclose()
    assert loop.result is not None
    return loop.result


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
