"""OpenAI's Batch API (``/v1/files``, ``/v1/batches``) behind the core's remote-batch contract.

Request lines are built by the provider's own ``body``, so a batch sends exactly what a live
call would (the reasoning-model adaptation and a typed answer's format included), to the
endpoint a live call would use: ``/v1/responses`` for Responses-only models and requests with
``api="responses"`` (their results read by the live Responses parser), ``/v1/chat/completions``
for the rest. A batch takes one endpoint, so the runner keeps the two apart.

Each method sends once through the provider's pooled SDK client, whose own retries are off.
The provider hands over those parts (:class:`BatchParts`) rather than itself, so this module
does not import the provider.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn

from moodlemate.ai.plugin import (
    ChatRequest,
    ProviderError,
    RemoteBatch,
    RemoteBatches,
    RemoteResult,
    UnsupportedFeatureError,
)
from moodlemate.providers.openai import pricing, responses, responses_reply

if TYPE_CHECKING:
    from moodlemate.ai.plugin import Connection, Price

    import openai

__all__ = [
    "CHAT_ENDPOINT",
    "MAX_BYTES",
    "MAX_REQUESTS",
    "RESPONSES_ENDPOINT",
    "BatchParts",
    "OpenAIBatches",
]

MAX_REQUESTS = 50_000
"""Requests per input file (OpenAI API reference, Create batch: 'up to 50,000 requests')."""
MAX_BYTES = 200 * 1024 * 1024
"""Bytes per input file (the same page: 'up to 200 MB in size')."""
CHAT_ENDPOINT: Final = "/v1/chat/completions"
RESPONSES_ENDPOINT: Final = "/v1/responses"
_CALL_TIMEOUT = 120.0
_LIST_PAGES = 20
_NO_REQUEST: Final = ChatRequest(model="", messages=())


@dataclass(frozen=True, slots=True)
class BatchParts:
    """What the Batch API takes from its provider."""

    name: str
    body: Callable[[ChatRequest], dict[str, Any]]
    """The request body a live call would send."""
    client: Callable[[Connection], openai.OpenAI]
    """The pooled SDK client for a connection."""
    translate: Callable[[Exception, ChatRequest], ProviderError | None]
    """The provider's error mapping."""
    uses_responses: Callable[[ChatRequest], bool]
    """Whether a live call of the request goes to the Responses API."""


class OpenAIBatches(RemoteBatches):
    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES

    def __init__(self, parts: BatchParts) -> None:
        self._parts = parts

    def endpoint_for(self, request: ChatRequest) -> str:
        return RESPONSES_ENDPOINT if self._parts.uses_responses(request) else CHAT_ENDPOINT

    def request_line(self, custom_id: str, request: ChatRequest) -> bytes:
        line = {"custom_id": custom_id, "method": "POST", "url": self.endpoint_for(request)}
        line["body"] = self._parts.body(request)  # type: ignore[assignment]
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def upload(self, connection: Connection, filename: str, data: bytes) -> str:
        try:
            uploaded = self._client(connection).files.create(
                file=(filename, data, "application/jsonl"), purpose="batch"
            )
        except Exception as exc:
            self._raise(exc, connection, "/files", absent_means_unsupported=True)
        return str(uploaded.id)

    def create(
        self,
        connection: Connection,
        file_id: str,
        metadata: Mapping[str, str],
        endpoint: str | None = None,
    ) -> RemoteBatch:
        try:
            batch = self._client(connection).batches.create(
                input_file_id=file_id,
                endpoint=_endpoint(endpoint),
                completion_window="24h",
                metadata=dict(metadata),
            )
        except Exception as exc:
            self._raise(exc, connection, "/batches")
        return _batch(batch)

    def retrieve(self, connection: Connection, batch_id: str) -> RemoteBatch:
        try:
            return _batch(self._client(connection).batches.retrieve(batch_id))
        except Exception as exc:
            self._raise(exc, connection, "/batches")

    def cancel(self, connection: Connection, batch_id: str) -> RemoteBatch:
        try:
            return _batch(self._client(connection).batches.cancel(batch_id))
        except Exception as exc:
            self._raise(exc, connection, "/batches")

    def find(self, connection: Connection, key: str, value: str) -> RemoteBatch | None:
        """Scan the newest batches (at most 2,000: a lost submission is a recent one)."""
        client = self._client(connection)
        after: str | None = None
        try:
            for _ in range(_LIST_PAGES):
                page = (
                    client.batches.list(limit=100, after=after)
                    if after
                    else client.batches.list(limit=100)
                )
                for batch in page.data:
                    if (batch.metadata or {}).get(key) == value:
                        return _batch(batch)
                if not page.data or not page.has_more:
                    return None
                after = page.data[-1].id
        except Exception as exc:
            self._raise(exc, connection, "/batches")
        return None

    def download(self, connection: Connection, file_id: str, path: str | os.PathLike[str]) -> None:
        """Resume after the bytes already in ``path`` (``Range``); a server that ignores the
        range answers 200 with the whole file, which then replaces the partial one."""
        with open(path, "ab") as file:
            offset = file.tell()
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                content = self._client(connection).files.with_streaming_response.content
                with content(file_id, extra_headers=headers) as response:
                    if offset and response.status_code != 206:
                        file.truncate(0)
                    for chunk in response.iter_bytes():  # as received: a cut keeps its prefix
                        file.write(chunk)
                    file.flush()
                    os.fsync(file.fileno())
            except Exception as exc:
                file.flush()
                if offset and getattr(exc, "status_code", None) == 416:
                    return  # everything was already here: nothing left in range
                self._raise(exc, connection, "/files")

    def parse_line(self, line: bytes, model: str, endpoint: str | None = None) -> RemoteResult:
        name = self._parts.name
        parse = (
            responses_reply.parse_response
            if _endpoint(endpoint) == RESPONSES_ENDPOINT
            else responses.parse_completion
        )
        data = json.loads(line)
        custom_id = str(data.get("custom_id"))
        response = data.get("response")
        if isinstance(response, dict):
            status = int(response.get("status_code") or 0)
            request_id = response.get("request_id")
            headers = {"x-request-id": request_id} if isinstance(request_id, str) else {}
            body = response.get("body")
            if 200 <= status < 300:
                try:
                    content = json.dumps(body).encode()
                    completion = parse(content, headers, provider=name, model=model)
                except ProviderError as exc:
                    return RemoteResult(custom_id, error=exc)
                return RemoteResult(custom_id, completion=completion)
            error = body.get("error") if isinstance(body, dict) else None
            return RemoteResult(
                custom_id,
                error=responses.status_error(
                    status, error, headers, provider=name, model=model, request_id=request_id
                ),
            )
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        code = str(error.get("code") or "batch_error")
        message = str(error.get("message") or "the batch returned no response for this request")
        return RemoteResult(
            custom_id,
            error=ProviderError(message, provider=name, model=model, code=code, retryable=True),
        )

    def price(self, model: str) -> Price | None:
        info = pricing.openai_prices().batch(model)
        return None if info is None else info.price

    # -- internals -------------------------------------------------------------------------

    def _client(self, connection: Connection) -> openai.OpenAI:
        client = self._parts.client(connection)
        return client.with_options(timeout=connection.timeout or _CALL_TIMEOUT)

    def _raise(
        self,
        exc: Exception,
        connection: Connection,
        what: str,
        *,
        absent_means_unsupported: bool = False,
    ) -> NoReturn:
        """The core error; a 404 on upload means the server has no Files API at all."""
        # The provider's own mapping, transport failures mid-body included.
        mapped = self._parts.translate(exc, _NO_REQUEST)
        if mapped is None:
            raise exc
        if absent_means_unsupported and mapped.status_code in (404, 405):
            raise UnsupportedFeatureError(
                f"{connection.endpoint} does not serve OpenAI's Files API (HTTP "
                f"{mapped.status_code} on {what}): it cannot run remote batches"
            ) from exc
        raise mapped from exc


def _endpoint(endpoint: str | None) -> Any:
    """The endpoint of a batch (None: a part planned before batches had two, so chat)."""
    if endpoint is None:
        return CHAT_ENDPOINT
    if endpoint not in (CHAT_ENDPOINT, RESPONSES_ENDPOINT):
        raise UnsupportedFeatureError(f"remote batches cannot send requests to {endpoint!r}")
    return endpoint


def _batch(raw: Any) -> RemoteBatch:
    counts = raw.request_counts
    errors = raw.errors.data if raw.errors is not None and raw.errors.data else []
    return RemoteBatch(
        id=str(raw.id),
        status=str(raw.status),
        total=int(counts.total) if counts else 0,
        completed=int(counts.completed) if counts else 0,
        failed=int(counts.failed) if counts else 0,
        output_file_id=raw.output_file_id,
        error_file_id=raw.error_file_id,
        errors=tuple(f"{e.code}: {e.message}" for e in errors),
        metadata=dict(raw.metadata or {}),
    )
