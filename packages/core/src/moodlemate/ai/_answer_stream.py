"""A typed answer, streamed: the answer as far as it has arrived, then the checked whole.

Each item is the answer so far: the fields (and list items) whose values have fully arrived,
from :mod:`moodlemate.ai._partial_json`; a half-sent string is never shown. When the stream ends
the text is checked against the schema like :meth:`GPT.parse` does, and the result is
``.parsed``; a stream is one reply, so a reply that does not validate raises
StructuredOutputError rather than being asked again (use ``parse`` for that).

Working out the partial answer re-reads the text so far, so it is done only when a delta could
have completed a value and the text has grown by an eighth since the last time (so the partial
answers of a reply sent a character at a time cost a few readings of its length, not one per
delta: quadratic), and not at all past :data:`MAX_PARTIAL_CHARS` (the final answer is still
checked).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from moodlemate.ai._answer_schema import WRAPPER_KEY, AnswerProblems, AnswerSchema
from moodlemate.ai._partial_json import MISSING, complete_prefix
from moodlemate.ai.errors import StructuredOutputError, TruncatedAnswerError

if TYPE_CHECKING:
    from moodlemate.ai._provider import Completion
    from moodlemate.ai._streaming import TextStream

__all__ = ["MAX_PARTIAL_CHARS", "AnswerStream"]

T = TypeVar("T")
MAX_PARTIAL_CHARS = 256 * 1024
_ENDS_A_VALUE = frozenset('",}]el0123456789')
_GROWTH = 8
"""The text is read again once it has grown by 1/_GROWTH since the last reading."""


class AnswerStream(Generic[T], Iterator[Any]):
    """Partial answers of one streamed typed answer; ``parsed`` once it has ended."""

    def __init__(self, stream: TextStream, answer: AnswerSchema[T]) -> None:
        self._stream = stream
        self._answer = answer
        self._items = self._partials()
        self._parsed: T | None = None
        self._done = False

    @property
    def completion(self) -> Completion | None:
        """The full result (usage, cost) once the stream has ended."""
        return self._stream.completion

    @property
    def parsed(self) -> T:
        """The checked answer; only after the stream has ended."""
        if not self._done:
            raise RuntimeError("the stream has not ended: iterate it to the end first")
        return self._parsed  # type: ignore[return-value]

    def __iter__(self) -> AnswerStream[T]:
        return self

    def __next__(self) -> Any:
        return next(self._items)

    def close(self) -> None:
        self._items.close()
        self._stream.close()

    def __enter__(self) -> AnswerStream[T]:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _partials(self) -> Generator[Any, None, None]:
        parts: list[str] = []
        size = read = 0
        ended = False  # a delta since the last reading could have completed a value
        last: Any = MISSING
        for delta in self._stream:
            parts.append(delta)
            size += len(delta)
            ended = ended or not _ENDS_A_VALUE.isdisjoint(delta)
            if not ended or size > MAX_PARTIAL_CHARS or size - read < size // _GROWTH:
                continue
            read, ended = size, False
            partial = self._partial("".join(parts))
            if partial is not MISSING and partial != last:
                last = partial
                yield partial
        self._finish("".join(parts))
        if not (type(self._parsed) is type(last) and self._parsed == last):
            yield self._parsed  # the checked answer, unless the last partial was already it

    def _partial(self, text: str) -> Any:
        try:
            value = complete_prefix(text.lstrip())
        except ValueError:
            return MISSING  # not JSON (yet): the final check will say what is wrong
        if self._answer.wrapped:
            return value.get(WRAPPER_KEY, MISSING) if isinstance(value, dict) else MISSING
        return value

    def _finish(self, text: str) -> None:
        completion = self._stream.completion
        assert completion is not None  # the stream ended normally
        if completion.finish_reason == "length":
            raise TruncatedAnswerError(
                "the answer was cut off by the token limit before it was complete; raise "
                "max_tokens (or leave it None); the partial text is in error.partial",
                completion,
            )
        try:
            self._parsed = self._answer.parse(text)
        except AnswerProblems as problems:
            raise StructuredOutputError(
                f"the streamed reply did not match the schema {self._answer.name!r}: "
                f"{'; '.join(problems.problems)[:500]}",
                (completion,),
                (problems.problems,),
            ) from None
        self._done = True
