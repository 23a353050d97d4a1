"""The HTTP stack's share of the hard bounds (see :mod:`moodlemate.ai._bounds`).

httpx's timeouts are per socket operation: a server that sends one byte a second never
trips a 3-second read timeout, in the headers or in the body. httpcore takes a pluggable
network backend, so the sync clients get one whose every connect, read and write is cut
to what is left before the attempt's deadline (and fails once it has passed), with no
watchdog thread. Async attempts are cancelled by the facade itself (``asyncio.timeout``).

A response hook caps the raw bytes of every body that is not an event stream (error
bodies included: the SDK reads those itself), and feeds a compressed body to httpx's
decoder in small slices, so one read of a gzip bomb inflates to at most ~1 MB at a time
and the decoded-size checks of the readers see it before memory does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import Any

from moodlemate.ai.plugin import APIConnectionError, ResponseLimits, bounds

__all__ = [
    "DeadlineBackend",
    "aclose_idle",
    "aclose_idle_in_client",
    "bound_async_client",
    "bound_client",
    "close_idle",
    "close_idle_in_client",
    "fetch",
    "httpcore_module",
    "httpx_module",
]

_SLICE = 1024
"""Raw bytes handed to the decoder at once; deflate inflates at most ~1000x."""
_COALESCE = 64 * 1024
"""Bytes a coalescing stream holds back until the next read."""


@cache
def httpx_module() -> Any:
    """The HTTP library of the installed SDK: httpx2 from openai 3, httpx before it."""
    try:
        import httpx2  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # openai < 3
        import httpx  # type: ignore[import-not-found,unused-ignore]

        return httpx
    return httpx2


@cache
def httpcore_module() -> Any:
    """httpcore2 where installed (the lean transport's HTTP library), else httpcore."""
    try:
        import httpcore2  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # openai < 3
        import httpcore  # type: ignore[import-not-found,unused-ignore]

        return httpcore
    return httpcore2


def bound_client(**options: Any) -> Any:
    """The SDK's default sync httpx client, with the deadline backend and the size caps."""
    import openai

    return _with_deadlines(
        openai.DefaultHttpxClient(**options, event_hooks={"response": [_cap_response]})
    )


def _with_deadlines(client: Any) -> Any:
    """Wrap the network backend of each of ``client``'s connection pools (httpx builds the
    pool itself and offers no argument for it)."""
    for pool in _pools_of(client):
        backend = getattr(pool, "_network_backend", None)
        if backend is not None and not isinstance(backend, DeadlineBackend):
            pool._network_backend = DeadlineBackend(backend)
    return client


def _pools_of(client: Any) -> list[Any]:
    """The httpcore pools of an httpx client (env proxies live in its mounts)."""
    transports = [client._transport, *client._mounts.values()]
    return [pool for t in transports if (pool := getattr(t, "_pool", None)) is not None]


def close_idle_in_client(client: Any) -> None:
    """:func:`close_idle` for each pool of an httpx client (the client stays open: a thread
    may hold it for a call about to be sent)."""
    for pool in _pools_of(client):
        close_idle(pool)


def close_idle(pool: Any) -> None:
    """Close the connections of an httpcore pool that no request uses or has reserved, as
    the pool itself drops expired ones (under its lock, so no request can take one being
    closed). A call in flight keeps its connection: closing it would cut the call, and a
    retry would send the request twice; it goes back to the pool when the call ends."""
    for connection in _take_idle(pool):
        connection.close()


async def aclose_idle_in_client(client: Any) -> None:
    """:func:`close_idle_in_client` for an async httpx client (on the loop that owns it)."""
    for pool in _pools_of(client):
        await aclose_idle(pool)


async def aclose_idle(pool: Any) -> None:
    """:func:`close_idle` for an async httpcore pool (on the loop that owns it)."""
    for connection in _take_idle(pool):
        await connection.aclose()


def _take_idle(pool: Any) -> list[Any]:
    """The idle connections of an httpcore pool (sync or async), taken out of it."""
    lock = getattr(pool, "_optional_thread_lock", None)
    if lock is None or not isinstance(getattr(pool, "_connections", None), list):
        return []  # not the httpcore this was written against: leave it to its own expiry
    with lock:
        reserved = {request.connection for request in pool._requests}
        idle = [c for c in pool._connections if c.is_idle() and c not in reserved]
        pool._connections = [c for c in pool._connections if c not in idle]
    return idle


def bound_async_client(**options: Any) -> Any:
    """The SDK's default async httpx client with the size caps (deadlines: the facade's
    ``asyncio.timeout`` cancels the attempt)."""
    import openai

    return openai.DefaultAsyncHttpxClient(**options, event_hooks={"response": [_acap_response]})


# -- deadlines, sync ----------------------------------------------------------------------


def _clamp(timeout: float | None, expired: str) -> float | None:
    """The socket timeout to use: ``timeout`` cut to what the deadline leaves."""
    left = bounds.remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise getattr(httpcore_module(), expired)("the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream:
    """A network stream whose every operation ends by the running attempt's deadline.

    With ``coalesce``, writes wait for the next read (or until 64 KiB are pending): httpcore
    writes a request's headers and its body separately, two system calls and, on a busy
    machine, two wake-ups of the server where one does.
    """

    __slots__ = ("_coalesce", "_pending", "_stream")

    def __init__(self, stream: Any, coalesce: bool = False) -> None:
        self._stream = stream
        self._coalesce = coalesce
        self._pending = b""

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._pending:
            self._flush(timeout)
        data: bytes = self._stream.read(max_bytes, _clamp(timeout, "ReadTimeout"))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._coalesce and len(self._pending) + len(buffer) <= _COALESCE:
            self._pending += buffer
            return
        if self._pending:
            buffer, self._pending = self._pending + buffer, b""
        self._stream.write(buffer, _clamp(timeout, "WriteTimeout"))

    def _flush(self, timeout: float | None) -> None:
        pending, self._pending = self._pending, b""
        self._stream.write(pending, _clamp(timeout, "WriteTimeout"))

    def close(self) -> None:
        self._pending = b""
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> DeadlineStream:
        if self._pending:
            self._flush(timeout)
        return DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, _clamp(timeout, "ConnectTimeout")),
            self._coalesce,
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend:
    """httpcore's network backend, wrapped so its streams honour the attempt's deadline
    (and, with ``coalesce``, send a request in one write where they can)."""

    __slots__ = ("_backend", "_coalesce")

    def __init__(self, backend: Any, coalesce: bool = False) -> None:
        self._backend = backend
        self._coalesce = coalesce

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> DeadlineStream:
        stream = self._backend.connect_tcp(
            host, port, _clamp(timeout, "ConnectTimeout"), local_address, socket_options
        )
        return DeadlineStream(stream, self._coalesce)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> DeadlineStream:
        stream = self._backend.connect_unix_socket(
            path, _clamp(timeout, "ConnectTimeout"), socket_options
        )
        return DeadlineStream(stream, self._coalesce)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# -- size caps, sync and async ------------------------------------------------------------


def _caps(response: Any) -> tuple[int | None, bool]:
    """(raw byte cap or None, whether to slice) for one response."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    sliced = encoding not in ("", "identity")
    content_type = response.headers.get("content-type", "")
    if response.is_success and content_type.startswith("text/event-stream"):
        return None, sliced  # events and text are bounded by the stream reader
    return bounds.limits().max_body_bytes, sliced


def _pieces(chunk: bytes, sliced: bool) -> Iterator[bytes]:
    if not sliced or len(chunk) <= _SLICE:
        yield chunk
        return
    for start in range(0, len(chunk), _SLICE):
        yield chunk[start : start + _SLICE]


def _over(cap: int) -> Exception:
    return bounds.too_large("response body", "max_body_bytes", cap)


def _cap_response(response: Any) -> None:
    cap, sliced = _caps(response)
    if cap is not None or sliced:
        response.stream = _capped_stream_class()(response.stream, cap, sliced)


async def _acap_response(response: Any) -> None:
    cap, sliced = _caps(response)
    if cap is not None or sliced:
        response.stream = _acapped_stream_class()(response.stream, cap, sliced)


@cache
def _capped_stream_class() -> type:
    httpx = httpx_module()

    class CappedStream(httpx.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, cap: int | None, sliced: bool) -> None:
            self._inner, self._cap, self._sliced = inner, cap, sliced

        def __iter__(self) -> Iterator[bytes]:
            seen, cap = 0, self._cap
            for chunk in self._inner:
                seen += len(chunk)
                if cap is not None and seen > cap:
                    raise _over(cap)
                yield from _pieces(chunk, self._sliced)

        def close(self) -> None:
            self._inner.close()

    return CappedStream


@cache
def _acapped_stream_class() -> type:
    httpx = httpx_module()

    class AsyncCappedStream(httpx.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, cap: int | None, sliced: bool) -> None:
            self._inner, self._cap, self._sliced = inner, cap, sliced

        async def __aiter__(self) -> AsyncIterator[bytes]:
            seen, cap = 0, self._cap
            async for chunk in self._inner:
                seen += len(chunk)
                if cap is not None and seen > cap:
                    raise _over(cap)
                for piece in _pieces(chunk, self._sliced):
                    yield piece

        async def aclose(self) -> None:
            await self._inner.aclose()

    return AsyncCappedStream


# -- a bounded GET, for catalogs ------------------------------------------------------------


@cache
def _fetch_client() -> Any:
    # Plain httpx, not the SDK's client: a catalog fetch need not wait for openai's import.
    client = httpx_module().Client(follow_redirects=True, event_hooks={"response": [_cap_response]})
    return _with_deadlines(client)


def fetch(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """GET ``url`` within ``timeout`` seconds of wall-clock time in all and at most
    ``max_bytes`` of body. Raises APIConnectionError (network, HTTP status, time) or
    ResponseTooLargeError."""
    httpx = httpx_module()
    headers = {"Accept": "application/json", "User-Agent": "moodlemate-ai"}
    bound = bounds.enter(time.monotonic() + timeout, ResponseLimits(max_body_bytes=max_bytes))
    try:
        with _fetch_client().stream("GET", url, headers=headers, timeout=timeout) as response:
            if response.status_code >= 300:
                raise APIConnectionError(f"answered HTTP {response.status_code}")
            return bounds.read_limited(response.iter_bytes(), max_bytes)
    except httpx.HTTPError as exc:
        raise APIConnectionError(f"failed ({type(exc).__name__})") from None
    finally:
        bounds.leave(bound)
