"""The openai SDK as a transport (``transport="openai-sdk"``), for users who need its behaviour.

Same seam as :mod:`~moodlemate.providers.openai.lean_transport`: JSON out, the unread 2xx
response back; error statuses and network failures come out as the SDK's exceptions, which
the provider maps (:func:`~moodlemate.providers.openai.responses.provider_error`). The SDK's
retries are off and its redirects refused; its HTTP stack carries the same hard bounds
(:mod:`~moodlemate.providers.openai.transport`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moodlemate.ai.plugin import APIConnectionError, Connection
from moodlemate.providers.openai.clients import AsyncClientPool, ClientPool
from moodlemate.providers.openai.connection_errors import connection_error
from moodlemate.providers.openai.transport import httpx_module

__all__ = ["SDKTransport"]


class SDKTransport:
    name = "openai-sdk"

    def __init__(self) -> None:
        self.pool = ClientPool()
        self._async_pool = AsyncClientPool()

    def post(
        self,
        connection: Connection,
        extra_headers: Mapping[str, str],
        path: str,
        body: Any,
        *,
        stream: bool = False,
    ) -> Any:
        client = self.pool.get(connection, extra_headers)
        return client.post(**_post_args(connection, path, body), stream=True)

    async def apost(
        self,
        connection: Connection,
        extra_headers: Mapping[str, str],
        path: str,
        body: Any,
        *,
        stream: bool = False,
    ) -> Any:
        client = self._async_pool.get(connection, extra_headers)
        return await client.post(**_post_args(connection, path, body), stream=True)

    def get(self, connection: Connection, extra_headers: Mapping[str, str], url: str) -> Any:
        client = self.pool.get(connection, extra_headers)
        # Read whole by the SDK (its HTTP stack caps the body at max_body_bytes).
        return client.get(url, cast_to=httpx_module().Response, options=_options(connection))  # type: ignore[call-overload]

    def network_error(
        self, exc: Exception, *, provider: str, model: str
    ) -> APIConnectionError | None:
        """A reset or a stall while reading the body, which the SDK does not wrap."""
        httpx = httpx_module()
        if not isinstance(exc, httpx.TransportError | ConnectionError):
            return None
        try:
            url = exc.request.url  # type: ignore[union-attr]
            host, port = str(url.host), int(url.port or (443 if url.scheme == "https" else 80))
        except (AttributeError, RuntimeError):
            host, port = "the endpoint", 0
        return connection_error(exc, host, port, connected=True, provider=provider, model=model)

    def close(self) -> None:
        self.pool.close()
        self._async_pool.forget()

    async def aclose(self) -> None:
        await self._async_pool.aclose()


def _post_args(connection: Connection, path: str, body: Any) -> dict[str, Any]:
    # The raw HTTP response: we parse the JSON (or the event stream) ourselves.
    return {
        "path": path,
        "body": body,
        "cast_to": httpx_module().Response,
        "options": _options(connection),
    }


def _options(connection: Connection) -> dict[str, Any]:
    # The SDK follows redirects, and httpx strips only Authorization when one leaves the
    # host: configured headers (a gateway's key) and the prompt would go wherever a 307
    # points. An API call has no business being redirected; the 3xx is an error.
    options: dict[str, Any] = {"timeout": connection.timeout, "follow_redirects": False}
    # Without a key, drop the SDK's placeholder "Bearer no-key", but not an
    # Authorization header the user configured for this endpoint (a gateway's token).
    if connection.api_key is None and not any(
        name.lower() == "authorization" for name in connection.headers
    ):
        import openai

        options["headers"] = {"Authorization": openai.Omit()}
    return options
