"""Conversations that remember their turns and stay inside the model's context window.

Before each request the prompt is counted the way OpenAI's cookbook counts chat messages
(3 tokens per message plus its role and content, 3 to prime the reply) with the provider's
tokenizer. If that plus the output reserved for the reply exceeds the model's context
window, the oldest turns (a user message with the reply to it) are dropped until it fits;
the system message and the newest prompt always stay. Dropped turns leave the history for
good, so ``history`` is exactly the context the model saw. A server that refuses a request as
too long teaches the conversation its window: the turns are trimmed again and the request sent
once more. In a tool run that happens per model turn, keeping the run's tool calls and
results: a tool that ran is never run again.

Thread-safety: each conversation has a lock. Sync turns (:meth:`Conversation.ask`) are
serialised: a second thread's turn waits and then carries the first one. Async turns
(:meth:`Conversation.aask`, :meth:`Conversation.astream`) must not hold a thread lock across
an ``await``: each sees the history as of its start and commits when its reply arrives, so
await one turn before asking the next. A failed request leaves the history unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, overload

from moodlemate.ai._defaults import DEFAULT_SYSTEM_MESSAGE
from moodlemate.ai._message_dicts import message_from, message_to_dict
from moodlemate.ai._messages import Part, TextPart, attachment
from moodlemate.ai._options import NO_OPTIONS, Options, options_from
from moodlemate.ai._provider import ChatRequest, Message, Provider
from moodlemate.ai._replies import reply_text
from moodlemate.ai._token_count import text_counter
from moodlemate.ai._token_framing import (
    REPLY_PRIMING_TOKENS,
    count_messages,
    token_ceiling,
    wire_messages,
)
from moodlemate.ai._validation import (
    check_encodable,
    check_max_tokens,
    check_model,
    check_temperature,
    check_text,
)
from moodlemate.ai.errors import (
    ContextWindowExceededError,
    ServerContextWindowExceededError,
    TokenizerUnavailableError,
    ValidationError,
)

if TYPE_CHECKING:
    from moodlemate.ai._facade import Facade
    from moodlemate.ai._pricing import ModelInfo
    from moodlemate.ai._provider import Completion
    from moodlemate.ai._run import RunLoop
    from moodlemate.ai._streaming import AsyncTextStream, TextStream
    from moodlemate.ai._tool_calls import Approval
    from moodlemate.ai._tools import Tool


class Host(Protocol):
    """What a conversation needs of its GPT (a protocol, so this module does not import the
    facade that imports it)."""

    @property
    def model(self) -> str: ...

    def route(self, model: str) -> tuple[Provider, str]: ...

    def send(self, request: ChatRequest) -> Completion: ...

    async def asend(self, request: ChatRequest) -> Completion: ...

    def stream_request(self, request: ChatRequest) -> TextStream: ...

    def astream_request(self, request: ChatRequest) -> AsyncTextStream: ...

    def model_info(self, model: str | None = None) -> ModelInfo | None: ...

    def context_window(self, model: str | None = None) -> int | None: ...


__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "DEFAULT_OUTPUT_RESERVE",
    "Conversation",
    "count_chat_tokens",
]

log = logging.getLogger("moodlemate.ai")
T = TypeVar("T")

DEFAULT_CONTEXT_WINDOW = 8_192
"""Assumed when the provider does not know the model's window: small enough for most models."""
DEFAULT_OUTPUT_RESERVE = 1_024
"""Tokens kept free for the reply when ``max_tokens`` is None (capped by the model's own
output limit and by a quarter of its window)."""
FORMAT_VERSION = 1


def count_chat_tokens(provider: Provider, model: str, messages: tuple[Message, ...]) -> int:
    """Prompt tokens of ``messages``, counted as OpenAI's cookbook does for chat models; a
    conservative estimate when the provider has no tokenizer data (trimming never fails for it,
    see :func:`moodlemate.ai._token_count.estimate_tokens`). Parts count as the provider
    counts them (:meth:`Provider.count_input_tokens`)."""
    text = count_messages(wire_messages(messages), text_counter(provider, model))
    if all(isinstance(m.content, str) for m in messages):
        return text
    request = ChatRequest(model, messages)
    try:
        return text + provider.count_input_tokens(request).tokens
    except TokenizerUnavailableError:
        return text + token_ceiling(messages)


class Conversation:
    """A named chat with memory; get one from :meth:`GPT.conversation`.

    ``model`` None follows the GPT's default model at each turn. ``max_tokens`` caps each
    reply and is the output reserved when trimming. ``tools`` are used by every turn that
    names neither tools nor a schema (so :meth:`GPT.context_assistant` can call them).
    """

    def __init__(
        self,
        gpt: Host,
        name: str,
        *,
        system_message: str | None = None,
        model: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        tools: Iterable[object] = (),
    ) -> None:
        self._gpt = gpt
        self.name = name
        self._lock = threading.Lock()  # guards the state, briefly
        self._turn_lock = threading.Lock()  # serialises sync turns, across the request
        self._turns: list[Message] = []
        self._server_window: int | None = None  # learned from a server's refusal
        self._scale = 1.0  # the server's tokens per token we count, once learned
        self.system_message = DEFAULT_SYSTEM_MESSAGE if system_message is None else system_message
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._options: Options = NO_OPTIONS
        self._extra: Mapping[str, Any] = {}
        self._tools: tuple[Tool, ...] = ()
        self.tools = tools
        self.before_tool_call: Approval | None = None
        """The approval hook of this conversation's tool runs (as ``GPT.run``'s): called
        with each tool call before it runs; not saved."""

    # -- settings, validated on assignment -----------------------------------------------

    @property
    def system_message(self) -> str:
        return self._system

    @system_message.setter
    def system_message(self, value: str) -> None:
        self._system = check_text(value, "system_message")

    @property
    def model(self) -> str | None:
        return self._model

    @model.setter
    def model(self, value: str | None) -> None:
        self._model = None if value is None else check_model(value)

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = check_temperature(value)

    @property
    def max_tokens(self) -> int | None:
        return self._max_tokens

    @max_tokens.setter
    def max_tokens(self, value: int | None) -> None:
        self._max_tokens = check_max_tokens(value)

    @property
    def options(self) -> Options:
        """Request options every turn is sent with (:class:`Options`, or a mapping of
        them); not saved with the conversation."""
        return self._options

    @options.setter
    def options(self, value: Options | Mapping[str, Any] | None) -> None:
        self._options = options_from(value)

    @property
    def extra(self) -> Mapping[str, Any]:
        """Fields every turn's request carries as they are (not saved)."""
        return self._extra

    @extra.setter
    def extra(self, value: Mapping[str, Any] | None) -> None:
        if value is not None and not isinstance(value, Mapping):
            raise ValidationError(f"extra must be a mapping, not {type(value).__name__}")
        self._extra = dict(value or {})

    @property
    def tools(self) -> tuple[Tool, ...]:
        """The tools of every turn that names neither tools nor a schema: each such turn is a
        tool run (as :meth:`GPT.run`). Set functions, :class:`Tool` values or
        ``(definition, function)`` pairs; checked when set; not saved."""
        return self._tools

    @tools.setter
    def tools(self, value: Iterable[object] | None) -> None:
        found = [] if value is None else [value] if callable(value) else list(value)
        if not found:
            self._tools = ()
            return
        from moodlemate.ai._tools import tool_set

        self._tools = tuple(tool_set(found).values())

    # -- turns ---------------------------------------------------------------------------

    @property
    def history(self) -> tuple[Message, ...]:
        """The remembered turns, oldest first, without the system message."""
        with self._lock:
            return tuple(self._turns)

    @overload
    def ask(
        self,
        prompt: str,
        *,
        attachments: Iterable[Attachment] = (),
        schema: None = None,
        tools: Iterable[object] | None = None,
        max_attempts: int = 3,
        max_turns: int = 8,
    ) -> str: ...

    @overload
    def ask(
        self,
        prompt: str,
        *,
        attachments: Iterable[Attachment] = (),
        schema: type[T] | Any,
        tools: Iterable[object] | None = None,
        max_attempts: int = 3,
        max_turns: int = 8,
    ) -> T: ...

    def ask(
        self,
        prompt: str,
        *,
        attachments: Iterable[Attachment] = (),
        schema: Any = None,
        tools: Iterable[object] | None = None,
        max_attempts: int = 3,
        max_turns: int = 8,
    ) -> Any:
        """Send ``prompt`` with the history that fits, remember both, return the reply.
        ``attachments`` (parts, or paths, URLs and bytes read as an image, a PDF or audio)
        go with the prompt in the same user turn, and stay in the history.

        With ``schema`` the reply is a typed answer (as :meth:`GPT.parse`, re-asked up to
        ``max_attempts`` replies; the history keeps the question and the valid answer's text).
        With ``tools`` the turn is a tool run (as :meth:`GPT.run`, up to ``max_turns`` model
        turns; the history keeps every tool call and result, and the answer). ``tools`` None
        (the default) uses the conversation's :attr:`tools` when no ``schema`` is given;
        ``tools=()`` asks without them.

        A server that refuses the request as too long: older turns are dropped to fit the
        window it states and the request is sent once more (a second refusal is raised). In a
        tool run the refused model turn is sent again with the run's calls and results so far:
        each tool call the model asked for runs once."""
        question = _question(prompt, attachments)
        turn = _Turn.of(
            schema, self._turn_tools(schema, tools), max_attempts, max_turns, self.before_tool_call
        )
        with self._turn_lock:
            fit = _Fit(self, question)
            try:
                replies, answer = turn.send(self._gpt, fit)
            except ServerContextWindowExceededError as exc:
                if turn.tools is not None:
                    raise  # refused again after the run refitted: its tools ran once already
                fit(exc, fit.request.messages)
                replies, answer = turn.send(self._gpt, fit)
            self._commit(fit.dropped, question, *replies)
            return answer

    def stream(self, prompt: str, *, attachments: Iterable[Attachment] = ()) -> Iterator[str]:
        """:meth:`ask`, yielding the reply's text as it arrives. The turn is remembered once
        the reply is complete; a failed or abandoned stream leaves the history unchanged. A
        server that refuses the prompt as too long is handled as :meth:`ask` handles it.
        With the conversation's :attr:`tools` the turn is a streamed tool run (as
        :meth:`GPT.run_stream`): the text of every model turn is yielded, a line break after
        a turn's text when it asks for tools (an approval prompt then starts on its own line).
        Sync turns wait for it: consume it to the end, or close it."""
        question = _question(prompt, attachments)
        with self._turn_lock:
            fit = _Fit(self, question)
            if self._tools:
                yield from self._stream_run(fit)
                return
            for retry in (False, True):
                parts: list[str] = []
                try:
                    with self._gpt.stream_request(fit.request) as deltas:
                        for delta in deltas:
                            parts.append(delta)
                            yield delta
                except ServerContextWindowExceededError as exc:
                    if parts or retry:
                        raise
                    fit(exc, fit.request.messages)  # as ask does
                    continue
                self._commit(fit.dropped, question, Message("assistant", "".join(parts)))
                return

    def _stream_run(self, fit: _Fit) -> Iterator[str]:
        from moodlemate.ai._run_stream import RunStream

        shown = _RunText()
        with RunStream(self._run_loop(fit)) as stream:
            for event in stream:
                text = shown(event)
                if text:
                    yield text
        self._commit_run(fit, stream.run)

    async def astream(
        self, prompt: str, *, attachments: Iterable[Attachment] = ()
    ) -> AsyncIterator[str]:
        """Async :meth:`stream`: ``async for delta in conversation.astream(...)``, a tool run
        through :meth:`GPT.arun_stream` (see the module docstring on concurrent turns)."""
        question = _question(prompt, attachments)
        fit = _Fit(self, question)
        if self._tools:
            from moodlemate.ai._run_stream import AsyncRunStream

            shown = _RunText()
            async with AsyncRunStream(self._run_loop(fit)) as stream:
                async for event in stream:
                    text = shown(event)
                    if text:
                        yield text
            self._commit_run(fit, stream.run)
            return
        for retry in (False, True):
            parts: list[str] = []
            try:
                async with self._gpt.astream_request(fit.request) as deltas:
                    async for delta in deltas:
                        parts.append(delta)
                        yield delta
            except ServerContextWindowExceededError as exc:
                if parts or retry:
                    raise
                fit(exc, fit.request.messages)  # as aask does
                continue
            self._commit(fit.dropped, question, Message("assistant", "".join(parts)))
            return

    def _run_loop(self, fit: _Fit) -> RunLoop:
        """The streamed tool run of a turn with the conversation's tools."""
        from moodlemate.ai._run import RunLoop, RunSettings
        from moodlemate.ai._tools import tool_set

        settings = RunSettings(before_tool_call=self.before_tool_call)
        gpt = cast("Facade", self._gpt)
        return RunLoop(gpt, fit.request, tool_set(self._tools), settings, fit)

    def _commit_run(self, fit: _Fit, run: Any) -> None:
        assert run is not None  # a run that ends without raising has its result
        replies, _ = _Turn._ran(fit.request, run)
        self._commit(fit.dropped, fit.question, *replies)

    @overload
    async def aask(
        self,
        prompt: str,
        *,
        attachments: Iterable[Attachment] = (),
        schema: None = None,
        tools: Iterable[object] | None = None,
        max_attempts: int = 3,
        max_turns: int = 8,
    ) -> str: ...

    @overload
    async def aask(
        self,
        prompt: str,
        *,
        attachments: Iterable[Attachment] = (),
        schema: type[T] | Any,
        tools: Iterable[object] | None = None,
        max_attempts: int = 3,
        max_turns: int = 8,
    ) -> T: ...

    async def aask(
        self,
        prompt: str,
        *,
        attachments: Iterable[Attachment] = (),
        schema: Any = None,
        tools: Iterable[object] | None = None,
        max_attempts: int = 3,
        max_turns: int = 8,
    ) -> Any:
        """Async :meth:`ask` (see the module docstring on concurrent turns)."""
        question = _question(prompt, attachments)
        turn = _Turn.of(
            schema, self._turn_tools(schema, tools), max_attempts, max_turns, self.before_tool_call
        )
        fit = _Fit(self, question)
        try:
            replies, answer = await turn.asend(self._gpt, fit)
        except ServerContextWindowExceededError as exc:
            if turn.tools is not None:
                raise  # as in ask
            fit(exc, fit.request.messages)
            replies, answer = await turn.asend(self._gpt, fit)
        self._commit(fit.dropped, question, *replies)
        return answer

    def _turn_tools(self, schema: Any, tools: Iterable[object] | None) -> Iterable[object]:
        """A turn's tools: those it names, else the conversation's (unless it asks for a
        typed answer)."""
        if tools is not None:
            return tools
        return self._tools if schema is None else ()

    def _refit(
        self,
        prompt: Message,
        sent: tuple[Message, ...],
        exc: ServerContextWindowExceededError,
        tail: tuple[Message, ...] = (),
    ) -> tuple[int, ChatRequest]:
        """After the server refused ``sent`` as too long: learn its window and how far our
        count fell short of its tokenizer's, then trim again, room kept for a tool run's
        ``tail`` (the caller tries once more; a second refusal is raised)."""
        provider, model = self._gpt.route(check_model(self.model or self._gpt.model))
        ours = count_chat_tokens(provider, model, sent)
        theirs = exc.prompt_tokens
        scale = theirs / ours if theirs and ours else 2.0
        with self._lock:
            if exc.window:
                self._server_window = exc.window
            self._scale = max(self._scale, scale * 1.05)  # a margin for the reply's priming
        log.info(
            "conversation %r: the server's window is %s tokens and its count %.2fx ours; "
            "trimming again",
            self.name,
            exc.window or "unknown",
            self._scale,
        )
        return self._prepare(prompt, tail)

    def reset(self) -> None:
        """Forget every turn; the settings stay."""
        with self._lock:
            self._turns = []

    # -- JSON ----------------------------------------------------------------------------

    def to_json(self, *, inline: bool = False) -> str:
        """Settings and turns as JSON; :meth:`load_json` restores them exactly.

        An image, PDF or audio clip read from a local file is saved as a reference to that
        file (read and checked again on load) unless ``inline`` is True; parts given as
        bytes are always inline, as base64, which takes 4/3 of their size in the document."""
        with self._lock:
            data = {
                "version": FORMAT_VERSION,
                "name": self.name,
                "model": self.model,
                "system_message": self.system_message,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "turns": [message_to_dict(m, inline=inline) for m in self._turns],
            }
        return json.dumps(data, ensure_ascii=False, indent=2)

    def load_json(self, text: str) -> None:
        """Replace this conversation's settings and turns with a :meth:`to_json` document
        (the name stays). Invalid documents raise ValidationError and change nothing."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValidationError(f"conversation JSON is not valid JSON: {exc}") from None
        except RecursionError:
            raise ValidationError("conversation JSON is nested too deeply to read") from None
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValidationError(f"not a conversation document (format version {FORMAT_VERSION})")
        turns = [_message(item) for item in _list(data.get("turns"))]
        check = Conversation(
            self._gpt,
            self.name,
            system_message=data.get("system_message"),
            model=data.get("model"),
            temperature=data.get("temperature", 0.7),
            max_tokens=data.get("max_tokens"),
        )
        with self._turn_lock, self._lock:
            self.system_message = check.system_message
            self.model = check.model
            self.temperature = check.temperature
            self.max_tokens = check.max_tokens
            self._turns = turns

    def save(self, path: str | os.PathLike[str], *, inline: bool = False) -> None:
        """Write :meth:`to_json` to ``path`` (UTF-8); ``inline`` as there."""
        Path(path).write_text(self.to_json(inline=inline) + "\n", encoding="utf-8")

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore from a file written by :meth:`save`."""
        self.load_json(Path(path).read_text(encoding="utf-8"))

    def __repr__(self) -> str:
        return f"<Conversation {self.name!r} turns={len(self._turns)} model={self.model!r}>"

    # -- internals -----------------------------------------------------------------------

    def _prepare(self, prompt: Message, tail: tuple[Message, ...] = ()) -> tuple[int, ChatRequest]:
        """How many of the oldest turns to drop, and the request that fits the window (with
        room for ``tail``, a tool run's messages so far, which the request does not hold)."""
        model = check_model(self.model or self._gpt.model)
        provider, counted = self._gpt.route(model)
        system = (Message("system", self._system),) if self._system else ()
        question = (prompt, *tail)
        with self._lock:
            turns = list(self._turns)
            start = len(turns)
            scale = self._scale
        budget = int(self._window(model) / scale)
        messages = (*system, *turns, *question)
        if token_ceiling(messages) <= budget:
            # Far below the window: no token is counted (nor the tokenizer loaded).
            return 0, self._request(model, (*system, *turns, prompt))
        used = count_chat_tokens(provider, counted, messages)
        dropped = 0
        while used > budget and turns:
            # Drop the oldest user message together with the replies that answer it.
            cut = 1
            while cut < len(turns) and turns[cut].role != "user":
                cut += 1
            used -= count_chat_tokens(provider, counted, tuple(turns[:cut])) - REPLY_PRIMING_TOKENS
            del turns[:cut]
            dropped += 1
        if used > budget:
            what = "prompt and the tool run so far" if tail else "prompt"
            raise ContextWindowExceededError(
                f"the system message and {what} take {used} tokens; {model!r} leaves {budget} "
                f"for the prompt after reserving room for the reply"
            )
        if dropped:
            log.info(
                "conversation %r: dropped the %d oldest turns to fit %s's context window",
                self.name,
                dropped,
                model,
            )
        return start - len(turns), self._request(model, (*system, *turns, prompt))

    def _request(self, model: str, messages: tuple[Message, ...]) -> ChatRequest:
        return ChatRequest(
            model=model,
            messages=messages,
            temperature=self._temperature,
            max_tokens=self._max_tokens,
            extra=self._extra,
            options=self._options,
        )

    def _window(self, model: str) -> int:
        """Prompt tokens allowed: the context window (the one a server said, else the
        model's as the tables or the server's listing give it, else a default) less the
        output reserved for the reply."""
        info = self._gpt.model_info(model)
        window = self._server_window or self._gpt.context_window(model) or DEFAULT_CONTEXT_WINDOW
        if self._max_tokens is not None:
            reserve = self._max_tokens
        else:
            limit = (info.max_output_tokens if info else None) or DEFAULT_OUTPUT_RESERVE
            reserve = min(limit, DEFAULT_OUTPUT_RESERVE, window // 4)
        return window - reserve

    def _commit(self, dropped: int, prompt: Message, *replies: Message) -> None:
        """Drop from the front, append at the end: turns committed meanwhile survive."""
        with self._lock:
            self._turns = [*self._turns[dropped:], prompt, *replies]


class _Fit:
    """A turn's request that fits the window, and how many old turns it drops. Called after
    the server refused a request as too long, it trims again (``tail``: a tool run's messages
    so far, kept after the question) and returns the messages before the tail."""

    def __init__(self, conversation: Conversation, question: Message) -> None:
        self.conversation = conversation
        self.question = question
        self.dropped, self.request = conversation._prepare(question)

    def __call__(
        self,
        exc: ServerContextWindowExceededError,
        sent: tuple[Message, ...],
        tail: tuple[Message, ...] = (),
    ) -> tuple[Message, ...]:
        self.dropped, self.request = self.conversation._refit(self.question, sent, exc, tail)
        return self.request.messages


class _RunText:
    """The text a streamed run shows as one reply: every model turn's text, and a line break
    after a turn's text when it asks for tools (an approval prompt starts on its own line)."""

    def __init__(self) -> None:
        self.last = ""

    def __call__(self, event: object) -> str:
        from moodlemate.ai._run_events import TextDelta, ToolCallRequested

        if isinstance(event, TextDelta) and event.text:
            self.last = event.text
        elif isinstance(event, ToolCallRequested) and self.last and not self.last.endswith("\n"):
            self.last = "\n"
        else:
            return ""
        return self.last


class _Turn:
    """How one turn is sent: a plain reply, a typed answer or a tool run; each gives the
    messages the history keeps after the question, and what :meth:`Conversation.ask` returns."""

    def __init__(self, answer: Any, tools: Any, max_attempts: int, run: Any) -> None:
        self.answer = answer
        self.tools = tools
        self.max_attempts = max_attempts
        self.run = run

    @classmethod
    def of(
        cls,
        schema: Any,
        tools: Iterable[object],
        max_attempts: int,
        max_turns: int,
        approve: Approval | None = None,
    ) -> _Turn:
        """Checked before anything is sent."""
        found = list(tools) if not isinstance(tools, str) else [tools]
        if schema is not None and found:
            raise ValidationError("a turn takes a schema or tools, not both")
        if schema is not None:
            from moodlemate.ai._answer_schema import answer_schema
            from moodlemate.ai._structured import check_attempts

            return cls(answer_schema(schema), None, check_attempts(max_attempts), None)
        if found:
            from moodlemate.ai._run import RunSettings
            from moodlemate.ai._tools import tool_set

            settings = RunSettings(max_turns=max_turns, before_tool_call=approve)
            return cls(None, tool_set(found), max_attempts, settings)
        return cls(None, None, max_attempts, None)

    def send(self, gpt: Host, fit: _Fit) -> tuple[tuple[Message, ...], Any]:
        request = fit.request
        if self.answer is not None:
            from moodlemate.ai._structured import run_typed

            typed = run_typed(cast("Facade", gpt), request, self.answer, self.max_attempts)
            return (Message("assistant", typed.text),), typed.parsed
        if self.tools is not None:
            from moodlemate.ai._run import run_tools

            run = run_tools(cast("Facade", gpt), request, self.tools, self.run, fit)
            return self._ran(fit.request, run)
        completion = gpt.send(request)
        text = reply_text(completion, request.max_tokens)  # no answer: history unchanged
        return (completion.message,), text

    async def asend(self, gpt: Host, fit: _Fit) -> tuple[tuple[Message, ...], Any]:
        request = fit.request
        if self.answer is not None:
            from moodlemate.ai._structured import arun_typed

            typed = await arun_typed(cast("Facade", gpt), request, self.answer, self.max_attempts)
            return (Message("assistant", typed.text),), typed.parsed
        if self.tools is not None:
            from moodlemate.ai._run import arun_tools

            run = await arun_tools(cast("Facade", gpt), request, self.tools, self.run, fit)
            return self._ran(fit.request, run)
        completion = await gpt.asend(request)
        text = reply_text(completion, request.max_tokens)
        return (completion.message,), text

    @staticmethod
    def _ran(request: ChatRequest, run: Any) -> tuple[tuple[Message, ...], Any]:
        last = run.turns[-1].completion
        text = reply_text(last, request.max_tokens)
        return tuple(run.messages[len(request.messages) :]), text


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValidationError("conversation JSON needs a 'turns' list")
    return value


def _message(item: Any) -> Message:
    if not isinstance(item, dict) or item.get("role") not in ("user", "assistant", "tool"):
        shown = repr(item)[:80]
        raise ValidationError(f"conversation turn {shown} is not a user, assistant or tool turn")
    return message_from(item, "conversation turn")


Attachment = Part | bytes | str | os.PathLike[str]


def _question(prompt: str, attachments: Iterable[Attachment]) -> Message:
    text = check_encodable(check_text(prompt, "prompt"), "prompt")
    if isinstance(attachments, str | bytes):
        raise ValidationError("attachments must be a list (of parts, paths, URLs or bytes)")
    parts = tuple(attachment(a) for a in attachments)
    if not parts:
        return Message("user", text)
    return Message("user", (TextPart(text), *parts) if text else parts)
