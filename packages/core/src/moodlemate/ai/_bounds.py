"""The hard bounds of the attempt in progress: its wall-clock deadline and its size limits.

The facade sets them (per attempt, and per delta of a bounded stream) in context variables,
and a provider's HTTP stack reads them on every socket operation, so a server that drips
its headers or its body one byte at a time still cannot hold a call past its deadline, and
a huge or endless body is cut at a limit instead of filling memory. Context variables
follow the code that runs the call: the calling thread, the asyncio task, and the worker
thread of ``asyncio.to_thread``.

Providers built on the OpenAI provider honour them; another provider reads
:func:`deadline` and :func:`limits` (see docs/plugins.md).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass

from moodlemate.ai.errors import ResponseTooLargeError, ValidationError

__all__ = [
    "DEFAULT_LIMITS",
    "ResponseLimits",
    "aread_limited",
    "deadline",
    "enter",
    "leave",
    "limits",
    "read_limited",
    "remaining",
    "too_large",
]

_MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ResponseLimits:
    """How much one response may hold, in decoded bytes (after gzip and the like).

    The largest real replies are ~128k output tokens (~0.5-1 MB of text, a few MB as
    escaped JSON), so the defaults leave a wide margin; more is an attack or a bug. Over a
    limit the call fails with :class:`~moodlemate.ai.errors.ResponseTooLargeError`
    (not retried: the same server would send the same body).

    - ``max_body_bytes``: a whole non-streamed body (and any error body).
    - ``max_event_bytes``: one server-sent event (one line) of a stream.
    - ``max_stream_text``: the characters of text a stream may deliver in all.
    """

    max_body_bytes: int = 16 * _MiB
    max_event_bytes: int = 1 * _MiB
    max_stream_text: int = 16 * _MiB

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_event_bytes", "max_stream_text"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"limits {name} must be an int >= 1, got {value!r}")


DEFAULT_LIMITS = ResponseLimits()

_deadline: ContextVar[float | None] = ContextVar("moodlemate_ai_deadline", default=None)
_limits: ContextVar[ResponseLimits] = ContextVar("moodlemate_ai_limits", default=DEFAULT_LIMITS)


def deadline() -> float | None:
    """The ``time.monotonic()`` instant the running attempt must end by, or None."""
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left before :func:`deadline` (<= 0 once passed), or None without one."""
    when = _deadline.get()
    return None if when is None else when - time.monotonic()


def limits() -> ResponseLimits:
    """The size limits of the running call (the defaults outside one)."""
    return _limits.get()


Bound = tuple[Token[float | None], Token[ResponseLimits]]


def enter(until: float | None, response_limits: ResponseLimits) -> Bound:
    """Set the bounds for the code that runs until :func:`leave` (tokens, not a context
    manager: this runs on every attempt and a generator-based manager costs more)."""
    return _deadline.set(until), _limits.set(response_limits)


def leave(bound: Bound) -> None:
    _deadline.reset(bound[0])
    _limits.reset(bound[1])


def too_large(what: str, limit_name: str, limit: int, unit: str = "bytes") -> ResponseTooLargeError:
    """The error for a response part over one of the limits, saying how to raise it."""
    return ResponseTooLargeError(
        f"{what} is over the limit of {limit:,} {unit} (ResponseLimits.{limit_name}); "
        f"if that is legitimate, raise it: GPT(limits=ResponseLimits({limit_name}=...))"
    )


def read_limited(chunks: Iterable[bytes], limit: int, what: str = "response body") -> bytes:
    """Join ``chunks`` (decoded bytes), failing as soon as they pass ``limit``."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(what, "max_body_bytes", limit)
        parts.append(chunk)
    return b"".join(parts)


async def aread_limited(
    chunks: AsyncIterable[bytes], limit: int, what: str = "response body"
) -> bytes:
    """Async :func:`read_limited`."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(what, "max_body_bytes", limit)
        parts.append(chunk)
    return b"".join(parts)
