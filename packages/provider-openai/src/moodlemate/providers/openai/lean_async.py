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
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

from moodlemate.providers.openai.transport import httpcore_module

__all__ = ["AsyncioBackend", "DirectAsyncPool"]

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
                raise httpcore_module().ReadTimeout("timed out reading") from None
            finally:
                protocol.waiter = None
        if chunks:
            data = chunks.popleft()
            if len(data) > max_bytes:
                data, rest = data[:max_bytes], data[max_bytes:]
                chunks.appendleft(rest)
            return data
        if protocol.error is not None and not protocol.eof:  # a FIN first: a clean end
            raise httpcore_module().ReadError(str(protocol.error)) from protocol.error
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
            raise httpcore_module().WriteError(str(error or "connection closed")) from error
        self._transport.write(pending)
        if protocol.writing_paused:  # the kernel's buffer is full: wait for the peer to read
            protocol.paused = self._loop.create_future()
            try:
                await _wait(self._loop, protocol.paused, timeout)
            except TimeoutError:
                raise httpcore_module().WriteTimeout("timed out writing") from None
            finally:
                protocol.paused = None
            if protocol.error is not None:
                raise httpcore_module().WriteError(str(protocol.error)) from protocol.error

    async def aclose(self) -> None:
        self._pending = b""
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> AsyncioStream:
        httpcore = httpcore_module()
        if self._pending:
            await self._flush(timeout)
        try:
            async with asyncio.timeout(timeout):
                transport = await self._loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        if transport is None:  # pragma: no cover - the peer went away during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
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
        httpcore = httpcore_module()
        loop = asyncio.get_running_loop()
        local = None if local_address is None else (local_address, 0)
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port, local_addr=local
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> AsyncioStream:
        httpcore = httpcore_module()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_unix_connection(_Protocol, path)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {path}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _NoLock:
    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class _ReturningStream:
    """A response body that hands its connection back to the pool once closed."""

    __slots__ = ("_connection", "_inner", "_origin", "_pool", "_returned")

    def __init__(self, inner: Any, pool: DirectAsyncPool, key: _Key, connection: Any) -> None:
        self._inner = inner
        self._pool = pool
        self._origin = key
        self._connection = connection
        self._returned = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        iterator: AsyncIterator[bytes] = self._inner.__aiter__()  # no generator of our own
        return iterator

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if not self._returned:
                self._returned = True
                await self._pool.give_back(self._origin, self._connection)


class DirectAsyncPool:
    """Connections to origins reached directly (no proxy), for one event loop.

    Idle connections wait on a stack per origin; a request takes the newest that is still
    open and not expired, or opens one. At most ``max_connections`` are in use at once (more
    requests wait, within the attempt's timeout); at most ``max_idle`` are kept per origin.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_idle: int,
        idle_seconds: float,
    ) -> None:
        self._ssl_context = ssl_context
        self._idle: dict[_Key, list[Any]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._backend = AsyncioBackend()

    async def handle_async_request(self, request: Any) -> Any:
        # The trace callback hears of connecting from here; httpcore's own trace points (ten
        # per request) are skipped: a request whose answer began is returned, not raised.
        trace = request.extensions.pop("trace", None)
        await self._slots.acquire()
        try:
            origin = request.url.origin
            key = (origin.scheme, origin.host, origin.port)
            http = await self._take(key)
            if http is None:
                http = await self._open(origin, request, trace)
            try:
                response = await http.handle_async_request(request)
            except BaseException:
                await http.aclose()
                raise
        except BaseException:
            self._slots.release()
            raise
        response.stream = _ReturningStream(response.stream, self, key, http)
        return response

    async def _take(self, key: _Key) -> Any:
        idle = self._idle.get(key)
        while idle:
            http = idle.pop()
            if http.is_idle() and not http.has_expired():
                return http
            await http.aclose()
        return None

    async def _open(self, origin: Any, request: Any, trace: Any) -> Any:
        httpcore = httpcore_module()
        timeout = request.extensions.get("timeout", {}).get("connect")
        host = origin.host.decode("ascii")
        if trace is not None:
            await trace("connection.connect_tcp.started", {})
        stream: Any = await self._backend.connect_tcp(host, origin.port, timeout)
        if trace is not None:
            await trace("connection.connect_tcp.complete", {"return_value": stream})
        if origin.scheme == b"https":
            context = self._ssl_context or httpcore.default_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            if trace is not None:
                await trace("connection.start_tls.started", {})
            server_name = request.extensions.get("sni_hostname") or host
            stream = await stream.start_tls(context, server_name, timeout)
            if trace is not None:
                await trace("connection.start_tls.complete", {"return_value": stream})
        http = httpcore.AsyncHTTP11Connection(origin, stream, keepalive_expiry=self._idle_seconds)
        # This pool hands a connection to one request at a time, so the connection's own
        # state lock guards nothing here; it cost an anyio lock per request and per close.
        http._state_lock = _NoLock()
        return http

    async def give_back(self, key: _Key, http: Any) -> None:
        self._slots.release()
        if not http.is_idle():
            return  # closed (or left mid-body, which closed it): dropped
        idle = self._idle.setdefault(key, [])
        if len(idle) < self._max_idle:
            idle.append(http)
        else:
            await http.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for http in connections:
                await http.aclose()
