"""The lean transport's connection pools, one per route (proxy and TLS context), async ones
per event loop: our own for a direct route (:mod:`~moodlemate.providers.openai.http1_sync`,
:mod:`~moodlemate.providers.openai.lean_async`), httpcore's for a proxied one (it speaks to
HTTP proxies and tunnels through them), behind the same ``send``.

Proxies and trusted CAs come from the environment as the openai SDK (httpx) takes them:
``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` (either case), minus the hosts ``NO_PROXY``
names (curl's rules: ``*``, a host, a domain and its subdomains, an IP); ``SSL_CERT_FILE``
and ``SSL_CERT_DIR`` through httpcore's default TLS context, which httpx uses too.

Every sync connect, read and write ends by the attempt's deadline (the direct pool clamps
each; a proxied pool's network backend is :class:`~moodlemate.providers.openai.transport.
DeadlineBackend`). An async
pool's connections belong to the event loop that opened them; a pool of a closed loop is
dropped when a new loop shows up.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from moodlemate.providers.openai.after_fork import drop_after_fork
from moodlemate.providers.openai.transport import (
    DeadlineBackend,
    aclose_idle,
    close_idle,
    httpcore_module,
)

if TYPE_CHECKING:
    import asyncio

    from moodlemate.providers.openai.http1_wire import Outgoing

__all__ = ["AsyncPools", "SyncPools", "proxy_for"]

MAX_CONNECTIONS = 1000
MAX_IDLE = 100
IDLE_SECONDS = 5.0
"""As the SDK's own client: a server may close an idle connection, so few are kept long."""


def _ssl_context() -> Any:
    """The trusted CAs as ``SSL_CERT_FILE``/``SSL_CERT_DIR`` name them when a pool opens (as a
    new SDK client reads them), loaded once per pair of values: loading costs 100+ ms."""
    get = os.environ.get
    return _ssl_context_for(get("SSL_CERT_FILE"), get("SSL_CERT_DIR"))


@lru_cache(maxsize=8)
def _ssl_context_for(ca_file: str | None, ca_dir: str | None) -> Any:
    del ca_file, ca_dir  # the cache key: httpcore reads the same variables
    return httpcore_module().default_ssl_context()


_PROXY_NAMES = tuple(
    spelling
    for scheme in ("http", "https", "all", "no")
    for spelling in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY")
)


_PROXY_KEYS = tuple(name.encode() for name in _PROXY_NAMES)


def proxy_for(scheme: str, host: str) -> str | None:
    """The proxy URL the environment names for ``scheme://host``, or None to go direct
    (read at each call, as the variables may change; the answer is kept per their values)."""
    data = _environ_bytes()
    if data is not None:  # eight dict look-ups, where os.environ raises and catches eight KeyErrors
        raw = tuple(data.get(key) for key in _PROXY_KEYS)
        if not any(raw):
            return None
        values = tuple(None if v is None else os.fsdecode(v) for v in raw)
        return _route(scheme, host, values, b"REQUEST_METHOD" in data)
    get = os.environ.get
    values = tuple(get(name) for name in _PROXY_NAMES)
    if not any(values):
        return None
    return _route(scheme, host, values, "REQUEST_METHOD" in os.environ)


def _environ_bytes() -> dict[bytes, bytes] | None:
    """The environment's own table (POSIX: bytes to bytes), which ``os.environ`` keeps in
    step with every change; None where it is not that."""
    data = getattr(os.environ, "_data", None)
    if os.name != "posix" or not isinstance(data, dict):
        return None
    return data


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


def _pool_options(route: str | None, context: Any) -> dict[str, Any]:
    return {
        "ssl_context": context,
        "proxy": _proxy(route),
        "max_connections": MAX_CONNECTIONS,
        "max_keepalive_connections": MAX_IDLE,
        "keepalive_expiry": IDLE_SECONDS,
    }


_Route = tuple[str | None, Any]
"""A pool's proxy (None: direct) and TLS context (None: plain http): a change of either
variable, proxy or CA, takes a pool of its own, as a new SDK client would."""


def _route_of(scheme: str, host: str) -> _Route:
    # Loading the trusted certificates costs 100+ ms: plain-http routes never do it.
    return proxy_for(scheme, host), _ssl_context() if scheme == "https" else None


def _httpcore_request(request: Outgoing, trace: Any) -> Any:
    headers = list(request.headers)
    if request.body is not None:
        headers.append((b"Content-Length", str(len(request.body)).encode()))
    timeout = request.timeout
    timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    return httpcore_module().Request(
        request.method,
        request.url,
        headers=headers,
        content=request.body,
        extensions={"timeout": timeouts, "trace": trace},
    )


class _ProxiedPool:
    """httpcore's sync pool for a proxied route, behind the direct pool's ``send``."""

    __slots__ = ("_pool",)

    def __init__(self, proxy: str, context: Any) -> None:
        httpcore = httpcore_module()
        self._pool = httpcore.ConnectionPool(
            **_pool_options(proxy, context),
            network_backend=DeadlineBackend(httpcore.SyncBackend(), coalesce=True),
        )

    def send(self, request: Outgoing, trace: Any) -> Any:
        return self._pool.handle_request(_httpcore_request(request, trace))

    def close(self) -> None:
        """The idle connections only, as :meth:`DirectSyncPool.close`: one in use goes back
        to this pool when its call ends, and closes with it once nothing refers to it."""
        close_idle(self._pool)

    def forget(self) -> None:
        """In a forked child: left to the garbage collector, never used (closing would
        go through httpcore's state, which another thread may have held at the fork)."""


class _AsyncProxiedPool:
    """httpcore's async pool for a proxied route, on asyncio's transports."""

    __slots__ = ("_pool",)

    def __init__(self, proxy: str, context: Any) -> None:
        from moodlemate.providers.openai.lean_async import AsyncioBackend

        self._pool = httpcore_module().AsyncConnectionPool(
            **_pool_options(proxy, context), network_backend=AsyncioBackend()
        )

    async def send(self, request: Outgoing, trace: Any) -> Any:
        return await self._pool.handle_async_request(_httpcore_request(request, trace.acall))

    async def aclose(self) -> None:
        """The idle connections only, as the sync one: a call in flight keeps its own (cut,
        it would be sent again by the retry policy)."""
        await aclose_idle(self._pool)


class SyncPools:
    """One sync pool per route (proxy and TLS context), shared across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[_Route, Any] = {}
        drop_after_fork(self)

    def after_fork(self) -> None:
        """In a forked child: none of the parent's connections (see :mod:`after_fork`)."""
        pools, self._pools = self._pools, {}
        self._lock = threading.Lock()  # another thread may have held it at the fork
        for pool in pools.values():
            pool.forget()

    def get(self, scheme: str, host: str) -> Any:
        route = _route_of(scheme, host)
        pool = self._pools.get(route)
        if pool is None:
            with self._lock:
                pool = self._pools.get(route)
                if pool is None:
                    pool = self._pools[route] = _sync_pool(*route)
        return pool

    def close(self) -> None:
        """Close every connection no call is using; a call in flight keeps its own until it
        ends (cutting it could make a retry send the request twice). Later calls get new
        pools."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


class AsyncPools:
    """Async pools per running event loop, then per proxy route: a direct route's is a
    :class:`~moodlemate.providers.openai.lean_async.DirectAsyncPool`, a proxied one's
    httpcore's pool (which speaks to proxies), both on asyncio's own transports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, dict[_Route, Any]] = {}
        drop_after_fork(self)

    def after_fork(self) -> None:
        # A parent's event loop does not run in the child: its pools are dropped unused.
        self._lock = threading.Lock()
        self._loops = {}

    def get(self, scheme: str, host: str) -> Any:
        route = _route_of(scheme, host)
        loop = _running_loop()
        pools = self._loops.get(loop)
        pool = None if pools is None else pools.get(route)
        if pool is None:
            with self._lock:
                pools = self._loops.get(loop)
                if pools is None:
                    self._loops = {lp: p for lp, p in self._loops.items() if not lp.is_closed()}
                    pools = self._loops[loop] = {}
                pool = pools.get(route)
                if pool is None:
                    pool = pools[route] = _async_pool(*route)
        return pool

    async def aclose(self) -> None:
        """Close the pools of the running loop (they cannot be closed from another)."""
        with self._lock:
            pools = self._loops.pop(_running_loop(), {})
        for pool in pools.values():
            await pool.aclose()

    def forget(self) -> None:
        with self._lock:
            self._loops = {}


def _running_loop() -> asyncio.AbstractEventLoop:
    import asyncio

    return asyncio.get_running_loop()


def _sync_pool(proxy: str | None, context: Any) -> Any:
    if proxy is not None:
        return _ProxiedPool(proxy, context)
    from moodlemate.providers.openai.http1_sync import DirectSyncPool

    return DirectSyncPool(
        ssl_context=context,
        max_connections=MAX_CONNECTIONS,
        max_idle=MAX_IDLE,
        idle_seconds=IDLE_SECONDS,
    )


def _async_pool(proxy: str | None, context: Any) -> Any:
    if proxy is not None:
        return _AsyncProxiedPool(proxy, context)
    from moodlemate.providers.openai.lean_async import DirectAsyncPool

    return DirectAsyncPool(
        ssl_context=context,
        max_connections=MAX_CONNECTIONS,
        max_idle=MAX_IDLE,
        idle_seconds=IDLE_SECONDS,
    )
