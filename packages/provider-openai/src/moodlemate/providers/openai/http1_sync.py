"""The lean transport's sync direct route: blocking sockets, a stack of idle connections
per origin, and :mod:`~moodlemate.providers.openai.http1_wire` speaking HTTP/1.1.

Why not httpcore's sync pool, as before: at every request and every close it scanned its
queue and its connections and fired ten trace points, about a tenth of a call. Here a
request takes the newest idle connection to its origin that is neither expired nor
readable (a readable idle socket holds the server's close), or opens one, and sends the
whole request in one system call. Every connect, TLS handshake, read and write is cut to
what is left of the attempt's deadline, so a server that drips a byte a second still ends
the attempt on time.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

from moodlemate.ai.plugin import bounds
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

__all__ = ["DirectSyncPool", "PoolTimeout", "SyncReply", "clamped"]

_Origin = tuple[str, str, int]
"""scheme, host, port"""


class PoolTimeout(NetworkError):
    """Every connection the pool may open is in use, for longer than the attempt waits."""


def clamped(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to what the attempt's deadline leaves (``error`` once it passed)."""
    left = bounds.remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise error("the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Connection:
    """One socket to one origin, used by one request at a time."""

    __slots__ = ("idle_since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_since = 0.0

    def write(self, data: bytes, timeout: float | None) -> None:
        sock = self.sock
        try:
            sock.settimeout(clamped(timeout, WriteTimeout))
            sock.sendall(data)
        except TimeoutError:
            raise WriteTimeout("timed out writing the request") from None
        except OSError as exc:
            raise WriteError(str(exc) or type(exc).__name__) from exc

    def read(self, timeout: float | None) -> bytes:
        sock = self.sock
        try:
            sock.settimeout(clamped(timeout, ReadTimeout))
            return sock.recv(READ_BYTES)
        except TimeoutError:
            raise ReadTimeout("timed out reading the response") from None
        except OSError as exc:
            raise ReadError(str(exc) or type(exc).__name__) from exc

    def readable(self) -> bool:
        """Whether the idle socket has something to read: for an idle HTTP/1.1 connection
        that is the server's close (or bytes it should not have sent)."""
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _connect(origin: _Origin, context: ssl.SSLContext | None, timeout: float | None) -> Any:
    scheme, host, port = origin
    try:
        sock = socket.create_connection((host, port), clamped(timeout, ConnectTimeout))
    except TimeoutError:
        raise ConnectTimeout(f"timed out connecting to {host}:{port}") from None
    except OSError as exc:
        raise ConnectError(str(exc) or type(exc).__name__) from exc
    with contextlib.suppress(OSError):  # a request goes out in one write: no need to wait
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if scheme != "https":
        return sock
    if context is None:  # pragma: no cover - a pool for https always has one
        raise ConnectError("no TLS context for an https origin")
    try:
        sock.settimeout(clamped(timeout, ConnectTimeout))
        return context.wrap_socket(sock, server_hostname=host)
    except TimeoutError:
        sock.close()
        raise ConnectTimeout(f"timed out in the TLS handshake with {host}:{port}") from None
    except (OSError, ssl.SSLError, ssl.CertificateError) as exc:
        sock.close()
        raise ConnectError(str(exc) or type(exc).__name__) from exc


def _answered_early(connection: _Connection, reply: Reply, timeout: float | None) -> bool:
    """After a failed write, the reply the server may have sent before it stopped reading
    (a 413 for a body it will not take, then its close): that answer says more than the
    failed write. No reply (the server's close, as on a connection it closed while idle):
    the write's error stands. The connection is not reused either way."""
    reply.extra = True  # the request was not all sent: this connection carries no other
    try:
        while not reply.headers_done:
            reply.feed(connection.read(timeout))
    except NetworkError:
        return False
    return True


class SyncReply(PooledReply):
    """A reply whose headers have arrived; the body is read as it is iterated."""

    __slots__ = ()

    def iter_stream(self) -> Iterator[bytes]:
        reply, connection = self._reply, self._connection
        try:
            while True:
                piece = reply.take()
                if piece:
                    yield piece
                if reply.complete:
                    break
                reply.feed(connection.read(self._timeout))
        except BaseException:
            self.close()
            raise
        self._finish(reply.reusable)

    def close(self) -> None:
        """Give the connection back if the body was read to its end, else drop it."""
        self._finish(self._reply.reusable)


class DirectSyncPool:
    """Connections to origins reached directly (no proxy), shared across threads.

    At most ``max_connections`` are in use at once (more requests wait, within the
    attempt's timeout); at most ``max_idle`` idle ones are kept per origin, each for
    ``idle_seconds`` at most.
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
        self._context = ssl_context
        self._lock = threading.Lock()
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._slots = threading.BoundedSemaphore(max_connections)
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._closed = False

    def send(self, request: Outgoing, trace: Any) -> SyncReply:
        """Send one whole request; the reply once its headers arrived."""
        origin, timeout = request.origin, request.timeout
        if not self._slots.acquire(timeout=clamped(timeout, PoolTimeout)):
            raise PoolTimeout(f"every one of the pool's connections stayed busy for {timeout}s")
        try:
            connection = self._take(origin) if trace.reuse else None
            if connection is None:
                trace.fresh = True
                connection = _Connection(_connect(origin, self._context, timeout))
                trace.connected = True
            try:
                reply = Reply()
                try:
                    connection.write(request.wire(), timeout)
                except WriteError:
                    if not _answered_early(connection, reply, timeout):
                        raise
                while not reply.headers_done:
                    reply.feed(connection.read(timeout))
            except BaseException:
                connection.close()
                raise
        except BaseException:
            self._slots.release()
            raise
        trace.answered = True
        return SyncReply(self, origin, connection, reply, timeout)

    def _take(self, origin: _Origin) -> _Connection | None:
        oldest = time.monotonic() - self._idle_seconds
        with self._lock:
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()
                if connection.idle_since > oldest and not connection.readable():
                    return connection
                connection.close()
        return None

    def give_back(self, origin: _Origin, connection: _Connection, reusable: bool) -> None:
        self._slots.release()
        if reusable and not self._closed:
            connection.idle_since = time.monotonic()
            with self._lock:
                idle = self._idle.setdefault(origin, [])
                if len(idle) < self._max_idle:
                    idle.append(connection)
                    return
        connection.close()

    def close(self) -> None:
        """Close the idle connections; one in use closes when its call gives it back."""
        with self._lock:
            self.forget()

    def forget(self) -> None:
        """Close the idle connections without the lock: in a forked child, another thread
        may have held it at the fork (this closes the child's copies; the parent's stay)."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
