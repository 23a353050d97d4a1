"""The lean transport's connection pools: httpcore's, one per proxy route, async ones per loop.

Proxies and trusted CAs come from the environment as the openai SDK (httpx) takes them:
``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` (either case), minus the hosts ``NO_PROXY``
names (curl's rules: ``*``, a host, a domain and its subdomains, an IP); ``SSL_CERT_FILE``
and ``SSL_CERT_DIR`` through httpcore's default TLS context, which httpx uses too.

The sync pools' network backend is :class:`~moodlemate.providers.openai.transport.
DeadlineBackend`, so every connect, read and write ends by the attempt's deadline. An async
pool's connections belong to the event loop that opened them; a pool of a closed loop is
dropped when a new loop shows up.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from moodlemate.providers.openai.transport import DeadlineBackend, httpcore_module

if TYPE_CHECKING:
    import asyncio

__all__ = ["AsyncPools", "SyncPools", "proxy_for"]

MAX_CONNECTIONS = 1000
MAX_IDLE = 100
IDLE_SECONDS = 5.0
"""As the SDK's own client: a server may close an idle connection, so few are kept long."""
_COALESCE = 64 * 1024
ASYNC_SHARDS = 8


@cache
def _ssl_context() -> Any:
    return httpcore_module().default_ssl_context()


_PROXY_NAMES = tuple(
    spelling
    for scheme in ("http", "https", "all", "no")
    for spelling in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY")
)


def proxy_for(scheme: str, host: str) -> str | None:
    """The proxy URL the environment names for ``scheme://host``, or None to go direct
    (read at each call, as the variables may change; the answer is kept per their values)."""
    get = os.environ.get
    values = tuple(get(name) for name in _PROXY_NAMES)
    if not any(values):
        return None
    return _route(scheme, host, values, "REQUEST_METHOD" in os.environ)


@lru_cache(maxsize=256)
def _route(scheme: str, host: str, values: tuple[str | None, ...], cgi: bool) -> str | None:
    found: dict[str, str] = {}
    for name, value in zip(_PROXY_NAMES, values, strict=True):
        key = name[:-6].lower()
        if value and (name.islower() or key not in found):  # lower case first, as urllib
            found[key] = value
    if cgi:  # CGI: HTTP_PROXY may come from a request's Proxy header
        found.pop("http", None)
    url = found.get(scheme) or found.get("all")
    if not url or _bypassed(host, found.get("no", "")):
        return None
    return url if "://" in url else f"http://{url}"


def _bypassed(host: str, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.split("://", 1)[-1].strip("[]")
        if "/" in entry:  # a network: 10.0.0.0/8
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


def _proxy(url: str | None) -> Any:
    if url is None:
        return None
    tls = url.startswith("https:")
    return httpcore_module().Proxy(url, ssl_context=_ssl_context() if tls else None)


def _pool_options(route: str | None, tls: bool) -> dict[str, Any]:
    # Loading the trusted certificates costs 100+ ms: plain-http pools never do it.
    return {
        "ssl_context": _ssl_context() if tls else None,
        "proxy": _proxy(route),
        "max_connections": MAX_CONNECTIONS,
        "max_keepalive_connections": MAX_IDLE,
        "keepalive_expiry": IDLE_SECONDS,
    }


_Route = tuple[str | None, bool]


class SyncPools:
    """One sync httpcore pool per proxy route (None: direct) and TLS or not, shared across
    threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[_Route, Any] = {}

    def get(self, scheme: str, host: str) -> Any:
        route = (proxy_for(scheme, host), scheme == "https")
        pool = self._pools.get(route)
        if pool is None:
            with self._lock:
                pool = self._pools.get(route)
                if pool is None:
                    httpcore = httpcore_module()
                    pool = self._pools[route] = httpcore.ConnectionPool(
                        **_pool_options(*route),
                        network_backend=DeadlineBackend(httpcore.SyncBackend(), coalesce=True),
                    )
        return pool

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


class CoalescingAsyncStream:
    """An async network stream whose writes wait for the next read (up to 64 KiB), so a
    request's headers and body go out in one write (see ``DeadlineStream``)."""

    __slots__ = ("_pending", "_stream")

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._pending = b""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._pending:
            pending, self._pending = self._pending, b""
            await self._stream.write(pending, timeout)
        data: bytes = await self._stream.read(max_bytes, timeout)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if len(self._pending) + len(buffer) <= _COALESCE:
            self._pending += buffer
            return
        buffer, self._pending = self._pending + buffer, b""
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        self._pending = b""
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> CoalescingAsyncStream:
        if self._pending:
            pending, self._pending = self._pending, b""
            await self._stream.write(pending, timeout)
        return CoalescingAsyncStream(
            await self._stream.start_tls(ssl_context, server_hostname, timeout)
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class CoalescingAsyncBackend:
    """httpcore's async network backend, its streams wrapped in CoalescingAsyncStream."""

    __slots__ = ("_backend",)

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> CoalescingAsyncStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return CoalescingAsyncStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> CoalescingAsyncStream:
        stream = await self._backend.connect_unix_socket(path, timeout, socket_options)
        return CoalescingAsyncStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class AsyncPools:
    """Async pools per running event loop, then per proxy route, each route's split in
    :data:`ASYNC_SHARDS` pools, one per task: httpcore matches queued requests to
    connections by scanning both lists at every change, which at 64 concurrent calls on one
    pool cost a quarter of the time; smaller pools scan shorter lists."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, dict[_Route, list[Any]]] = {}

    def get(self, scheme: str, host: str) -> Any:
        import asyncio

        route = (proxy_for(scheme, host), scheme == "https")
        loop = asyncio.get_running_loop()
        with self._lock:
            pools = self._loops.get(loop)
            if pools is None:
                self._loops = {lp: p for lp, p in self._loops.items() if not lp.is_closed()}
                pools = self._loops[loop] = {}
            shards = pools.get(route)
            if shards is None:
                httpcore = httpcore_module()
                options = {
                    **_pool_options(*route),
                    "max_connections": MAX_CONNECTIONS // ASYNC_SHARDS,
                    "max_keepalive_connections": MAX_IDLE // ASYNC_SHARDS,
                }
                shards = pools[route] = [
                    httpcore.AsyncConnectionPool(
                        **options,
                        network_backend=CoalescingAsyncBackend(httpcore.AnyIOBackend()),
                    )
                    for _ in range(ASYNC_SHARDS)
                ]
        # By task: one task's calls, one after another, keep reusing one connection; many
        # tasks spread over the shards.
        return shards[(id(asyncio.current_task()) >> 4) % ASYNC_SHARDS]

    async def aclose(self) -> None:
        """Close the pools of the running loop (they cannot be closed from another)."""
        import asyncio

        with self._lock:
            pools = self._loops.pop(asyncio.get_running_loop(), {})
        for shards in pools.values():
            for pool in shards:
                await pool.aclose()

    def forget(self) -> None:
        with self._lock:
            self._loops = {}
