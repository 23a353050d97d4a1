"""Turn /chat/completions responses and SDK exceptions into the core's types.

The body is parsed straight from JSON: the facade needs text, usage and a few ids, so
building the SDK's full pydantic models on every call would be wasted work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from moodlemate.ai.plugin import (
    Completion,
    MalformedResponseError,
    ProviderError,
    QuotaExceededError,
    ServerContextWindowExceededError,
    Usage,
    error_for_status,
    json_loads,
    rate_limits_from_headers,
    retry_after_from_headers,
    should_retry_from_headers,
)

__all__ = [
    "CHAT_USAGE_KEYS",
    "RESPONSES_USAGE_KEYS",
    "decimal_or_none",
    "error_in_body",
    "parse_completion",
    "provider_error",
    "reasoning_of",
    "rejects_stream_param",
    "status_error",
    "text_or",
    "tier_of",
    "tool_calls_from",
    "usage_from",
]

QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
"""OpenAI's error codes for an account out of credit: waiting does not fix them."""


def parse_completion(
    content: bytes,
    headers: Mapping[str, str],
    *,
    provider: str,
    model: str,
) -> Completion:
    request_id = headers.get("x-request-id")
    try:
        data = json_loads(content)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        raise MalformedResponseError(
            f"response body is not valid JSON ({len(content)} bytes)",
            provider=provider,
            model=model,
            request_id=request_id,
        ) from None
    if not isinstance(data, dict):
        raise MalformedResponseError(
            "response body is not a JSON object",
            provider=provider,
            model=model,
            request_id=request_id,
        )
    error = data.get("error")
    if error and not data.get("choices"):
        raise error_in_body(error, headers, provider=provider, model=model)
    try:
        choice = data["choices"][0]
        if isinstance(choice, dict) and choice.get("error"):
            # OpenRouter: the upstream model failed after the 200 was sent.
            raise error_in_body(choice["error"], headers, provider=provider, model=model)
        message = choice["message"]
        text = message.get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise MalformedResponseError(
            "response has no choices[0].message",
            provider=provider,
            model=model,
            request_id=request_id,
        ) from None
    if not isinstance(text, str):
        raise MalformedResponseError(
            f"choices[0].message.content is {type(text).__name__}, not text",
            provider=provider,
            model=model,
            request_id=request_id,
        )
    usage: Any = data.get("usage")
    reported = isinstance(usage, dict)
    return Completion(
        text=text,
        model=text_or(data.get("model"), model),
        provider=provider,
        finish_reason=text_or(choice.get("finish_reason"), "") or None,
        usage=usage_from(usage),
        request_id=request_id or data.get("id"),
        reported_cost=decimal_or_none(usage.get("cost")) if reported else None,
        usage_reported=reported,
        refusal=text_or(message.get("refusal"), "") or None,
        tool_calls=tool_calls_from(message.get("tool_calls")),
        rate_limits=rate_limits_from_headers(headers),
        audio=_dict(message.get("audio")) or None,
        reasoning=reasoning_of(message),
        service_tier=tier_of(data.get("service_tier")),
    )


_TIER = re.compile(r"[a-z][a-z_-]{0,31}")


def tier_of(value: object) -> str | None:
    """The service tier a reply names (``default``, ``flex``, ``priority``...), when it is a
    plain short name; anything else is no tier (and prices as unknown, not as a guess)."""
    return value if isinstance(value, str) and _TIER.fullmatch(value) else None


def reasoning_of(message: Mapping[str, Any]) -> str | None:
    """The reasoning a chat message carries beside its answer: ``reasoning_content`` (vLLM,
    llama.cpp, DeepSeek) or ``reasoning`` (OpenRouter); None when neither is text."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def tool_calls_from(raw: Any) -> tuple[dict[str, Any], ...]:
    """The tool calls of a message, keeping only well-formed entries (objects)."""
    if not isinstance(raw, list):
        return ()
    return tuple(call for call in raw if isinstance(call, dict))


CHAT_USAGE_KEYS: Final = ("prompt_tokens", "completion_tokens")
"""The input and output counts of a Chat Completions usage object (each with ``_details``)."""
RESPONSES_USAGE_KEYS: Final = ("input_tokens", "output_tokens")
"""The same two of a Responses usage object."""


def usage_from(raw: Any, keys: tuple[str, str] = CHAT_USAGE_KEYS) -> Usage:
    """Token counts as reported, with the parts billed apart (cache reads and writes, audio
    and image tokens); a count that is not a non-negative number reads as 0, so a sloppy
    server's usage can neither crash a call that has its reply nor lower the cost. ``keys``:
    the usage object's names for its input and output counts (the two APIs differ)."""
    if not isinstance(raw, dict):
        return Usage()
    prompt, completion = keys
    prompt_details = _dict(raw.get(prompt + "_details"))
    completion_details = _dict(raw.get(completion + "_details"))
    return Usage(
        prompt_tokens=_count(raw.get(prompt)),
        completion_tokens=_count(raw.get(completion)),
        cached_tokens=_count(prompt_details.get("cached_tokens")),
        reasoning_tokens=_count(completion_details.get("reasoning_tokens")),
        cache_write_tokens=_count(prompt_details.get("cache_write_tokens")),
        audio_prompt_tokens=_count(prompt_details.get("audio_tokens")),
        image_prompt_tokens=_count(prompt_details.get("image_tokens")),
        audio_completion_tokens=_count(completion_details.get("audio_tokens")),
    )


def decimal_or_none(value: Any) -> Decimal | None:
    """A reported cost; None (unknown) unless it is a finite amount of at least 0: a NaN
    would poison the ledger's sum and a negative amount would lift the budget."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def text_or(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value else default


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    if type(value) is int:  # what a server sends, absent keys aside: no conversion to try
        return value if value > 0 else 0
    if value is None or isinstance(value, bool):
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return max(number, 0)


def status_error(
    status: int,
    error: Any,
    headers: Mapping[str, str],
    *,
    provider: str,
    model: str,
    request_id: str | None,
) -> ProviderError:
    """The core error for an HTTP error status, honouring x-should-retry and Retry-After."""
    message, code = _message_and_code(error, default=f"HTTP {status}")
    if 300 <= status < 400:
        where = headers.get("location") or "another address"
        message = f"the endpoint redirects to {where} (HTTP {status}); set the endpoint to that"
    cls = error_for_status(status, code, quota_codes=QUOTA_CODES)
    overflow, window = _context_overflow(status, error, message, code)
    if overflow:
        fields = error if isinstance(error, dict) else {}
        return ServerContextWindowExceededError(
            message,
            window=window,
            prompt_tokens=_positive_int(fields.get("n_prompt_tokens")),
            status_code=status,
            provider=provider,
            model=model,
            request_id=request_id,
            code=code,
        )
    exc = cls(
        message,
        status_code=status,
        provider=provider,
        model=model,
        request_id=request_id,
        code=code,
        retry_after=retry_after_from_headers(headers),
    )
    verdict = should_retry_from_headers(headers)
    if verdict is not None and not issubclass(cls, QuotaExceededError):
        exc.retryable = verdict
    return exc


def error_in_body(
    error: Any, headers: Mapping[str, str], *, provider: str, model: str
) -> ProviderError:
    """An error object inside a 2xx body (some gateways report mid-generation failures so)."""
    raw_code = error.get("code") if isinstance(error, dict) else None
    status = raw_code if isinstance(raw_code, int) and 400 <= raw_code < 600 else 502
    return status_error(
        status,
        error,
        headers,
        provider=provider,
        model=model,
        request_id=headers.get("x-request-id"),
    )


# The shapes of "over the context window": OpenAI's code, llama.cpp's type (its "code" is the
# status number), and the message vLLM and OpenAI write ("maximum context length is N tokens")
# or llama.cpp's ("exceeds the available context size (N tokens)").
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_WINDOW_IN_MESSAGE = re.compile(
    r"maximum context length is (\d{1,9}) tokens|available context size \((\d{1,9}) tokens\)"
)


def _context_overflow(
    status: int, error: Any, message: str, code: str | None
) -> tuple[bool, int | None]:
    """(whether the server refused the request as too long for its window, the window)."""
    if status != 400:
        return False, None
    fields = error if isinstance(error, dict) else {}
    kinds = {code, fields.get("type"), fields.get("code")}
    match = _WINDOW_IN_MESSAGE.search(message)
    if not (kinds & _CONTEXT_CODES or match):
        return False, None
    n_ctx = _positive_int(fields.get("n_ctx"))
    if n_ctx is not None:
        return True, n_ctx
    if match:
        return True, int(match.group(1) or match.group(2))
    return True, None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**9:
        return value
    return None


def _message_and_code(error: Any, default: str) -> tuple[str, str | None]:
    if isinstance(error, dict):
        message = error.get("message") or default
        # A string code or type says more than a bare number: llama.cpp sends its status
        # as "code" (400) and the kind of error as "type" (exceed_context_size_error).
        code = next(
            (c for c in (error.get("code"), error.get("type")) if isinstance(c, str) and c),
            error.get("code") or error.get("type"),
        )
        return str(message), (str(code) if code is not None else None)
    if isinstance(error, str) and error:
        return error[:500], None
    return default, None


def rejects_stream_param(error: Any) -> bool:
    """True for the error object of the 400 the API sends when a model does not stream."""
    fields = error if isinstance(error, dict) else {}
    return fields.get("param") == "stream" or "'stream'" in str(fields.get("message") or "")


def provider_error(exc: Exception, *, provider: str, model: str) -> ProviderError | None:
    """The core error for an openai SDK exception, or None if it is not one of the SDK's
    (checked by module first, so an error of the lean transport never imports openai)."""
    if not type(exc).__module__.startswith("openai"):
        return None
    import openai

    if isinstance(exc, openai.APIStatusError):
        return status_error(
            exc.status_code,
            exc.body,
            exc.response.headers,
            provider=provider,
            model=model,
            request_id=exc.request_id,
        )
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        from moodlemate.providers.openai.connection_errors import connection_error

        host, port = _host_port(exc)
        cause = exc.__cause__ or exc.__context__ or exc
        if isinstance(exc, openai.APITimeoutError) and cause is exc:
            cause = TimeoutError("timed out")
        connected = "Connect" not in type(cause).__name__
        return connection_error(
            cause, host, port, connected=connected, provider=provider, model=model
        )
    return None


def _host_port(exc: Any) -> tuple[str, int]:
    try:
        url = exc.request.url
        return str(url.host), int(url.port or (443 if url.scheme == "https" else 80))
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return "the endpoint", 0
