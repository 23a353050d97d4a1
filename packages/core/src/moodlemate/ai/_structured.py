"""Typed answers: ask for a schema, check the reply, ask again with what was wrong, within bounds.

One attempt is one :class:`~moodlemate.ai._call.Call` (so each is reserved against the budget,
retried under the policy, priced, logged and hooked like any call); this module adds only what
is about the answer:

* the format, from the provider (:meth:`Provider.answer_format`): strict ``json_schema``,
  ``json_object`` with the schema in the instructions, or the instructions alone. A server that
  refuses the format with a 400 is asked again in the next mode at once (that attempt was not
  billed), and the mode is remembered for that endpoint and model, logged once;
* the check (:mod:`moodlemate.ai._answer_schema`): a reply that does not parse or validate is
  answered with its problems and the model asked again, up to ``max_attempts`` replies, all
  within one deadline (the retry policy's, for the whole run) and the instance's budget;
* what is never re-asked: a refusal (RefusalError), a reply cut by the token limit
  (TruncatedAnswerError: the same request would be cut again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from moodlemate.ai._answer_format import AnswerFormat, AnswerMode, fallback_modes
from moodlemate.ai._answer_schema import AnswerProblems, AnswerSchema
from moodlemate.ai._call_types import ChatRequest, Completion, Message
from moodlemate.ai._replies import reply_text
from moodlemate.ai._usage import Usage, summed_cost
from moodlemate.ai.errors import (
    APITimeoutError,
    BadRequestError,
    ReplyError,
    StructuredOutputError,
    TruncatedAnswerError,
    ValidationError,
)

if TYPE_CHECKING:
    from moodlemate.ai._facade import Facade

__all__ = [
    "TypedCompletion",
    "arun_typed",
    "checked_answer",
    "run_typed",
    "typed_format",
    "typed_request",
    "with_format",
]

log = logging.getLogger("moodlemate.ai")

T = TypeVar("T")
MAX_ATTEMPTS = 10
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "structured output")

_learned: dict[tuple[str, str], AnswerMode] = {}
_learned_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class TypedCompletion(Generic[T]):
    """A typed answer and every call it took."""

    parsed: T
    """The answer, as the schema's type."""
    completions: tuple[Completion, ...]
    """Every reply, in order; the last is the one that parsed."""
    problems: tuple[tuple[str, ...], ...] = ()
    """What was wrong with each reply before the last (fed back to the model)."""
    mode: AnswerMode = "json_schema"
    """How the schema was asked for (the last attempt's mode)."""

    @property
    def attempts(self) -> int:
        """Replies the answer took (each billed)."""
        return len(self.completions)

    @property
    def completion(self) -> Completion:
        return self.completions[-1]

    @property
    def text(self) -> str:
        return self.completions[-1].text

    @property
    def usage(self) -> Usage:
        total = Usage()
        for completion in self.completions:
            total = total + completion.usage
        return total

    @property
    def cost(self) -> Decimal | None:
        """The summed cost of every attempt; None when any attempt's cost is unknown."""
        return summed_cost(c.cost for c in self.completions)


def check_attempts(max_attempts: int) -> int:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
        raise ValidationError("max_attempts must be an int")
    if not 1 <= max_attempts <= MAX_ATTEMPTS:
        raise ValidationError(f"max_attempts must be between 1 and {MAX_ATTEMPTS}")
    return max_attempts


class _Run:
    """The state of one typed run: the conversation so far, the mode, the attempts."""

    def __init__(
        self, gpt: Facade, request: ChatRequest, answer: AnswerSchema[Any], max_attempts: int
    ):
        self.gpt = gpt
        self.request = request
        self.answer = answer
        self.max_attempts = check_attempts(max_attempts)
        self.provider, self.model = gpt.route(request.model)
        self.endpoint = gpt.provider_connection(request.model)[1].endpoint
        self.key = (self.endpoint, self.model)
        with _learned_lock:
            learned = _learned.get(self.key)
        self.format = self._format(learned)
        self.history: list[Message] = []
        self.completions: list[Completion] = []
        self.problems: list[tuple[str, ...]] = []
        self.deadline = time.monotonic() + gpt.retry.deadline

    def _format(self, mode: AnswerMode | None) -> AnswerFormat:
        return self.provider.answer_format(self.model, self.answer.name, self.answer.schema, mode)

    def next_request(self) -> ChatRequest | None:
        """The request for the next attempt, or None when the attempts are used up."""
        if len(self.completions) >= self.max_attempts:
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise APITimeoutError(
                f"the typed answer's deadline ({self.gpt.retry.deadline:g} s) ran out after "
                f"{len(self.completions)} replies"
            )
        return with_format(self.request, self.format, self.history)

    def refused_format(self, exc: BadRequestError) -> bool:
        """True when ``exc`` is the server refusing the answer format: switch to the next."""
        text = str(exc).lower()
        if not any(word in text for word in _FORMAT_WORDS):
            return False
        following = fallback_modes(self.format.mode)
        if not following:
            return False
        mode = following[0]
        with _learned_lock:
            first = _learned.get(self.key) != mode
            _learned[self.key] = mode
        if first:
            log.info(
                "%s at %s refused %s answers; asking in %s mode instead",
                self.model,
                self.endpoint,
                self.format.mode,
                mode,
            )
        self.format = self._format(mode)
        return True

    def check(self, completion: Completion) -> tuple[bool, Any]:
        """``(True, answer)`` when ``completion`` parses; else record why and ``(False, None)``.
        A reply that ends the run (a refusal, a cut-off answer) raises its ReplyError with
        every attempt in ``completions``, so its ``cost`` is the run's."""
        self.completions.append(completion)
        try:
            return True, checked_answer(self.answer, completion)
        except AnswerProblems as problems:
            self.answered_wrongly(completion, problems.problems)
            return False, None
        except ReplyError as exc:
            exc.completions = tuple(self.completions)
            raise

    def answered_wrongly(self, completion: Completion, problems: tuple[str, ...]) -> None:
        """Note a reply that did not fit and why; the next attempt is told."""
        if not self.completions or self.completions[-1] is not completion:
            self.completions.append(completion)
        self.problems.append(problems)
        self.history += [
            Message("assistant", completion.text),
            Message("user", _feedback(problems)),
        ]

    def result(self, parsed: Any) -> TypedCompletion[Any]:
        return TypedCompletion(
            parsed=parsed,
            completions=tuple(self.completions),
            problems=tuple(self.problems),
            mode=self.format.mode,
        )

    def failure(self) -> StructuredOutputError:
        last = "; ".join(self.problems[-1]) if self.problems else "no reply"
        return StructuredOutputError(
            f"no reply matched the schema {self.answer.name!r} in {len(self.completions)} "
            f"attempts; the last: {last[:500]}",
            tuple(self.completions),
            tuple(self.problems),
        )

    def trimmed_policy_send(self, request: ChatRequest) -> Callable[[], Completion]:
        gpt = self.gpt
        remaining = max(self.deadline - time.monotonic(), 0.001)

        def send() -> Completion:
            if gpt.fallbacks:
                return gpt.send(request)
            call = gpt.prepare(request)
            call = replace(call, policy=replace(call.policy, deadline=remaining))
            completion = call.send()
            gpt._remember(completion)
            return completion

        return send

    def trimmed_policy_asend(self, request: ChatRequest) -> Callable[[], Awaitable[Completion]]:
        gpt = self.gpt
        remaining = max(self.deadline - time.monotonic(), 0.001)

        async def send() -> Completion:
            if gpt.fallbacks:
                return await gpt.asend(request)
            call = gpt.prepare(request)
            call = replace(call, policy=replace(call.policy, deadline=remaining))
            completion = await call.asend()
            gpt._remember(completion)
            return completion

        return send


def checked_answer(answer: AnswerSchema[T], completion: Completion) -> T:
    """The reply's answer, parsed and validated: the one check of every typed reply, live
    or from a remote batch. Raises TruncatedAnswerError (cut by the token limit),
    RefusalError or EmptyReplyError (no answer to check), AnswerProblems (not valid)."""
    if completion.finish_reason == "length":
        raise TruncatedAnswerError(
            "the answer was cut off by the token limit before it was complete; raise "
            "max_tokens (or leave it None); the partial text is in error.partial",
            completion,
        )
    return answer.parse(reply_text(completion))


def run_typed(
    gpt: Facade,
    request: ChatRequest,
    answer: AnswerSchema[T],
    max_attempts: int,
    *,
    earlier: tuple[Completion, tuple[str, ...]] | None = None,
) -> TypedCompletion[T]:
    """Send ``request`` for an answer following ``answer`` (see the module's docstring).

    ``earlier``: a reply already received and found wrong (a remote batch's), and its
    problems: the run goes on from it, which counts as the first of ``max_attempts``."""
    run = _Run(gpt, request, answer, max_attempts)
    if earlier is not None:
        run.answered_wrongly(*earlier)
    while (next_request := run.next_request()) is not None:
        try:
            completion = run.trimmed_policy_send(next_request)()
        except BadRequestError as exc:
            if run.refused_format(exc):
                continue
            raise
        ok, parsed = run.check(completion)
        if ok:
            return run.result(parsed)
    raise run.failure()


async def arun_typed(
    gpt: Facade, request: ChatRequest, answer: AnswerSchema[T], max_attempts: int
) -> TypedCompletion[T]:
    """Async :func:`run_typed`."""
    run = _Run(gpt, request, answer, max_attempts)
    while (next_request := run.next_request()) is not None:
        try:
            completion = await run.trimmed_policy_asend(next_request)()
        except BadRequestError as exc:
            if run.refused_format(exc):
                continue
            raise
        ok, parsed = run.check(completion)
        if ok:
            return run.result(parsed)
    raise run.failure()


def typed_request(gpt: Facade, request: ChatRequest, answer: AnswerSchema[Any]) -> ChatRequest:
    """``request`` asking for ``answer`` in the format the model takes (for a stream: one
    reply, no re-asks)."""
    run = _Run(gpt, request, answer, 1)
    built = run.next_request()
    assert built is not None
    return built


def typed_format(gpt: Facade, request: ChatRequest, answer: AnswerSchema[Any]) -> AnswerFormat:
    """The format ``request``'s model is asked for ``answer`` in: the mode its server taught
    us, else the provider's rules. A remote batch works it out once per schema and model."""
    return _Run(gpt, request, answer, 1).format


def with_format(
    request: ChatRequest, answer_format: AnswerFormat, history: Sequence[Message] = ()
) -> ChatRequest:
    """``request`` asking in ``answer_format`` (its fields, its instructions after the first
    system text), followed by ``history``: what every typed attempt sends."""
    messages = list(request.messages)
    if answer_format.instructions:
        messages = _with_instructions(messages, answer_format.instructions)
    extra = {**request.extra, **answer_format.fields}
    return replace(request, messages=(*messages, *history), extra=extra, stream=False)


def _with_instructions(messages: list[Message], instructions: str) -> list[Message]:
    """The schema's instructions after the first system text, or as a system turn of their own."""
    for i, message in enumerate(messages):
        if message.role in ("system", "developer") and isinstance(message.content, str):
            joined = f"{message.content}\n\n{instructions}" if message.content else instructions
            return [*messages[:i], replace(message, content=joined), *messages[i + 1 :]]
    return [Message("system", instructions), *messages]


def _feedback(problems: tuple[str, ...]) -> str:
    listed = "\n".join(f"- {problem}" for problem in problems)
    return (
        f"Your reply was not a valid answer:\n{listed}\nReply again with only the corrected JSON."
    )
