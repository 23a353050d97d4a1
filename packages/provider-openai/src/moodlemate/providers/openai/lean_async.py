"""The lean transport's async network layer: asyncio's own transports under httpcore's HTTP/1.1.

Why not httpcore's pool and anyio backend: at 64 concurrent calls, httpcore's pool matched
queued requests to connections by scanning both lists at every change, and anyio put a
cancel scope and a backend lookup around every read and write; together about a third of
an async call. Here a direct route keeps its idle connections on a stack (the last one
used goes out first) and each connection is an :class:`asyncio.Protocol` whose reads wait
on one future, with a timer only when there is nothing buffered to return. httpcore's
:class:`AsyncHTTP11Connection` (h11) still speaks HTTP, and the facade's ``asyncio.timeout``
still bounds the attempt; every connect, TLS handshake, read and write keeps its own
timeout, and writes wait for the next read (up to 64 KiB) so a request goes out in one
system call.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import ssl
import time
from collections.abc import Iterable
from typing import Any

from moodlemate.providers.openai.http1_wire import (
    READ_BYTES,
    ConnectError,
    ConnectTimeout,
    NetworkError,
    Outgoing,
    PooledReply,
    ReadError,
    ReadTimeout,
    Reply,
    WriteError,
    WriteTimeout,
)

__all__ = ["AsyncReply", "AsyncioBackend", "DirectAsyncPool"]

_COALESCE = 64 * 1024
_Key = tuple[bytes, bytes, int]
"""An origin: scheme, host, port."""


class _Protocol(asyncio.Protocol):
    """Buffers what arrives and wakes the one reader waiting for it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.eof = False  # the peer's FIN
        self.done = False  # end of stream or connection lost
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused: asyncio.Future[None] | None = None
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self._wake()

    def eof_received(self) -> bool:
        self.eof = self.done = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _time_out(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


async def _wait(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], timeout: float | None
) -> None:
    timer = None if timeout is None else loop.call_later(timeout, _time_out, future)
    try:
        await future
    finally:
        if timer is not None:
            timer.cancel()


class AsyncioStream:
    """httpcore's async network stream on an asyncio transport and :class:`_Protocol`."""

    __slots__ = ("_loop", "_pending", "_protocol", "_transport")

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._pending = b""
        self._loop = asyncio.get_running_loop()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._pending:
            await self._flush(timeout)
        protocol = self._protocol
        chunks = protocol.chunks
        if not chunks and not protocol.done:
            waiter = protocol.waiter = self._loop.create_future()
            try:
                await _wait(self._loop, waiter, timeout)
            except TimeoutError:
                raise ReadTimeout("timed out reading the response") from None
            finally:
                protocol.waiter = None
        if chunks:
            data = chunks.popleft()
            if len(data) > max_bytes:
                data, rest = data[:max_bytes], data[max_bytes:]
                chunks.appendleft(rest)
            return data
        if protocol.error is not None and not protocol.eof:  # a FIN first: a clean end
            raise ReadError(str(protocol.error)) from protocol.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if len(self._pending) + len(buffer) <= _COALESCE:
            self._pending += buffer
            return
        self._pending += buffer
        await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> None:
        pending, self._pending = self._pending, b""
        protocol = self._protocol
        if protocol.error is not None or self._transport.is_closing():
            error = protocol.error
            raise WriteError(str(error or "connection closed")) from error
        self._transport.write(pending)
        if protocol.writing_paused:  # the kernel's buffer is full: wait for the peer to read
            protocol.paused = self._loop.create_future()
            try:
                await _wait(self._loop, protocol.paused, timeout)
            except TimeoutError:
                raise WriteTimeout("timed out writing the request") from None
            finally:
                protocol.paused = None
            if protocol.error is not None:
                raise WriteError(str(protocol.error)) from protocol.error

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        self._pending = b""
        self._transport.close()

    def readable(self) -> bool:
        """Whether the idle connection holds something: the server's close, or bytes it
        should not have sent; either way it is not reused."""
        protocol = self._protocol
        return bool(protocol.chunks) or protocol.done

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> AsyncioStream:
        if self._pending:
            await self._flush(timeout)
        try:
            async with asyncio.timeout(timeout):
                transport = await self._loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.close()
            raise ConnectTimeout("timed out in the TLS handshake") from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.close()
            raise ConnectError(str(exc)) from exc
        if transport is None:  # pragma: no cover - the peer went away during the handshake
            raise ConnectError("the connection closed during the TLS handshake")
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # the loop delivers data and closes as they come
            protocol = self._protocol
            return bool(protocol.chunks) or protocol.done
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info in ("socket", "ssl_object"):
            return self._transport.get_extra_info(info)
        return None


class AsyncioBackend:
    """httpcore's async network backend on asyncio's transports (no anyio in between)."""

    __slots__ = ()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        local = None if local_address is None else (local_address, 0)
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port, local_addr=local
                )
        except TimeoutError:
            raise ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_unix_connection(_Protocol, path)
        except TimeoutError:
            raise ConnectTimeout(f"timed out connecting to {path}") from None
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        return AsyncioStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _answered_early(connection: AsyncioStream, reply: Reply, timeout: float | None) -> bool:
    """Async :func:`~moodlemate.providers.openai.http1_sync._answered_early`: the reply a
    server sent before it stopped reading the request, if any (then the connection is not
    reused)."""
    reply.extra = True
    try:
        while not reply.headers_done:
            reply.feed(await connection.read(READ_BYTES, timeout))
    except NetworkError:
        return False
    return True


class AsyncReply(PooledReply):
    """A reply whose headers have arrived; iterating it reads the body."""

    __slots__ = ()

    @property
    def stream(self) -> AsyncReply:
        return self

    def __aiter__(self) -> AsyncReply:
        return self

    async def __anext__(self) -> bytes:
        reply = self._reply
        while True:
            piece = reply.take()
            if piece:
                return piece
            if reply.complete:
                self._finish(reply.reusable)
                raise StopAsyncIteration
            try:
                reply.feed(await self._connection.read(READ_BYTES, self._timeout))
            except BaseException:
                self._finish(False)
                raise

    async def aclose(self) -> None:
        """Give the connection back if the body was read to its end, else drop it."""
        self._finish(self._reply.reusable)


_Origin = tuple[str, str, int]
"""scheme, host, port"""


class DirectAsyncPool:
    """Connections to origins reached directly (no proxy), for one event loop.

    Idle connections wait on a stack per origin; a request takes the newest that is still
    open, not expired and holding nothing unread, or opens one. At most ``max_connections``
    are in use at once (more requests wait: the facade's ``asyncio.timeout`` bounds that);
    at most ``max_idle`` are kept per origin, each for ``idle_seconds`` at most.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_idle: int,
        idle_seconds: float,
    ) -> None:
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["http/1.1"])
        self._ssl_context = ssl_context
        self._idle: dict[_Origin, list[tuple[float, AsyncioStream]]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._backend = AsyncioBackend()
        self._closed = False
        self._watch: collections.abc.AsyncGenerator[None, None] | None = None

    async def send(self, request: Outgoing, trace: Any) -> AsyncReply:
        """Send one whole request; the reply once its headers arrived."""
        origin, timeout = request.origin, request.timeout
        if self._watch is None:
            self._watch = _close_idle_at_loop_end(self)
            await self._watch.__anext__()
        await self._slots.acquire()
        try:
            connection = self._take(origin) if trace.reuse else None
            if connection is None:
                trace.fresh = True
                connection = await self._open(origin, timeout, trace)
                trace.connected = True
            try:
                reply = Reply()
                try:
                    await connection.write(request.wire(), timeout)
                except WriteError:
                    if not await _answered_early(connection, reply, timeout):
                        raise
                while not reply.headers_done:
                    reply.feed(await connection.read(READ_BYTES, timeout))
            except BaseException:
                connection.close()
                raise
        except BaseException:
            self._slots.release()
            raise
        trace.answered = True
        return AsyncReply(self, origin, connection, reply, timeout)

    def _take(self, origin: _Origin) -> AsyncioStream | None:
        idle = self._idle.get(origin)
        oldest = time.monotonic() - self._idle_seconds
        while idle:
            since, connection = idle.pop()
            if since > oldest and not connection.readable():
                return connection
            connection.close()
        return None

    async def _open(self, origin: _Origin, timeout: float | None, trace: Any) -> AsyncioStream:
        scheme, host, port = origin
        stream = await self._backend.connect_tcp(host, port, timeout)
        if scheme == "https":
            context = self._ssl_context
            if context is None:  # pragma: no cover - a pool for https always has one
                stream.close()
                raise ConnectError("no TLS context for an https origin")
            stream = await stream.start_tls(context, host, timeout)
        return stream

    def give_back(self, origin: _Origin, connection: AsyncioStream, reusable: bool) -> None:
        self._slots.release()
        if reusable and not self._closed:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._max_idle:
                idle.append((time.monotonic(), connection))
                return
        connection.close()

    async def aclose(self) -> None:
        self.close_idle()

    def close_idle(self) -> None:
        """Close the idle connections; the pool takes no more (its loop is ending)."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for _, connection in connections:
                connection.close()


async def _close_idle_at_loop_end(pool: DirectAsyncPool) -> collections.abc.AsyncGenerator[None]:
    """Suspended for the pool's life: the loop's ``shutdown_asyncgens`` (``asyncio.run`` calls
    it before closing the loop) closes it, and so the pool's idle connections while the loop
    can still close their transports; once the loop has closed nothing can, and the
    collector would find them open (ResourceWarning)."""
    try:
        yield
    finally:
        pool.close_idle()
