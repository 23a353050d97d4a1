"""The default transport: OpenAI-compatible HTTP on httpcore, without the openai SDK.

Why httpcore and not httpx or the SDK: a call's cost was mostly the SDK's ``post()`` and
the httpx request/response models under it; httpcore is the connection pool and HTTP/1.1
engine beneath both, so this module builds the request (JSON bytes, the headers servers
rely on) and reads the raw reply, and the provider parses it as before (``responses``,
``streaming``). The bounds stay ours: the deadline backend (sync) or the facade's
``asyncio.timeout`` (async), the attempt timeout on every socket operation, the body cap
on raw and decoded bytes, gzip/deflate inflated in bounded slices, no redirects (httpcore
follows none: a 3xx is an error), and the HTTP stack's loggers redacted.

A pooled connection the server closed while it sat idle (llama-server does after a stream,
keep-alive headers notwithstanding) fails the next request before a byte of answer comes
back. When that failure shows the server had closed the connection before the request got
there (see :func:`_stale`), the request is sent again at once, on a new connection (not
another idle one, which such a server has closed alike), without a backoff and without a
warning (at most :data:`STALE_RETRIES` times).
"""

from __future__ import annotations

import json
import logging
import sys
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit

from moodlemate.ai.plugin import (
    APIConnectionError,
    Connection,
    MalformedResponseError,
    ProviderError,
    StreamingNotSupportedError,
    bounds,
    guard_loggers,
)
from moodlemate.providers.openai import http1_wire, responses
from moodlemate.providers.openai.connection_errors import connection_error
from moodlemate.providers.openai.http1_wire import Outgoing, check_headers, request_head
from moodlemate.providers.openai.lean_pools import AsyncPools, SyncPools

__all__ = ["STALE_RETRIES", "USER_AGENT", "LeanResponse", "LeanTransport"]

log = logging.getLogger("moodlemate.ai.transport")

STALE_RETRIES = 3
USER_AGENT = "moodlemate-ai/0.1"
_SLICE = 64 * 1024
"""Decoded bytes taken from the decompressor at once: a gzip bomb inflates that far only."""
_LOGGERS = ("httpcore2", "httpcore", "hpack", "h11")
_EMPTY: Mapping[str, str] = {}


# -- requests -------------------------------------------------------------------------------


class _Target:
    """Where one (endpoint, path) goes, parsed once."""

    __slots__ = ("host", "host_header", "origin", "path", "port", "scheme")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin = (self.scheme, self.host, self.port)
        netloc = parts.netloc.rpartition("@")[2]
        # The idna codec costs ~10 ms to import: only a non-ASCII host needs it.
        self.host_header = (b"Host", netloc.encode("ascii" if netloc.isascii() else "idna"))
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_QUERY_SAFE)
        self.path = path.encode("ascii")


_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


@lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    return _Target(url)


class _Head:
    """A request's headers and its head on the wire, built and checked once per header set."""

    __slots__ = ("headers", "target", "wire")

    def __init__(
        self,
        method: bytes,
        url: str,
        api_key: str | None,
        configured: tuple[tuple[str, str], ...],
        accept: str,
    ) -> None:
        target = self.target = _target(url)
        self.headers = (target.host_header, *_headers(api_key, configured, accept))
        check_headers(self.headers)
        self.wire = request_head(method, target.path, self.headers)


@lru_cache(maxsize=256)
def _head(
    method: bytes,
    url: str,
    api_key: str | None,
    configured: tuple[tuple[str, str], ...],
    accept: str,
) -> _Head:
    return _Head(method, url, api_key, configured, accept)


def _headers(
    api_key: str | None, configured: tuple[tuple[str, str], ...], accept: str
) -> tuple[tuple[bytes, bytes], ...]:
    """The request headers: what the SDK sends that servers rely on, then configured ones
    (a configured Authorization replaces the bearer key; names compare case-insensitively)."""
    base = {
        "accept": ("Accept", accept),
        "accept-encoding": ("Accept-Encoding", "gzip, deflate"),
        "content-type": ("Content-Type", "application/json"),
        "user-agent": ("User-Agent", USER_AGENT),
    }
    if api_key is not None:
        base["authorization"] = ("Authorization", f"Bearer {api_key}")
    for name, value in configured:
        base[name.lower()] = (name, value)
    return tuple((name.encode("ascii"), value.encode("ascii")) for name, value in base.values())


def header_map(raw: Any) -> dict[str, str]:
    """Response headers by lower-case name (a repeated header keeps its last value)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}


class _Trace:
    """What one try did: opened a connection (and got it up), got an answer. The direct
    pools set the flags; httpcore (proxied routes) reports through trace events. ``reuse``
    is what the try may do: take an idle connection (not after a stale one failed)."""

    __slots__ = ("answered", "connected", "fresh", "reuse")

    def __init__(self, reuse: bool = True) -> None:
        self.fresh = False
        self.connected = False
        self.answered = False
        self.reuse = reuse

    def __call__(self, event: str, info: Any) -> None:
        if event.endswith("connect_tcp.started"):
            self.fresh = True
        elif event.endswith(("connect_tcp.complete", "start_tls.complete")):
            self.connected = True
        elif event.endswith("start_tls.started"):
            self.connected = False  # a TLS handshake still to come is part of connecting
        elif event.endswith("receive_response_headers.complete"):
            self.answered = True

    async def acall(self, event: str, info: Any) -> None:
        self(event, info)


def _stale(exc: Exception, trace: _Trace) -> bool:
    """The server had closed this reused connection before our request reached it.

    Only two failures say so: the request could not be written (the peer was gone: a write
    error, or a broken pipe, which asyncio reports at the next read), or the
    first read met a clean end of stream (a FIN the server sent while the connection sat
    idle; its kernel answers our request with an RST, which the read reports after the FIN).
    A reset without that FIN is a server that read the request and dropped it: that one is
    the retry policy's to judge, as is anything on a fresh connection or after an answer.
    """
    if trace.fresh or trace.answered:
        return False
    write_errors, protocol_errors = _kinds("WriteError"), _kinds("RemoteProtocolError")
    if isinstance(exc, write_errors) or _broken_pipe(exc):
        return True  # asyncio reports a failed write at the next read
    return isinstance(exc, protocol_errors) and "without sending" in str(exc)


def _kinds(name: str) -> tuple[type[Exception], ...]:
    """Our failure class of that name, and httpcore's where a proxied route loaded it."""
    ours: type[Exception] = getattr(http1_wire, name)
    httpcore = _loaded_httpcore()
    return (ours,) if httpcore is None else (ours, getattr(httpcore, name))


def _loaded_httpcore() -> Any:
    """httpcore if something imported it (a proxied route, the SDK), else None: a direct
    route never needs its 50 ms import."""
    return sys.modules.get("httpcore2") or sys.modules.get("httpcore")


def _broken_pipe(exc: BaseException) -> bool:
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return False
        if isinstance(current, BrokenPipeError):
            return True
        current = current.__cause__ or current.__context__
    return False


# -- responses ------------------------------------------------------------------------------


class _Decoder:
    """Content-Encoding gzip/deflate, inflated at most :data:`_SLICE` bytes at a time."""

    __slots__ = ("_fed", "_inflate", "_raw_deflate")

    def __init__(self, encoding: str) -> None:
        self._raw_deflate = encoding == "deflate"
        self._fed = False
        # gzip: wbits 31; deflate: zlib-wrapped (47 detects it), retried raw below.
        self._inflate = zlib.decompressobj(47 if self._raw_deflate else 31)

    def finish(self) -> None:
        """At the body's end: a compressed stream cut short (no final block, no gzip
        trailer) is refused, not read as a shorter answer."""
        if self._fed and not self._inflate.eof:
            raise MalformedResponseError("the response's compressed body ended before its end")

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._fed = self._fed or bool(data)
        try:
            out = self._inflate.decompress(data, _SLICE)
            if out:
                yield out
            while self._inflate.unconsumed_tail:
                out = self._inflate.decompress(self._inflate.unconsumed_tail, _SLICE)
                if out:
                    yield out
        except zlib.error:
            if self._raw_deflate:  # some servers send raw deflate under "deflate"
                self._raw_deflate = False
                self._inflate = zlib.decompressobj(-15)
                yield from self.feed(data)
                return
            raise MalformedResponseError("the response's compressed body is corrupt") from None


def _decoder(headers: Mapping[str, str]) -> _Decoder | None:
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Decoder("deflate" if encoding == "deflate" else "gzip")
    raise MalformedResponseError(f"the response is encoded as {encoding!r}, which was not asked")


class LeanResponse:
    """An unread response: status, headers (lower-case names), decoded body bytes.

    ``cap`` bounds the raw bytes (None for an event stream, bounded by its reader); decoded
    pieces come out in slices so the readers' size checks see a bomb before memory does.
    """

    __slots__ = ("_cap", "_decoder", "_on_error", "_raw", "headers", "status")

    def __init__(self, raw: Any, cap: int | None, on_error: Any) -> None:
        self._raw = raw
        self.status: int = raw.status
        self.headers = header_map(raw.headers)
        self._decoder = _decoder(self.headers)
        self._cap = cap
        self._on_error = on_error

    def _refuse_declared_excess(self) -> None:
        """A declared length over the cap fails before a byte is read: the body is not
        waited for (a slow server would hold the attempt to its timeout, then be retried)."""
        cap = self._cap
        declared = self.headers.get("content-length", "")
        if cap is not None and declared.isdigit() and int(declared) > cap:
            raise bounds.too_large("response body", "max_body_bytes", cap)

    def iter_bytes(self) -> Iterator[bytes]:
        self._refuse_declared_excess()
        seen, cap, decoder = 0, self._cap, self._decoder
        try:
            for chunk in self._raw.iter_stream():
                seen += len(chunk)
                if cap is not None and seen > cap:
                    raise bounds.too_large("response body", "max_body_bytes", cap)
                if decoder is None:
                    yield chunk
                else:
                    yield from decoder.feed(chunk)
            if decoder is not None:
                decoder.finish()
        except ProviderError:
            raise
        except Exception as exc:
            mapped = self._on_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        self._refuse_declared_excess()
        seen, cap, decoder = 0, self._cap, self._decoder
        try:
            # The stream itself, not Response.aiter_stream(): one generator less per body, and
            # aclose() closes the stream whichever way the loop ends.
            async for chunk in self._raw.stream:
                seen += len(chunk)
                if cap is not None and seen > cap:
                    raise bounds.too_large("response body", "max_body_bytes", cap)
                if decoder is None:
                    yield chunk
                else:
                    for piece in decoder.feed(chunk):
                        yield piece
            if decoder is not None:
                decoder.finish()
        except ProviderError:
            raise
        except Exception as exc:
            mapped = self._on_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def close(self) -> None:
        self._raw.close()

    async def aclose(self) -> None:
        await self._raw.aclose()


# -- the transport --------------------------------------------------------------------------


class LeanTransport:
    """Sends JSON to an OpenAI-compatible server and hands back the unread response.

    Errors come out as the core's: a status of 300 and up as the error its body and headers
    name (:func:`responses.status_error`), network failures as APIConnectionError naming
    host, port and cause. ``provider``/``model`` are left for the caller to fill in.
    """

    name = "lean"

    def __init__(self) -> None:
        guard_loggers(*_LOGGERS)
        self._pools = SyncPools()
        self._async_pools = AsyncPools()

    def _request(
        self,
        connection: Connection,
        extra_headers: Mapping[str, str],
        method: bytes,
        url: str,
        body: bytes | None,
        accept: str,
    ) -> Outgoing:
        configured = (
            {**extra_headers, **connection.headers} if extra_headers else connection.headers
        )
        head = _head(method, url, connection.api_key, tuple(configured.items()), accept)
        target = head.target
        return Outgoing(
            method, url, target.origin, head.headers, head.wire, body, connection.timeout
        )

    def post(
        self,
        connection: Connection,
        extra_headers: Mapping[str, str],
        path: str,
        body: Any,
        *,
        stream: bool = False,
    ) -> LeanResponse:
        """POST ``body`` (a JSON-able dict, sent as it is) and return the unread 2xx response."""
        data = encode_json(body)
        accept = "text/event-stream" if stream else "application/json"
        url = connection.endpoint + path
        request = self._request(connection, extra_headers, b"POST", url, data, accept)
        scheme, host, _ = request.origin
        raw = self._send(self._pools.get(scheme, host), request)
        return self._checked(raw, request, stream)

    async def apost(
        self,
        connection: Connection,
        extra_headers: Mapping[str, str],
        path: str,
        body: Any,
        *,
        stream: bool = False,
    ) -> LeanResponse:
        data = encode_json(body)
        accept = "text/event-stream" if stream else "application/json"
        url = connection.endpoint + path
        request = self._request(connection, extra_headers, b"POST", url, data, accept)
        scheme, host, _ = request.origin
        raw = await self._asend(self._async_pools.get(scheme, host), request)
        return await self._achecked(raw, request, stream)

    def get(
        self, connection: Connection, extra_headers: Mapping[str, str], url: str
    ) -> LeanResponse:
        """GET an absolute ``url`` with the connection's headers; the unread 2xx response."""
        request = self._request(connection, extra_headers, b"GET", url, None, "application/json")
        scheme, host, _ = request.origin
        raw = self._send(self._pools.get(scheme, host), request)
        return self._checked(raw, request, False)

    def close(self) -> None:
        self._pools.close()
        self._async_pools.forget()

    async def aclose(self) -> None:
        await self._async_pools.aclose()

    # -- sending, with the stale-connection rule ----------------------------------------

    def _send(self, pool: Any, request: Outgoing) -> Any:
        reuse = True
        for left in range(STALE_RETRIES, -1, -1):
            trace = _Trace(reuse)
            try:
                return pool.send(request, trace)
            except Exception as exc:
                if left and _stale(exc, trace):
                    _log_stale(request)
                    # On a new connection: the other idle ones may have been closed alike
                    # (a server closing each after one request closes every one).
                    reuse = False
                    continue
                raise _network_error(exc, request, trace) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _asend(self, pool: Any, request: Outgoing) -> Any:
        reuse = True
        for left in range(STALE_RETRIES, -1, -1):
            trace = _Trace(reuse)
            try:
                return await pool.send(request, trace)
            except Exception as exc:
                if left and _stale(exc, trace):
                    _log_stale(request)
                    # On a new connection: the other idle ones may have been closed alike
                    # (a server closing each after one request closes every one).
                    reuse = False
                    continue
                raise _network_error(exc, request, trace) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- status ---------------------------------------------------------------------------

    def _wrap(self, raw: Any, request: Outgoing, stream: bool) -> LeanResponse:
        if log.isEnabledFor(logging.DEBUG):
            _log_exchange(request, raw)
        success = 200 <= raw.status < 300
        cap = None if success and stream else bounds.limits().max_body_bytes
        return LeanResponse(raw, cap, lambda exc: _network_error(exc, request, None))

    def _checked(self, raw: Any, request: Outgoing, stream: bool) -> LeanResponse:
        try:
            response = self._wrap(raw, request, stream)
        except BaseException:
            raw.close()  # (an encoding not asked for) else its pool slot is never given back
            raise
        if 200 <= response.status < 300:
            return response
        try:
            content = bounds.read_limited(response.iter_bytes(), bounds.limits().max_body_bytes)
        finally:
            response.close()
        raise error_for(response.status, content, response.headers, stream=stream)

    async def _achecked(self, raw: Any, request: Outgoing, stream: bool) -> LeanResponse:
        try:
            response = self._wrap(raw, request, stream)
        except BaseException:
            await raw.aclose()
            raise
        if 200 <= response.status < 300:
            return response
        try:
            limit = bounds.limits().max_body_bytes
            content = await bounds.aread_limited(response.aiter_bytes(), limit)
        finally:
            await response.aclose()
        raise error_for(response.status, content, response.headers, stream=stream)


def encode_json(body: Any) -> bytes:
    """The request body as the SDK would send it (compact, UTF-8, no NaN)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def error_for(
    status: int, content: bytes, headers: Mapping[str, str], *, stream: bool
) -> ProviderError:
    """The core error for an error status: the body's ``error`` object as the SDK reads it
    (the whole JSON body without one, else its text)."""
    try:
        data: Any = json.loads(content) if content else None
    except (ValueError, RecursionError):
        data = content[:500].decode("utf-8", "replace") or None
    error = data.get("error", data) if isinstance(data, dict) else data
    if stream and status == 400 and responses.rejects_stream_param(error):
        return StreamingNotSupportedError(
            "the server does not stream this model",
            status_code=400,
            code="unsupported_value",
            request_id=headers.get("x-request-id"),
        )
    return responses.status_error(
        status, error, headers, provider="", model="", request_id=headers.get("x-request-id")
    )


def _log_exchange(request: Outgoing, raw: Any) -> None:
    """At DEBUG (``-vv``): what was sent (header names only: values may be credentials) and
    what came back, response headers included, through the redacting filter like any record
    of ours (a server may echo a key in a header)."""
    sent = [name.decode("latin-1") for name, _ in request.headers]
    got = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw.headers]
    method = request.method.decode("ascii")
    url = request.url.partition("?")[0]  # a query may carry a token
    log.debug("%s %s (headers %s) -> HTTP %s %s", method, url, sent, raw.status, got)


def _log_stale(request: Outgoing) -> None:
    _, host, port = request.origin
    log.debug("%s:%s had closed an idle connection; sending again", host, port)


def _network_error(exc: Exception, request: Outgoing, trace: _Trace | None) -> Exception:
    if isinstance(exc, ProviderError):
        return exc
    httpcore = _loaded_httpcore()
    built_wrong = httpcore is not None and isinstance(exc, httpcore.LocalProtocolError)
    if built_wrong:
        return exc  # a request we built wrong: a bug to see, not a network failure
    network: tuple[type[BaseException], ...] = (http1_wire.NetworkError, OSError)
    if httpcore is not None:
        network += (
            httpcore.NetworkError,
            httpcore.TimeoutException,
            httpcore.ProtocolError,
            httpcore.ProxyError,
        )
    if not isinstance(exc, network):
        return exc
    connected = trace is None or not trace.fresh or trace.connected
    _, host, port = request.origin
    error: APIConnectionError = connection_error(exc, host, port, connected=connected)
    return error
