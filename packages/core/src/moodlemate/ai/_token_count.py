"""Counting a chat request's prompt tokens with a provider, or estimating them.

The framing rule itself is :mod:`moodlemate.ai._token_framing`. Where a provider cannot
tokenize (its tokenizer data is missing), what only needs an estimate
(the context-window check, conversation trimming) uses :func:`estimate_tokens`: one token per
two UTF-8 bytes, rounded up. That overcounts prose and code about twice (they average 3.7 to 6
bytes a token) and matches random identifiers; only dense punctuation and digit soup encode
denser. It is logged once per model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from moodlemate.ai._token_framing import (
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    TokenCount,
    count_messages,
    wire_messages,
)
from moodlemate.ai.errors import TokenizerUnavailableError, ValidationError

if TYPE_CHECKING:
    from moodlemate.ai._call_types import ChatRequest
    from moodlemate.ai._provider import Provider

__all__ = [
    "ESTIMATE_BYTES_PER_TOKEN",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "TokenCount",
    "check_messages",
    "count_messages",
    "count_or_estimate",
    "count_request",
    "estimate_tokens",
    "text_counter",
    "wire_messages",
]

ESTIMATE_BYTES_PER_TOKEN = 2
"""The fallback estimate's ratio: a conservative guess where no tokenizer is available."""

log = logging.getLogger("moodlemate.ai")
_estimated_models: set[tuple[str, str]] = set()
_estimated_lock = threading.Lock()


def estimate_tokens(text: str) -> int:
    """A conservative token estimate without a tokenizer (see the module docstring)."""
    return -(-len(text.encode("utf-8", "surrogatepass")) // ESTIMATE_BYTES_PER_TOKEN)


def count_or_estimate(
    provider: Provider, messages: Sequence[Mapping[str, str]], model: str
) -> TokenCount:
    """The provider's count of ``messages``; an estimate when it has no tokenizer data."""
    try:
        return provider.count_message_tokens(messages, model)
    except TokenizerUnavailableError as exc:
        _log_estimate(provider, model, exc)
        return TokenCount(count_messages(messages, estimate_tokens), estimate=True)


def count_request(provider: Provider, request: ChatRequest) -> TokenCount:
    """The prompt tokens of ``request``: its messages' text framed as the chat API frames it,
    plus what the provider counts for its parts and tool definitions (an estimate when either
    count is one)."""
    counted = count_or_estimate(provider, wire_messages(request.messages), request.model)
    if not carries_more_than_text(request):
        return counted
    beyond = provider.count_input_tokens(request)
    return TokenCount(
        counted.tokens + beyond.tokens,
        estimate=counted.estimate or beyond.estimate,
        encoding=counted.encoding,
    )


def carries_more_than_text(request: ChatRequest) -> bool:
    """Whether ``request`` has parts beyond text, tool definitions or an answer format (in
    the options, or in the fields a typed answer adds) to count."""
    return (
        bool(request.options.tools)
        or request.options.response_format is not None
        or bool(request.extra)
        or any(not isinstance(m.content, str) for m in request.messages)
    )


def text_counter(provider: Provider, model: str) -> Callable[[str], int]:
    """A text tokenizer for ``model``: the provider's, or the estimate once it cannot count."""
    fallback = False

    def count(text: str) -> int:
        nonlocal fallback
        if not fallback:
            try:
                return provider.count_tokens(text, model)
            except TokenizerUnavailableError as exc:
                _log_estimate(provider, model, exc)
                fallback = True
        return estimate_tokens(text)

    return count


def _log_estimate(provider: Provider, model: str, exc: TokenizerUnavailableError) -> None:
    key = (provider.name, model)
    with _estimated_lock:
        if key in _estimated_models:
            return
        _estimated_models.add(key)
    log.warning(
        "token counts of %r are estimates (%d UTF-8 bytes a token): %s",
        model,
        ESTIMATE_BYTES_PER_TOKEN,
        exc.message,
    )


def check_messages(messages: object) -> list[dict[str, str]]:
    """Validate user-supplied messages (dicts like ``{"role": ..., "content": ..., "name": ...}``
    or :class:`~moodlemate.ai._provider.Message`) and return them in wire shape."""
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
        raise ValidationError(f"messages must be a list of messages, not {type(messages).__name__}")
    checked: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if isinstance(message, Mapping):
            fields = dict(message)
        elif hasattr(message, "role") and hasattr(message, "content"):
            fields = {"role": message.role, "content": message.content}
        else:
            raise ValidationError(
                f"messages[{index}] must be a mapping with role and content, "
                f"not {type(message).__name__}"
            )
        for required in ("role", "content"):
            if required not in fields:
                raise ValidationError(f"messages[{index}] has no {required!r}")
        for key, value in fields.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValidationError(
                    f"messages[{index}][{key!r}] must be a string, not {type(value).__name__}"
                )
        if not fields["role"]:
            raise ValidationError(f"messages[{index}] has an empty role")
        checked.append(fields)
    return checked
