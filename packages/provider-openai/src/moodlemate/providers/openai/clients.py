"""A pool of openai SDK clients, one per (key, endpoint, headers), shared across threads.

A client owns an HTTP connection pool; building one per call would pay TLS and TCP set-up
every time. The SDK's own retries are off: the facade's policy is the only retry layer.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from moodlemate.ai.provider import Connection

if TYPE_CHECKING:
    import openai

__all__ = ["DEFAULT_TIMEOUT", "ClientPool"]

DEFAULT_TIMEOUT = 600.0
_PoolKey = tuple[str | None, str, tuple[tuple[str, str], ...]]


class ClientPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[_PoolKey, openai.OpenAI] = {}

    def get(self, connection: Connection, extra_headers: Mapping[str, str]) -> openai.OpenAI:
        headers = {**extra_headers, **connection.headers}
        key: _PoolKey = (connection.api_key, connection.endpoint, tuple(sorted(headers.items())))
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._clients[key] = _new_client(connection, headers)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


def _new_client(connection: Connection, headers: Mapping[str, str]) -> openai.OpenAI:
    import openai

    # Omit() keeps the SDK from sending OPENAI_ORG_ID / OPENAI_PROJECT_ID from the
    # environment to whatever host the endpoint names.
    default_headers: dict[str, object] = {
        "OpenAI-Organization": openai.Omit(),
        "OpenAI-Project": openai.Omit(),
        **headers,
    }
    return openai.OpenAI(
        # The SDK falls back to OPENAI_API_KEY when given None, which would leak that key to
        # a custom host; a keyless connection omits the Authorization header per request.
        api_key=connection.api_key or "no-key",
        base_url=connection.endpoint,
        max_retries=0,
        timeout=DEFAULT_TIMEOUT,
        default_headers=default_headers,  # type: ignore[arg-type]
    )
