"""Streaming, vendor-neutral: retry before the first delta, account at the end.

A provider opens a stream (:meth:`Provider.stream` / :meth:`Provider.astream`) and yields
text deltas; everything a user relies on lives here, so every provider gets it alike:

- The retried unit is "open the request and read up to the first text delta". A failure
  in there (connect error, 5xx, a stream cut before any text) goes through the shared
  :class:`~moodlemate.ai._retry.RetryPolicy`; nothing has reached the caller yet, so a retry
  cannot duplicate text.
- A stream that ends without text raises as ``chat_completion`` does: RefusalError for a
  refusal, EmptyReplyError when the server did not say it stopped normally (the call is
  accounted first, and ``stream.completion`` is set).
- After the first delta a failure raises :class:`StreamInterruptedError` (with the partial
  text), never a silent truncation and never a retry. By default nothing bounds the time
  after the first delta; the policy's opt-in ``stream_deadline`` (the whole stream) and
  ``stream_idle_timeout`` (between deltas) end it with that error, sync and async.
- When the stream ends, the provider's full :class:`Completion` (usage from the final
  chunk) is accounted in the ledger once and exposed as ``stream.completion``.
- A model the server refuses to stream (:class:`StreamingNotSupportedError`) is answered by
  one non-streamed request delivered as a single delta; that is logged once and remembered
  per (provider, endpoint, model), so later streams skip the refused attempt.

A stream is lazy: the request is sent on the first ``next()``, and that is when its
worst-case cost is reserved against the budget (:mod:`moodlemate.ai._budget`). Closing it
early (``close()``, leaving a ``with`` block, breaking out of a loop and dropping it)
releases the connection and the reservation. A dropped stream is closed as its last reference
goes, not by the garbage collector: the generator works on a :class:`Streamed` state and never
references the public stream, so no cycle keeps it alive. An async stream dropped un-closed is
closed by its event loop (Python's async-generator finaliser schedules its ``aclose()`` as a
task), so that early close runs on the loop moments later; ``async with`` or ``aclose()``
closes it at a known point. Such a call is not recorded in the ledger,
because the usage chunk never arrived, but the spend log has its row (outcome ``cancelled``,
or the error's type for a stream that failed), and the ``after_response`` hook sees the call
end with the ``GeneratorExit`` (``CancelledError`` for a cancelled task) it was closed with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING

from moodlemate.ai import _bounds as bounds
from moodlemate.ai._bounds import ResponseLimits
from moodlemate.ai._off_loop import off_loop
from moodlemate.ai._provider import (
    AsyncProviderStream,
    ChatRequest,
    Completion,
    Connection,
    ProviderStream,
)
from moodlemate.ai._replies import reply_text
from moodlemate.ai.errors import (
    APITimeoutError,
    ProviderError,
    ResponseTooLargeError,
    StreamingNotSupportedError,
    StreamInterruptedError,
)

if TYPE_CHECKING:
    from moodlemate.ai._call import Call
    from moodlemate.ai._call_hooks import CallHooks
    from moodlemate.ai._ledger import Reservation
    from moodlemate.ai._provider import Provider
    from moodlemate.ai._retry import RetryPolicy

__all__ = [
    "AsyncProviderStream",
    "AsyncTextStream",
    "ProviderStream",
    "StreamCall",
    "Streamed",
    "TextStream",
]

log = logging.getLogger("moodlemate.ai")


def _forget(completion: Completion) -> None:
    """The default ``remember``: nothing keeps the result but the stream itself."""


@dataclass(frozen=True, slots=True)
class StreamCall:
    """A prepared :class:`~moodlemate.ai._call.Call` as a stream runs it: the call's own
    steps (reserve, settle, fail, hooks), plus the rules that only a stream has."""

    call: Call
    remember: Callable[[Completion], None] = _forget
    """Given the completion when the stream ends (the facade's ``last_result``)."""
    sent: list[int] = field(default_factory=lambda: [0])
    """Attempts that went to the server (pacing may give up on one before it is sent)."""

    @property
    def provider(self) -> Provider:
        return self.call.provider

    @property
    def connection(self) -> Connection:
        return self.call.connection

    @property
    def request(self) -> ChatRequest:
        return self.call.request

    @property
    def policy(self) -> RetryPolicy:
        return self.call.policy

    @property
    def limits(self) -> ResponseLimits:
        return self.call.limits

    @property
    def hooks(self) -> CallHooks | None:
        return self.call.hooks

    def without_hooks(self) -> StreamCall:
        """This stream with the hooks left to its caller (a fallback chain runs them)."""
        return replace(self, call=replace(self.call, hooks=None))

    def reserve(self) -> Reservation:
        return self.call.reserve()

    async def areserve(self) -> Reservation:
        return await self.call.areserve()

    def failed(self, error: BaseException, reservation: Reservation) -> None:
        self.call.failed(error, reservation, sent=self.sent[0] > 0)

    async def afailed(self, error: BaseException, reservation: Reservation) -> None:
        await self.call.afailed(error, reservation, sent=self.sent[0] > 0)

    async def arelease(self, reservation: Reservation) -> None:
        """Release ``reservation`` (a shared one on a store thread)."""
        if self.call.stored:
            await off_loop(reservation.release)
        else:
            reservation.release()

    def send(self, timeout: float) -> ProviderStream:
        """Open the stream for one attempt, after waiting for capacity under the rate limits."""
        call = self.call
        call.pace(timeout)
        self.sent[0] += 1
        try:
            source = call.provider.open_stream(call.at(timeout), call.request)
        except BaseException as exc:
            call.unanswered(exc)
            raise
        call.opened(source.rate_limits)
        return source

    async def asend(self, timeout: float) -> AsyncProviderStream:
        """Async :meth:`send`."""
        call = self.call
        await call.apace(timeout)
        self.sent[0] += 1
        try:
            source = await call.provider.aopen_stream(call.at(timeout), call.request)
        except BaseException as exc:
            call.unanswered(exc)
            raise
        call.opened(source.rate_limits)
        return source

    def finish(self, completion: Completion, attempts: int, reservation: Reservation) -> Completion:
        """Account the streamed completion (settling its reservation) and return it."""
        completion = self.call.settle(completion, attempts, reservation)
        self.remember(completion)
        return completion

    async def afinish(
        self, completion: Completion, attempts: int, reservation: Reservation
    ) -> Completion:
        """Async :meth:`finish`: the store work on a store thread."""
        completion = await self.call.asettle(completion, attempts, reservation)
        self.remember(completion)
        return completion

    def fallback(self, request: ChatRequest) -> Completion:
        """Send ``request`` non-streamed instead, accounted as any call."""
        completion = self.call.with_request(request).send_unhooked()
        self.remember(completion)
        return completion

    async def afallback(self, request: ChatRequest) -> Completion:
        completion = await self.call.with_request(request).asend_unhooked()
        self.remember(completion)
        return completion

    @property
    def label(self) -> str:
        return self.call.label

    def at(self, timeout: float) -> Connection:
        return self.call.at(timeout)

    def interrupted(self, exc: Exception, partial: str) -> StreamInterruptedError:
        context = exc if isinstance(exc, ProviderError) else None
        reason = context.message if context else str(exc)
        return StreamInterruptedError(
            f"stream interrupted after {len(partial)} characters of text "
            f"({type(exc).__name__}: {reason}); not retried, to avoid repeating text",
            partial_text=partial,
            provider=self.provider.name,
            model=self.request.model,
            request_id=context.request_id if context else None,
        )

    def open_policy(self) -> RetryPolicy:
        """The policy for the part up to the first delta: ``stream_deadline`` bounds it too."""
        policy = self.policy
        total = policy.stream_deadline
        if total is None or total >= policy.deadline:
            return policy
        return replace(policy, deadline=total, attempt_timeout=min(policy.attempt_timeout, total))

    def stream_end(self, started: float) -> float | None:
        total = self.policy.stream_deadline
        return None if total is None else started + total

    def timed(self, end: float | None) -> bool:
        """Whether anything bounds the time after the first delta (by default nothing)."""
        return end is not None or self.policy.stream_idle_timeout is not None

    def next_deadline(self, end: float | None) -> float | None:
        """When the next delta must have arrived: the idle bound, cut to the stream's end."""
        idle = self.policy.stream_idle_timeout
        if idle is None:
            return end
        until = time.monotonic() + idle
        return until if end is None else min(until, end)

    def expired(self, end: float | None, partial: str) -> StreamInterruptedError:
        """The error for a stream cut by one of its time bounds."""
        if end is not None and time.monotonic() >= end:
            why = f"stream_deadline of {self.policy.stream_deadline:g}s passed"
        else:
            why = f"no delta within stream_idle_timeout of {self.policy.stream_idle_timeout:g}s"
        cause = APITimeoutError(why, provider=self.provider.name, model=self.request.model)
        error = self.interrupted(cause, partial)
        error.__cause__ = cause
        return error

    def non_streamed(self) -> ChatRequest | None:
        """The request to send instead when this model is known not to stream, else None."""
        return replace(self.request, stream=False) if _refused(self) in _no_stream else None

    def refused(self) -> ChatRequest:
        """Remember (and log once) that the server will not stream this model."""
        key = _refused(self)
        with _no_stream_lock:
            first = key not in _no_stream
            _no_stream.add(key)
        if first:
            log.warning(
                "%s refuses to stream %r; answering with one non-streamed response instead",
                self.provider.name,
                self.request.model,
            )
        return replace(self.request, stream=False)


_no_stream: set[tuple[str, str, str]] = set()
_no_stream_lock = threading.Lock()


def _refused(call: StreamCall) -> tuple[str, str, str]:
    return (call.provider.name, call.connection.endpoint, call.request.model)


class Streamed:
    """What a stream's generator works on: the text so far and the final result.

    The generator references this, never the public stream that wraps it, so no reference
    cycle joins them: dropping the stream drops its generator at once, and Python closes it
    (the early-close path) without waiting for the garbage collector.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.completion: Completion | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


class _CallRun(Streamed):
    """The working state of one streamed call, shared by the sync and async runs."""

    def __init__(self, call: StreamCall) -> None:
        super().__init__()
        self.call = call
        self.size = 0

    def check_reply(self) -> None:
        if self.completion is not None:
            reply_text(self.completion, self.call.request.max_tokens)

    def keep(self, delta: str) -> None:
        """Add a delta to the text, within ``ResponseLimits.max_stream_text``."""
        self.size += len(delta)
        limit = self.call.limits.max_stream_text
        if self.size > limit:
            raise bounds.too_large("the streamed text", "max_stream_text", limit, "characters")
        self.parts.append(delta)

    def began(self, hooks: CallHooks) -> float:
        call = self.call
        return hooks.before(call.request, call.provider.name, call.connection.endpoint)

    def ended(self, hooks: CallHooks, started: float, error: BaseException | None) -> None:
        call = self.call
        completion = self.completion if error is None else None
        hooks.after(
            call.request, call.provider.name, call.connection.endpoint, started, completion, error
        )


def _stream_call(call: Call | StreamCall, remember: Callable[[Completion], None]) -> StreamCall:
    return call if isinstance(call, StreamCall) else StreamCall(call, remember)


class _Stream:
    """What both public stream flavours show: a thin view of their :class:`Streamed` state."""

    _state: Streamed

    @property
    def text(self) -> str:
        """The text received so far (all of it once the stream has ended)."""
        return self._state.text

    @property
    def completion(self) -> Completion | None:
        """The full result (usage, cost, attempts) once the stream has ended; else None."""
        return self._state.completion


class TextStream(_Stream, Iterator[str]):
    """Text deltas of one chat completion; see the module docstring for the guarantees.

    Use it as an iterator, ideally in a ``with`` block so an early exit closes the connection
    at once (dropping the stream closes it too). Consume it from one thread at a time.
    """

    def __init__(
        self, call: Call | StreamCall, remember: Callable[[Completion], None] = _forget
    ) -> None:
        run = _TextRun(_stream_call(call, remember))
        self._state = run
        self._deltas: Generator[str, None, None] = run.deltas()

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._deltas)

    def close(self) -> None:
        self._deltas.close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncTextStream(_Stream, AsyncIterator[str]):
    """Async twin of :class:`TextStream`: ``async for delta in gpt.astream(...)``.

    Dropped without ``aclose()``, its generator is closed by the running event loop (Python's
    async-generator finaliser schedules ``aclose()`` on it), so the early-close path runs as a
    task on that loop shortly after, not inside the finaliser.
    """

    def __init__(
        self, call: Call | StreamCall, remember: Callable[[Completion], None] = _forget
    ) -> None:
        run = _AsyncTextRun(_stream_call(call, remember))
        self._state = run
        self._deltas: AsyncGenerator[str, None] = run.deltas()

    def __aiter__(self) -> AsyncTextStream:
        return self

    async def __anext__(self) -> str:
        return await self._deltas.__anext__()

    async def aclose(self) -> None:
        await self._deltas.aclose()

    async def __aenter__(self) -> AsyncTextStream:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _TextRun(_CallRun):
    """The generator behind a :class:`TextStream`."""

    def deltas(self) -> Generator[str, None, None]:
        hooks = self.call.hooks
        return self._answered(self._run() if hooks is None else self._hooked(hooks))

    def _answered(self, deltas: Generator[str, None, None]) -> Generator[str, None, None]:
        """The deltas, then the check chat_completion makes: a stream that ended without text
        raises RefusalError or EmptyReplyError (outside the call hooks, which saw a
        completed call, as they do for chat_completion)."""
        yield from deltas
        self.check_reply()

    def _hooked(self, hooks: CallHooks) -> Generator[str, None, None]:
        """The stream between the call hooks: after_response sees its completion or error,
        or the GeneratorExit of a stream closed early (as the spend log's ``cancelled``)."""
        started = self.began(hooks)
        try:
            yield from self._run()
        except BaseException as exc:
            self.ended(hooks, started, exc)
            raise
        self.ended(hooks, started, None)

    def _run(self) -> Generator[str, None, None]:
        call = self.call
        end = call.stream_end(time.monotonic())
        request = call.non_streamed()
        if request is None:
            reservation = call.reserve()  # the request is sent now, not when the stream was made
            try:
                (source, deltas, first), attempts = call.open_policy().run(
                    self._open, call.label, call.limits
                )
            except StreamingNotSupportedError:
                reservation.release()
                request = call.refused()
            except BaseException as exc:
                call.failed(exc, reservation)
                raise
        if request is not None:
            self.completion = call.fallback(request)
            if self.completion.text:
                self.parts.append(self.completion.text)
                yield self.completion.text
            return
        try:
            if first is not None:
                self.keep(first)
                yield first
                timed = call.timed(end)
                while True:
                    until = call.next_deadline(end) if timed else None
                    bound = bounds.enter(until, call.limits) if timed else None
                    try:
                        delta = next(deltas)
                    except StopIteration:
                        break
                    except ResponseTooLargeError:
                        raise  # typed as such whenever it happens; stream.text has the text
                    except ProviderError as exc:
                        if until is not None and time.monotonic() >= until:
                            raise call.expired(end, self.text) from exc
                        raise call.interrupted(exc, self.text) from exc
                    finally:
                        if bound is not None:
                            bounds.leave(bound)
                    if until is not None and time.monotonic() > until:
                        raise call.expired(end, self.text)
                    self.keep(delta)
                    yield delta
            try:
                result = source.completion()
            except ProviderError as exc:
                raise call.interrupted(exc, self.text) from exc
        except BaseException as exc:
            call.failed(exc, reservation)  # closed early or failed: no usage will come
            raise
        finally:
            source.close()
        self.completion = call.finish(result, attempts, reservation)

    def _open(self, timeout: float) -> tuple[ProviderStream, Iterator[str], str | None]:
        """One attempt: send, and read until the first delta (or the end of an empty reply)."""
        source = self.call.send(timeout)
        try:
            deltas = iter(source)
            first = next(deltas, None)
            if first is None:
                source.completion()  # a stream cut before any text is retried, not accepted
        except BaseException:
            source.close()
            raise
        return source, deltas, first


class _AsyncTextRun(_CallRun):
    """The generator behind an :class:`AsyncTextStream`."""

    def deltas(self) -> AsyncGenerator[str, None]:
        hooks = self.call.hooks
        return self._answered(self._run() if hooks is None else self._hooked(hooks))

    async def _answered(self, deltas: AsyncGenerator[str, None]) -> AsyncGenerator[str, None]:
        """Async twin of :meth:`_TextRun._answered`."""
        try:
            async for delta in deltas:
                yield delta
        finally:  # pass an early close on, as `yield from` would
            await deltas.aclose()
        self.check_reply()

    async def _hooked(self, hooks: CallHooks) -> AsyncGenerator[str, None]:
        """Async twin of :meth:`_TextRun._hooked`."""
        started = self.began(hooks)
        deltas = self._run()
        try:
            try:
                async for delta in deltas:
                    yield delta
            finally:  # unlike `yield from`, `async for` does not pass an early close on
                await deltas.aclose()
        except BaseException as exc:  # a failure, an early close, a cancelled task
            self.ended(hooks, started, exc)
            raise
        self.ended(hooks, started, None)

    async def _run(self) -> AsyncGenerator[str, None]:
        import asyncio

        call = self.call
        end = call.stream_end(time.monotonic())
        request = call.non_streamed()
        if request is None:
            reservation = await call.areserve()
            try:
                (source, deltas, first), attempts = await call.open_policy().arun(
                    self._open, call.label, call.limits
                )
            except StreamingNotSupportedError:
                await call.arelease(reservation)
                request = call.refused()
            except BaseException as exc:
                await call.afailed(exc, reservation)
                raise
        if request is not None:
            self.completion = await call.afallback(request)
            if self.completion.text:
                self.parts.append(self.completion.text)
                yield self.completion.text
            return
        try:
            if first is not None:
                self.keep(first)
                yield first
                timed = call.timed(end)
                while True:
                    until = call.next_deadline(end) if timed else None
                    scope = None if until is None else asyncio.timeout(until - time.monotonic())
                    try:
                        if scope is None:
                            delta = await deltas.__anext__()
                        else:
                            async with scope:
                                delta = await deltas.__anext__()
                    except StopAsyncIteration:
                        break
                    except TimeoutError as exc:
                        if scope is None or not scope.expired():
                            raise
                        raise call.expired(end, self.text) from exc
                    except ResponseTooLargeError:
                        raise
                    except ProviderError as exc:
                        raise call.interrupted(exc, self.text) from exc
                    self.keep(delta)
                    yield delta
            try:
                result = source.completion()
            except ProviderError as exc:
                raise call.interrupted(exc, self.text) from exc
        except BaseException as exc:
            await call.afailed(exc, reservation)
            raise
        finally:
            await source.aclose()
        self.completion = await call.afinish(result, attempts, reservation)

    async def _open(
        self, timeout: float
    ) -> tuple[AsyncProviderStream, AsyncIterator[str], str | None]:
        source = await self.call.asend(timeout)
        try:
            deltas = source.__aiter__()
            first = await anext(deltas, None)
            if first is None:
                source.completion()
        except BaseException:
            await source.aclose()
            raise
        return source, deltas, first
