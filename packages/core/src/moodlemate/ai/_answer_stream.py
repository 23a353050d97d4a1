"""A typed answer, streamed: the answer as far as it has arrived, then the checked whole.

Each item is the answer so far: the fields (and list items) whose values have fully arrived,
from :mod:`moodlemate.ai._partial_json`; a half-sent string is never shown. When the stream ends
the text is checked against the schema like :meth:`GPT.parse` does, and the result is
``.parsed``; a stream is one reply, so a reply that does not validate raises
StructuredOutputError rather than being asked again (use ``parse`` for that).
:class:`AsyncAnswerStream` is the async twin, over the same reading.

Working out the partial answer re-reads the text so far, so it is done only when a delta could
have completed a value and the text has grown by an eighth since the last time (so the partial
answers of a reply sent a character at a time cost a few readings of its length, not one per
delta: quadratic), and not at all past :data:`MAX_PARTIAL_CHARS` (the final answer is still
checked).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from moodlemate.ai._answer_schema import WRAPPER_KEY, AnswerProblems, AnswerSchema
from moodlemate.ai._partial_json import MISSING, complete_prefix
from moodlemate.ai.errors import StructuredOutputError, TruncatedAnswerError

if TYPE_CHECKING:
    from moodlemate.ai._provider import Completion
    from moodlemate.ai._streaming import AsyncTextStream, TextStream

__all__ = ["MAX_PARTIAL_CHARS", "AnswerStream", "AsyncAnswerStream"]

T = TypeVar("T")
MAX_PARTIAL_CHARS = 256 * 1024
_ENDS_A_VALUE = frozenset('",}]el0123456789')
_GROWTH = 8
"""The text is read again once it has grown by 1/_GROWTH since the last reading."""


class AnswerStream(Generic[T], Iterator[Any]):
    """Partial answers of one streamed typed answer; ``parsed`` once it has ended."""

    def __init__(self, stream: TextStream, answer: AnswerSchema[T]) -> None:
        self._stream = stream
        self._reader = _Reader(answer)
        self._items = _partials(stream, self._reader)

    @property
    def completion(self) -> Completion | None:
        """The full result (usage, cost) once the stream has ended."""
        return self._stream.completion

    @property
    def parsed(self) -> T:
        """The checked answer; only after the stream has ended."""
        if not self._reader.done:
            raise RuntimeError("the stream has not ended: iterate it to the end first")
        return self._reader.parsed  # type: ignore[no-any-return]

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


class AsyncAnswerStream(Generic[T], AsyncIterator[Any]):
    """Async :class:`AnswerStream`: ``async for partial in gpt.astream(..., schema=...)``."""

    def __init__(self, stream: AsyncTextStream, answer: AnswerSchema[T]) -> None:
        self._stream = stream
        self._reader = _Reader(answer)
        self._items = _apartials(stream, self._reader)

    @property
    def completion(self) -> Completion | None:
        """The full result (usage, cost) once the stream has ended."""
        return self._stream.completion

    @property
    def parsed(self) -> T:
        """The checked answer; only after the stream has ended."""
        if not self._reader.done:
            raise RuntimeError("the stream has not ended: iterate it to the end first")
        return self._reader.parsed  # type: ignore[no-any-return]

    def __aiter__(self) -> AsyncAnswerStream[T]:
        return self

    async def __anext__(self) -> Any:
        return await self._items.__anext__()

    async def aclose(self) -> None:
        await self._items.aclose()
        await self._stream.aclose()

    async def __aenter__(self) -> AsyncAnswerStream[T]:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _partials(stream: TextStream, reader: _Reader) -> Generator[Any, None, None]:
    """The partial answers, then the checked one. It references the text stream and the
    reader, never the answer stream, so dropping that closes this (and the text stream) at
    once."""
    for delta in stream:
        partial = reader.add(delta)
        if partial is not MISSING:
            yield partial
    parsed = reader.end(stream.completion)
    if not reader.was_last(parsed):
        yield parsed  # the checked answer, unless the last partial was already it


async def _apartials(stream: AsyncTextStream, reader: _Reader) -> AsyncGenerator[Any, None]:
    """Async :func:`_partials`."""
    async for delta in stream:
        partial = reader.add(delta)
        if partial is not MISSING:
            yield partial
    parsed = reader.end(stream.completion)
    if not reader.was_last(parsed):
        yield parsed


class _Reader:
    """The text so far, and the partial answer each time it is worth reading again."""

    def __init__(self, answer: AnswerSchema[Any]) -> None:
        self._answer = answer
        self._parts: list[str] = []
        self._size = self._read = 0
        self._ended = False  # a delta since the last reading could have completed a value
        self._last: Any = MISSING
        self.parsed: Any = None
        self.done = False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def add(self, delta: str) -> Any:
        """The new partial answer ``delta`` completes, or MISSING."""
        self._parts.append(delta)
        self._size += len(delta)
        size = self._size
        self._ended = self._ended or not _ENDS_A_VALUE.isdisjoint(delta)
        if not self._ended or size > MAX_PARTIAL_CHARS or size - self._read < size // _GROWTH:
            return MISSING
        self._read, self._ended = size, False
        partial = self._partial(self.text)
        if partial is MISSING or partial == self._last:
            return MISSING
        self._last = partial
        return partial

    def end(self, completion: Completion | None) -> Any:
        """Check the whole text against the schema: the answer, kept as ``parsed``."""
        self.parsed = _checked(self._answer, completion, self.text)
        self.done = True
        return self.parsed

    def was_last(self, value: Any) -> bool:
        return type(value) is type(self._last) and value == self._last

    def _partial(self, text: str) -> Any:
        try:
            value = complete_prefix(text.lstrip())
        except ValueError:
            return MISSING  # not JSON (yet): the final check will say what is wrong
        if self._answer.wrapped:
            return value.get(WRAPPER_KEY, MISSING) if isinstance(value, dict) else MISSING
        return value


def _checked(answer: AnswerSchema[T], completion: Completion | None, text: str) -> T:
    """The streamed reply's text checked against the schema (one reply: no re-ask)."""
    assert completion is not None  # the stream ended normally
    if completion.finish_reason == "length":
        raise TruncatedAnswerError(
            "the answer was cut off by the token limit before it was complete; raise "
            "max_tokens (or leave it None); the partial text is in error.partial",
            completion,
        )
    try:
        return answer.parse(text)
    except AnswerProblems as problems:
        raise StructuredOutputError(
            f"the streamed reply did not match the schema {answer.name!r}: "
            f"{'; '.join(problems.problems)[:500]}",
            (completion,),
            (problems.problems,),
        ) from None
