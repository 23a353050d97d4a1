"""Streams over a fallback chain: an entry that fails before its first delta hands the
stream to the next entry; after the first delta, text has reached the caller and errors pass
through as they are (see :mod:`moodlemate.ai._fallbacks`)."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING

from moodlemate.ai._fallbacks import FallbackChain
from moodlemate.ai._streaming import AsyncTextStream, StreamCall, Streamed, TextStream
from moodlemate.ai.errors import MoodlemateError, ReplyError

if TYPE_CHECKING:
    from moodlemate.ai._provider import Completion

__all__ = ["AsyncFallbackStream", "FallbackStream"]


class _Chained(Streamed):
    """A stream's working state (see ``_streaming.Streamed``), driven by the chain instead of
    one StreamCall; its generators reference this, never the public stream."""

    def __init__(self, chain: FallbackChain, remember: Callable[[Completion], None]) -> None:
        super().__init__()
        self.chain = chain
        self.remember = remember

    def answered_without_text(
        self, index: int, inner: TextStream | AsyncTextStream, exc: Exception
    ) -> None:
        """A refusal or empty reply is an answer: the hooks see the completed call (as they
        do without fallbacks), then the ReplyError reaches the caller."""
        if isinstance(exc, ReplyError) and inner.completion is not None:
            exc.failed_before = tuple(self.chain.failures)
            self.finish(index, inner)
            raise exc

    def finish(self, index: int, inner: TextStream | AsyncTextStream) -> None:
        if inner.completion is None:  # closed early: nothing to account, as without fallbacks
            return
        self.completion = self.chain.served(index, inner.completion)
        self.remember(self.completion)


class FallbackStream(TextStream):
    """A :class:`TextStream` over a chain: an entry that fails before its first delta hands
    the stream to the next; after the first delta, errors reach the caller as they are."""

    def __init__(
        self,
        chain: FallbackChain,
        remember: Callable[[Completion], None],
    ) -> None:
        state = _Chained(chain, remember)
        self._state = state
        self._deltas = _chained(state)


def _chained(state: _Chained) -> Generator[str, None, None]:
    chain = state.chain
    index = 0
    while True:
        began = time.monotonic()
        provider = None
        inner: TextStream | None = None
        try:
            call = chain.prepare(index)
            provider = call.provider
            inner = TextStream(StreamCall(call).without_hooks())
            first = next(inner, None)
        except Exception as exc:
            if inner is not None:
                inner.close()
                state.answered_without_text(index, inner, exc)
            index = chain.failed(index, exc, provider, began)
            continue
        except BaseException as exc:  # cancelled before its first delta
            chain.ended(None, exc)
            raise
        try:
            if first is not None:
                state.parts.append(first)
                yield first
                for delta in inner:
                    state.parts.append(delta)
                    yield delta
        except Exception as exc:
            state.answered_without_text(index, inner, exc)
            if isinstance(exc, MoodlemateError):
                exc.failed_before = tuple(chain.failures)
            chain.ended(None, exc)
            raise
        except BaseException as exc:  # closed early or cancelled: the hooks see it end
            chain.ended(None, exc)
            raise
        finally:
            inner.close()
        state.finish(index, inner)
        return


class AsyncFallbackStream(AsyncTextStream):
    """Async twin of :class:`FallbackStream`."""

    def __init__(
        self,
        chain: FallbackChain,
        remember: Callable[[Completion], None],
    ) -> None:
        state = _Chained(chain, remember)
        self._state = state
        self._deltas = _achained(state)


async def _achained(state: _Chained) -> AsyncGenerator[str, None]:
    chain = state.chain
    index = 0
    while True:
        began = time.monotonic()
        provider = None
        inner: AsyncTextStream | None = None
        try:
            call = chain.prepare(index)
            provider = call.provider
            inner = AsyncTextStream(StreamCall(call).without_hooks())
            first = await anext(inner, None)
        except Exception as exc:
            if inner is not None:
                await inner.aclose()
                state.answered_without_text(index, inner, exc)
            index = chain.failed(index, exc, provider, began)
            continue
        except BaseException as exc:  # cancelled before its first delta
            chain.ended(None, exc)
            raise
        try:
            if first is not None:
                state.parts.append(first)
                yield first
                async for delta in inner:
                    state.parts.append(delta)
                    yield delta
        except Exception as exc:
            state.answered_without_text(index, inner, exc)
            if isinstance(exc, MoodlemateError):
                exc.failed_before = tuple(chain.failures)
            chain.ended(None, exc)
            raise
        except BaseException as exc:  # closed early or cancelled: the hooks see it end
            chain.ended(None, exc)
            raise
        finally:
            await inner.aclose()
        state.finish(index, inner)
        return
