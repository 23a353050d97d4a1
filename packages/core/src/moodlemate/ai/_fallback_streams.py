"""Streams over a fallback chain: an entry that fails before its first delta hands the
stream to the next entry; after the first delta, text has reached the caller and errors pass
through as they are (see :mod:`moodlemate.ai._fallbacks`)."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING

from moodlemate.ai._fallbacks import FallbackChain
from moodlemate.ai._streaming import AsyncTextStream, StreamCall, TextStream
from moodlemate.ai.errors import MoodlemateError, ReplyError

if TYPE_CHECKING:
    from moodlemate.ai._provider import Completion

__all__ = ["AsyncFallbackStream", "FallbackStream"]


class _Chained:
    """What both stream flavours do when an entry answered."""

    _chain: FallbackChain
    _remember: Callable[[Completion], None]
    completion: Completion | None

    def _chain_state(
        self,
        chain: FallbackChain,
        remember: Callable[[Completion], None],
    ) -> None:
        """A text stream's state (see ``streaming._Stream``), driven by the chain instead of
        one StreamCall."""
        self._parts: list[str] = []
        self.completion = None
        self._chain = chain
        self._remember = remember

    def _answered_without_text(
        self, index: int, inner: TextStream | AsyncTextStream, exc: Exception
    ) -> None:
        """A refusal or empty reply is an answer: the hooks see the completed call (as they
        do without fallbacks), then the ReplyError reaches the caller."""
        if isinstance(exc, ReplyError) and inner.completion is not None:
            exc.failed_before = tuple(self._chain.failures)
            self._finish(index, inner)
            raise exc

    def _finish(self, index: int, inner: TextStream | AsyncTextStream) -> None:
        if inner.completion is None:  # closed early: nothing to account, as without fallbacks
            return
        self.completion = self._chain.served(index, inner.completion)
        self._remember(self.completion)


class FallbackStream(_Chained, TextStream):
    """A :class:`TextStream` over a chain: an entry that fails before its first delta hands
    the stream to the next; after the first delta, errors reach the caller as they are."""

    def __init__(
        self,
        chain: FallbackChain,
        remember: Callable[[Completion], None],
    ) -> None:
        self._chain_state(chain, remember)
        self._deltas = self._chained()

    def _chained(self) -> Generator[str, None, None]:
        chain = self._chain
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
                    self._answered_without_text(index, inner, exc)
                index = chain.failed(index, exc, provider, began)
                continue
            except BaseException as exc:  # cancelled before its first delta
                chain.ended(None, exc)
                raise
            try:
                if first is not None:
                    self._parts.append(first)
                    yield first
                    for delta in inner:
                        self._parts.append(delta)
                        yield delta
            except Exception as exc:
                self._answered_without_text(index, inner, exc)
                if isinstance(exc, MoodlemateError):
                    exc.failed_before = tuple(chain.failures)
                chain.ended(None, exc)
                raise
            except BaseException as exc:  # closed early or cancelled: the hooks see it end
                chain.ended(None, exc)
                raise
            finally:
                inner.close()
            self._finish(index, inner)
            return

    def close(self) -> None:
        self._deltas.close()


class AsyncFallbackStream(_Chained, AsyncTextStream):
    """Async twin of :class:`FallbackStream`."""

    def __init__(
        self,
        chain: FallbackChain,
        remember: Callable[[Completion], None],
    ) -> None:
        self._chain_state(chain, remember)
        self._deltas = self._chained()

    async def _chained(self) -> AsyncGenerator[str, None]:
        chain = self._chain
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
                    self._answered_without_text(index, inner, exc)
                index = chain.failed(index, exc, provider, began)
                continue
            except BaseException as exc:  # cancelled before its first delta
                chain.ended(None, exc)
                raise
            try:
                if first is not None:
                    self._parts.append(first)
                    yield first
                    async for delta in inner:
                        self._parts.append(delta)
                        yield delta
            except Exception as exc:
                self._answered_without_text(index, inner, exc)
                if isinstance(exc, MoodlemateError):
                    exc.failed_before = tuple(chain.failures)
                chain.ended(None, exc)
                raise
            except BaseException as exc:  # closed early or cancelled: the hooks see it end
                chain.ended(None, exc)
                raise
            finally:
                await inner.aclose()
            self._finish(index, inner)
            return
