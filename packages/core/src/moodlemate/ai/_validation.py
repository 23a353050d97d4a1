"""Checks on call arguments, done before anything is sent: a typo must not cost a request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

from moodlemate.ai._provider import ChatRequest, Message, Role
from moodlemate.ai.errors import ValidationError

__all__ = ["build_chat_request", "check_model", "check_request", "check_text"]

_ROLES = frozenset(get_args(Role))
MAX_MODEL_LENGTH = 1024
"""Longer than any model id or local model path a server uses; a longer "model" is a pasted
prompt or an attack on the request line."""


def check_model(model: object) -> str:
    """``model`` if it can go in a request as one printable name.

    A control character (NUL, CR/LF: ``"gpt-4o\r\nX-Evil: 1"``), an inner tab or newline or an
    invisible format character (zero-width space) is never part of a real model id: such a
    name only fails on the server, or smuggles text into logs and headers along the way.
    """
    if not isinstance(model, str):
        raise ValidationError(f"model must be a string, not {type(model).__name__}")
    if len(model) > MAX_MODEL_LENGTH:
        raise ValidationError(
            f"model name is {len(model)} characters long; at most {MAX_MODEL_LENGTH} are allowed"
        )
    if not model.strip():
        raise ValidationError("model must not be empty")
    if model != model.strip():
        raise ValidationError(f"model {model.strip()!r} has leading or trailing whitespace")
    if not model.isprintable():
        index, char = next((i, c) for i, c in enumerate(model) if not c.isprintable())
        raise ValidationError(
            f"model name contains the unprintable character U+{ord(char):04X} at index {index}"
            " (a control, line-break or invisible character)"
        )
    return model


def check_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, not {type(value).__name__}")
    return value


def check_encodable(value: str, name: str) -> str:
    """``value`` if it can go on the wire as UTF-8: a lone surrogate (a broken emoji from a
    bad decode) would otherwise fail deep in the HTTP client with a bare UnicodeEncodeError."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                f"{name} contains a lone surrogate at index {exc.start} (not valid Unicode text)"
            ) from None
    return value


def check_request(request: object) -> ChatRequest:
    """Everything :func:`build_chat_request` checks, for a request built by hand (``send``),
    plus what only the wire cares about: every text must encode as UTF-8."""
    if not isinstance(request, ChatRequest):
        raise ValidationError(f"request must be a ChatRequest, not {type(request).__name__}")
    check_encodable(check_model(request.model), "model")
    if not isinstance(request.messages, tuple | list) or not request.messages:
        raise ValidationError("request.messages must be a non-empty tuple of Message")
    for index, message in enumerate(request.messages):
        if not isinstance(message, Message):
            raise ValidationError(
                f"messages[{index}] must be a Message, not {type(message).__name__}"
            )
        if message.role not in _ROLES:
            raise ValidationError(f"messages[{index}] has unknown role {message.role!r}")
        check_encodable(
            check_text(message.content, f"messages[{index}].content"), f"messages[{index}].content"
        )
    if request.temperature is not None:
        check_temperature(request.temperature)
    check_max_tokens(request.max_tokens)
    if not isinstance(request.extra, Mapping):
        raise ValidationError(
            f"request.extra must be a mapping, not {type(request.extra).__name__}"
        )
    return request


def check_temperature(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"temperature must be a number, not {type(value).__name__}")
    # Compared as given: float(10**400) would raise OverflowError, and NaN fails every test.
    if not 0 <= value <= 2:
        # str() of a huge int is slow, and refused past 4300 digits.
        shown = "a huge integer" if isinstance(value, int) and value.bit_length() > 64 else value
        raise ValidationError(f"temperature must be between 0 and 2, got {shown}")
    return float(value)


MAX_TOKENS_LIMIT = 2**31 - 1
"""The largest ``max_tokens`` servers read correctly: llama.cpp refuses 2**31 and wraps 2**63
round to a 1-token reply; no model's output comes near either."""


def check_max_tokens(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"max_tokens must be an int or None, not {type(value).__name__}")
    if value < 1:
        raise ValidationError(f"max_tokens must be at least 1, got {value}")
    if value > MAX_TOKENS_LIMIT:
        raise ValidationError(
            f"max_tokens must be at most {MAX_TOKENS_LIMIT:,} (2**31 - 1), got about "
            f"2**{value.bit_length() - 1}; leave it None for the model's own limit"
        )
    return value


def build_chat_request(
    model: object,
    system_message: object,
    user_message: object,
    temperature: object,
    max_tokens: object,
) -> ChatRequest:
    """The seed call's arguments as a request validated as :func:`check_request` validates
    one (so the facade checks it once); an empty system message is dropped."""
    system = check_encodable(check_text(system_message, "system_message"), "system_message")
    user = check_encodable(check_text(user_message, "user_message"), "user_message")
    messages = (
        (Message("system", system), Message("user", user)) if system else (Message("user", user),)
    )
    return ChatRequest(
        model=check_encodable(check_model(model), "model"),
        messages=messages,
        temperature=check_temperature(temperature),
        max_tokens=check_max_tokens(max_tokens),
    )
