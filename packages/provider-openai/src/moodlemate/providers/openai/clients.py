"""Pools of openai SDK clients, one per (key, endpoint, headers), shared across threads.

A client owns an HTTP connection pool; building one per call would pay TLS and TCP set-up
every time. The SDK's own retries are off: the facade's policy is the only retry layer.
An async client's connections belong to the event loop that opened them, so async clients
are pooled per loop too. A client of a closed loop is never reused: when a new loop shows
up, the clients of loops closed since are dropped. (A weakly keyed map would not free them:
each client's open connections refer to their loop, so the key would never die.)

Each pool keeps at most :data:`MAX_CLIENTS` clients (per loop for async), dropping the
oldest: a service calling on behalf of many users, each with their own key, would
otherwise keep a client and its open connections per key for the life of the process.
A dropped client is not closed, since another thread may be using it; its connections
close when it is garbage-collected. Every client's HTTP stack enforces the hard bounds of
:mod:`moodlemate.providers.openai.transport`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from moodlemate.ai.plugin import Connection, guard_loggers
from moodlemate.providers.openai.after_fork import drop_after_fork
from moodlemate.providers.openai.transport import (
    aclose_idle_in_client,
    bound_async_client,
    bound_client,
    close_idle_in_client,
)

if TYPE_CHECKING:
    import openai

__all__ = ["DEFAULT_TIMEOUT", "MAX_CLIENTS", "AsyncClientPool", "ClientPool"]

DEFAULT_TIMEOUT = 600.0
MAX_CLIENTS = 32
_SDK_LOGGERS = ("openai", "httpx", "httpcore", "httpx2", "httpcore2")
_PoolKey = tuple[str | None, str, tuple[tuple[str, str], ...]]


class ClientPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[_PoolKey, openai.OpenAI] = {}
        drop_after_fork(self)

    def after_fork(self) -> None:
        """In a forked child: new SDK clients, none of the parent's connections (see
        :mod:`~moodlemate.providers.openai.after_fork`); the old ones are left unused."""
        self._lock = threading.Lock()
        self._clients = {}

    def get(self, connection: Connection, extra_headers: Mapping[str, str]) -> openai.OpenAI:
        key, headers = _pool_key(connection, extra_headers)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    import openai

                    _make_room(self._clients)
                    client = self._clients[key] = openai.OpenAI(
                        **_client_options(connection, headers),
                        http_client=bound_client(timeout=DEFAULT_TIMEOUT),
                    )
        return client

    def close(self) -> None:
        """Close every connection no call is using. The clients stay open: another thread
        may hold one for a call about to be sent (a closed one would fail it)."""
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:
            close_idle_in_client(client._client)


class AsyncClientPool:
    """Async clients per running event loop, then per (key, endpoint, headers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, dict[_PoolKey, openai.AsyncOpenAI]] = {}

    def get(self, connection: Connection, extra_headers: Mapping[str, str]) -> openai.AsyncOpenAI:
        key, headers = _pool_key(connection, extra_headers)
        loop = asyncio.get_running_loop()
        with self._lock:
            clients = self._loops.get(loop)
            if clients is None:
                self._loops = {lp: c for lp, c in self._loops.items() if not lp.is_closed()}
                clients = self._loops[loop] = {}
            client = clients.get(key)
            if client is None:
                import openai

                _make_room(clients)
                client = clients[key] = openai.AsyncOpenAI(
                    **_client_options(connection, headers),
                    # The SDK's default http client, collected unclosed, schedules its close
                    # on the loop running then: for a client dropped with its finished loop,
                    # another loop, where it fails loudly ('Event loop is closed').
                    http_client=bound_async_client(timeout=DEFAULT_TIMEOUT),
                )
        return client

    async def aclose(self) -> None:
        """Close the connections of the running loop's clients that no call is using (they
        cannot be closed from another loop). The clients stay: a call of another task may
        be in flight on one, and closing the client would cut it (a retry would send the
        request twice); its connection goes back to the client, for the next ``aclose``."""
        with self._lock:
            clients = list(self._loops.get(asyncio.get_running_loop(), {}).values())
        for client in clients:
            await aclose_idle_in_client(client._client)

    def forget(self) -> None:
        """Drop every loop's clients without closing them (they die with their loops)."""
        with self._lock:
            self._loops = {}


def _make_room(clients: dict[_PoolKey, Any]) -> None:
    """Drop the oldest clients (dicts keep insertion order) so one more fits."""
    while len(clients) >= MAX_CLIENTS:
        del clients[next(iter(clients))]


def _pool_key(
    connection: Connection, extra_headers: Mapping[str, str]
) -> tuple[_PoolKey, dict[str, str]]:
    headers = {**extra_headers, **connection.headers}
    key: _PoolKey = (connection.api_key, connection.endpoint, tuple(sorted(headers.items())))
    return key, headers


def _client_options(connection: Connection, headers: Mapping[str, str]) -> dict[str, Any]:
    """Constructor arguments shared by the sync and async clients."""
    import openai

    # The SDK and its HTTP stack log at DEBUG what a server sent back, keys it echoed included.
    guard_loggers(*_SDK_LOGGERS)

    # Omit() keeps the SDK from sending OPENAI_ORG_ID / OPENAI_PROJECT_ID from the
    # environment to whatever host the endpoint names.
    default_headers: dict[str, object] = {
        "OpenAI-Organization": openai.Omit(),
        "OpenAI-Project": openai.Omit(),
        # A configured authorization header, spelt in any case, must replace the SDK's own
        # (openai < 3 merges header names case-sensitively and would send both).
        **{_canonical(name): value for name, value in headers.items()},
    }
    return {
        # The SDK falls back to OPENAI_API_KEY when given None, which would leak that key to
        # a custom host; a keyless connection omits the Authorization header per request.
        "api_key": connection.api_key or "no-key",
        "base_url": connection.endpoint,
        "max_retries": 0,
        "timeout": DEFAULT_TIMEOUT,
        "default_headers": default_headers,
    }


def _canonical(name: str) -> str:
    return "Authorization" if name.lower() == "authorization" else name
