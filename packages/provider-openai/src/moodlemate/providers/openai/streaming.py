"""Server-sent events of /chat/completions, parsed straight from the raw HTTP response.

One :class:`ChunkReader` holds the parsing and the running result for both the sync and the
async stream; the two stream classes only differ in how they read bytes. Lines are split
here rather than by httpx, which would buffer a line that never ends without limit: a line
or an event over ``ResponseLimits.max_event_bytes`` raises ResponseTooLargeError. Chunks
are decoded with ``json_loads`` (orjson with the ``fast`` extra) into dicts: no SDK model per delta.

A spoken reply (``modalities: ["text", "audio"]``) streams ``delta.audio`` pieces: its id, its
base64 ``data`` and its ``transcript`` in chunks, and ``expires_at`` (the shape of
``message.audio``; the OpenAPI spec's stream delta does not list it, the API sends it). They
are put together into ``Completion.audio``; the transcript's pieces are the stream's text
deltas when the reply has no text of its own (an audio reply's ``content`` is null). All the
audio kept counts against ``ResponseLimits.max_stream_text``, so endless audio is cut off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any

from moodlemate.ai.plugin import (
    AsyncProviderStream,
    Completion,
    MalformedResponseError,
    ProviderError,
    ProviderStream,
    RateLimits,
    Usage,
    bounds,
    json_loads,
    rate_limits_from_headers,
)
from moodlemate.providers.openai.responses import (
    decimal_or_none,
    error_in_body,
    rejects_stream_param,
    text_or,
    tier_of,
    usage_from,
)

__all__ = ["AsyncSSEStream", "ChunkReader", "LineSplitter", "SSEStream", "rejects_streaming"]

_TEXT_ONLY = frozenset({"content", "role"})
"""The keys of most deltas: nothing to collect beside their text."""

Translate = Callable[[Exception], ProviderError | None]


class LineSplitter:
    """Bytes in, complete lines out (``\n``, ``\r\n`` or ``\r``), none longer than ``limit``."""

    __slots__ = ("_buffer", "_limit")

    def __init__(self, limit: int) -> None:
        self._buffer = b""
        self._limit = limit

    def feed(self, chunk: bytes) -> list[str]:
        data = self._buffer + chunk if self._buffer else chunk
        if b"\r" in data:
            return self._feed_any(data)
        # The common case, only \n: split the complete part once (a \n byte never sits
        # inside a multi-byte UTF-8 character, so it decodes in one piece).
        end = data.rfind(b"\n")
        self._buffer = data[end + 1 :]
        if len(self._buffer) > self._limit:
            raise self.too_long()
        if end < 0:
            return []
        complete = data[:end]
        if end > self._limit and any(len(line) > self._limit for line in complete.split(b"\n")):
            raise self.too_long()
        return complete.decode("utf-8", "replace").split("\n")

    def _feed_any(self, data: bytes) -> list[str]:
        lines = data.splitlines(keepends=True)
        # A last line without its newline (or ending in a \r whose \n may follow) waits.
        self._buffer = b"" if lines[-1].endswith(b"\n") else lines.pop()
        if len(self._buffer) > self._limit or any(len(line) > self._limit for line in lines):
            raise self.too_long()
        return [line.rstrip(b"\r\n").decode("utf-8", "replace") for line in lines]

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer, b""
        return [rest.rstrip(b"\r\n").decode("utf-8", "replace")] if rest else []

    def too_long(self) -> Exception:
        return bounds.too_large("one stream event", "max_event_bytes", self._limit)


class ChunkReader:
    """Feeds on SSE lines, returns each text delta, and builds the final Completion."""

    __slots__ = (
        "_audio",
        "_audio_size",
        "_data",
        "_data_size",
        "_done",
        "_finish_reason",
        "_headers",
        "_id",
        "_max_audio",
        "_max_event",
        "_model",
        "_parts",
        "_provider",
        "_reasoning",
        "_refusal",
        "_reported_cost",
        "_requested_model",
        "_tier",
        "_tool_calls",
        "_usage",
    )

    def __init__(
        self,
        headers: Any,
        *,
        provider: str,
        model: str,
        max_event_bytes: int = bounds.DEFAULT_LIMITS.max_event_bytes,
    ) -> None:
        self._headers = headers
        self._max_event = max_event_bytes
        self._data_size = 0
        self._provider = provider
        self._requested_model = model
        self._data: list[str] = []
        self._parts: list[str] = []
        self._done = False
        self._finish_reason: str | None = None
        self._id: str | None = headers.get("x-request-id")
        self._model: str | None = None
        self._usage: Usage | None = None
        self._reported_cost: Decimal | None = None
        self._refusal: list[str] = []
        self._reasoning: list[str] = []
        self._tier: str | None = None
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self._audio: dict[str, Any] | None = None
        self._audio_size = 0
        self._max_audio = bounds.limits().max_stream_text

    def feed(self, line: str) -> str | None:
        """One line of the body; returns the text of an event it completes, if any."""
        if not line:
            return self.flush()
        if line.startswith(":"):  # comment / keep-alive
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data_size += len(value)
            if self._data_size > self._max_event:  # an event of endless short data lines
                raise bounds.too_large("one stream event", "max_event_bytes", self._max_event)
            self._data.append(value.removeprefix(" "))
        return None

    @property
    def max_event_bytes(self) -> int:
        return self._max_event

    def flush(self) -> str | None:
        """Dispatch a pending event (also at the end of a body without a final blank line)."""
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data = []
        self._data_size = 0
        if data == "[DONE]":
            self._done = True
            return None
        return self._chunk(data)

    def _chunk(self, data: str) -> str | None:
        try:
            chunk = json_loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            chunk = None
        if not isinstance(chunk, dict):
            raise MalformedResponseError(
                f"stream event is not a JSON object ({len(data)} characters)",
                provider=self._provider,
                model=self._requested_model,
                request_id=self._id,
            )
        error = chunk.get("error")
        if error:
            raise error_in_body(
                error, self._headers, provider=self._provider, model=self._requested_model
            )
        self._model = text_or(chunk.get("model"), self._model or "") or None
        self._tier = tier_of(chunk.get("service_tier")) or self._tier
        self._id = self._id or chunk.get("id")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage_from(usage)
            self._reported_cost = decimal_or_none(usage.get("cost"))
        text = None
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if content is not None and not isinstance(content, str):
                raise MalformedResponseError(
                    f"stream delta content is {type(content).__name__}, not text",
                    provider=self._provider,
                    model=self._requested_model,
                    request_id=self._id,
                )
            if content:
                self._parts.append(content)
                text = content if text is None else text + content
            if isinstance(delta, dict) and not delta.keys() <= _TEXT_ONLY:
                self._other_parts(delta)
                spoken = self._audio_piece(delta.get("audio"))
                if spoken and not self._parts:  # the transcript is the reply's only text
                    text = spoken if text is None else text + spoken
            finish = choice.get("finish_reason")
            self._finish_reason = (
                finish if isinstance(finish, str) and finish else self._finish_reason
            )
        return text

    def _other_parts(self, delta: dict[str, Any]) -> None:
        """Collect what a delta carries besides text: refusal pieces and tool-call pieces
        (the first piece of a call has its id and name, later ones extend its arguments)."""
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._refusal.append(refusal)
        for key in ("reasoning_content", "reasoning"):
            reasoning = delta.get(key)
            if isinstance(reasoning, str) and reasoning:
                self._reasoning.append(reasoning)
                break
        calls = delta.get("tool_calls")
        for piece in calls if isinstance(calls, list) else ():
            if not isinstance(piece, dict):
                continue
            index = self._call_index(piece)
            call = self._tool_calls.setdefault(
                index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            for key in ("id", "type"):
                if isinstance(piece.get(key), str):
                    call[key] = piece[key]
            function = piece.get("function")
            if isinstance(function, dict):
                name = function.get("name")
                # OpenAI sends the name once; some servers repeat it with every piece.
                if isinstance(name, str) and name != call["function"]["name"]:
                    call["function"]["name"] += name
                if isinstance(function.get("arguments"), str):
                    call["function"]["arguments"] += function["arguments"]

    def _audio_piece(self, piece: object) -> str | None:
        """Add one ``delta.audio`` piece to the spoken reply; returns its transcript piece."""
        if not isinstance(piece, dict):
            return None
        audio = self._audio
        if audio is None:
            audio = self._audio = {"id": None, "data": [], "transcript": [], "expires_at": None}
        if isinstance(piece.get("id"), str) and piece["id"]:
            audio["id"] = audio["id"] or piece["id"]
        expires = piece.get("expires_at")
        if isinstance(expires, int) and not isinstance(expires, bool):
            audio["expires_at"] = expires
        data, transcript = piece.get("data"), piece.get("transcript")
        data = data if isinstance(data, str) else ""
        transcript = transcript if isinstance(transcript, str) else ""
        self._audio_size += len(data) + len(transcript)
        if self._audio_size > self._max_audio:
            raise bounds.too_large(
                "the streamed audio", "max_stream_text", self._max_audio, "characters"
            )
        if data:
            audio["data"].append(data)
        if transcript:
            audio["transcript"].append(transcript)
        return transcript or None

    def _spoken(self) -> dict[str, Any] | None:
        """The spoken reply as ``message.audio`` has it, once its pieces are all in."""
        audio = self._audio
        if audio is None:
            return None
        return {
            "id": audio["id"],
            "data": "".join(audio["data"]),
            "transcript": "".join(audio["transcript"]),
            "expires_at": audio["expires_at"],
        }

    def _call_index(self, piece: dict[str, Any]) -> int:
        """Which call a tool-call piece belongs to: its ``index``; without one (some servers
        send none), a piece with a new id starts the next call and any other piece goes on
        with the last one."""
        index = piece.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            return index
        if not self._tool_calls:
            return 0
        last = max(self._tool_calls)
        fresh = piece.get("id")
        if isinstance(fresh, str) and fresh and fresh != self._tool_calls[last]["id"]:
            return last + 1
        return last

    @property
    def rate_limits(self) -> RateLimits | None:
        """What the response's headers said about the rate limits."""
        return rate_limits_from_headers(self._headers)

    def completion(self) -> Completion:
        if not self._done and (self._finish_reason is None or self._usage is None):
            raise MalformedResponseError(
                "stream ended before the completion did (no [DONE])",
                provider=self._provider,
                model=self._requested_model,
                request_id=self._id,
            )
        return Completion(
            text="".join(self._parts),
            model=self._model or self._requested_model,
            provider=self._provider,
            finish_reason=self._finish_reason,
            usage=self._usage or Usage(),
            request_id=self._id,
            reported_cost=self._reported_cost,
            usage_reported=self._usage is not None,
            refusal="".join(self._refusal) or None,
            tool_calls=tuple(self._tool_calls[i] for i in sorted(self._tool_calls)),
            rate_limits=self.rate_limits,
            reasoning="".join(self._reasoning) or None,
            service_tier=self._tier,
            audio=self._spoken(),
        )


class SSEStream(ProviderStream):
    """A sync streamed response (an unread httpx response)."""

    def __init__(self, response: Any, reader: ChunkReader, translate: Translate) -> None:
        self._response = response
        self._reader = reader
        self._translate = translate

    def __iter__(self) -> Iterator[str]:
        reader = self._reader
        lines = LineSplitter(reader.max_event_bytes)
        try:
            for chunk in self._response.iter_bytes():
                for line in lines.feed(chunk):
                    text = reader.feed(line)
                    if text:
                        yield text
            for line in lines.flush():
                text = reader.feed(line)
                if text:
                    yield text
            text = reader.flush()
        except Exception as exc:
            mapped = self._translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        if text:
            yield text

    def completion(self) -> Completion:
        return self._reader.completion()

    @property
    def rate_limits(self) -> RateLimits | None:
        return self._reader.rate_limits

    def close(self) -> None:
        self._response.close()


class AsyncSSEStream(AsyncProviderStream):
    """An async streamed response (an unread httpx response)."""

    def __init__(self, response: Any, reader: ChunkReader, translate: Translate) -> None:
        self._response = response
        self._reader = reader
        self._translate = translate

    async def __aiter__(self) -> AsyncIterator[str]:
        reader = self._reader
        lines = LineSplitter(reader.max_event_bytes)
        try:
            async for chunk in self._response.aiter_bytes():
                for line in lines.feed(chunk):
                    text = reader.feed(line)
                    if text:
                        yield text
            for line in lines.flush():
                text = reader.feed(line)
                if text:
                    yield text
            text = reader.flush()
        except Exception as exc:
            mapped = self._translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        if text:
            yield text

    def completion(self) -> Completion:
        return self._reader.completion()

    @property
    def rate_limits(self) -> RateLimits | None:
        return self._reader.rate_limits

    async def aclose(self) -> None:
        await self._response.aclose()


def rejects_streaming(exc: Exception) -> bool:
    """True for the SDK's 400 when a model does not support ``stream``."""
    if not type(exc).__module__.startswith("openai"):
        return False
    import openai

    return isinstance(exc, openai.BadRequestError) and rejects_stream_param(exc.body)
