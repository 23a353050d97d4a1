"""Checks on call arguments, done before anything is sent: a typo must not cost a request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, get_args

from moodlemate.ai._media import (
    MAX_FILE_BYTES_PER_REQUEST,
    MAX_IMAGE_BYTES_PER_REQUEST,
    MAX_IMAGES_PER_REQUEST,
)
from moodlemate.ai._message_dicts import messages_from
from moodlemate.ai._messages import AudioPart, FilePart, ImagePart, TextPart, ToolCall
from moodlemate.ai._options import options_from
from moodlemate.ai._provider import ChatRequest, Message, Role
from moodlemate.ai.errors import ValidationError

__all__ = [
    "build_chat_request",
    "check_messages",
    "check_model",
    "check_request",
    "check_text",
]

_ROLES = frozenset(get_args(Role))
_BINARY_PARTS = (ImagePart, FilePart, AudioPart)
_CONTENT_TYPES = (str, tuple)
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
    plus what only the wire cares about: every text must encode as UTF-8. Returns the
    request with its messages normalised (OpenAI-shaped dicts read as Message values)."""
    if not isinstance(request, ChatRequest):
        raise ValidationError(f"request must be a ChatRequest, not {type(request).__name__}")
    check_encodable(check_model(request.model), "model")
    if not isinstance(request.messages, tuple | list) or not request.messages:
        raise ValidationError("request.messages must be a non-empty tuple of Message")
    messages = check_messages(request.messages)
    if request.temperature is not None:
        check_temperature(request.temperature)
    check_max_tokens(request.max_tokens)
    check_extra(request.extra, "request.extra")
    options = options_from(request.options)
    if messages is not request.messages or options is not request.options:
        request = replace(request, messages=messages, options=options)
    return request


def check_extra(extra: object, name: str) -> Mapping[str, Any]:
    """``extra`` goes into the request body as it is, so it must be a mapping that JSON can
    carry: a value JSON cannot hold (an object, a NaN, a nesting too deep to write) would
    otherwise fail as a bare error deep in the transport, or in the budget's counting."""
    if not isinstance(extra, Mapping):
        raise ValidationError(f"{name} must be a mapping, not {type(extra).__name__}")
    if not extra:
        return extra
    import json

    try:
        json.dumps(dict(extra), allow_nan=False)
    except RecursionError:
        raise ValidationError(f"{name} is nested too deeply to send as JSON") from None
    except (TypeError, ValueError) as error:
        raise ValidationError(f"{name} cannot be sent as JSON: {_short(error)}") from None
    return extra


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 120 else text[:117] + "..."


def check_messages(values: Sequence[object]) -> tuple[Message, ...]:
    """``values`` as Message values, checked as a whole before sending: roles and their
    fields, text that encodes, parts where OpenAI takes them, sizes within its per-request
    limits, and tool turns that answer the calls an earlier assistant turn made, each before
    the conversation goes on (the server 400s otherwise)."""
    ready = isinstance(values, tuple) and all(
        type(m) is Message and type(m.content) in _CONTENT_TYPES for m in values
    )
    messages = values if ready else messages_from(values)
    assert isinstance(messages, tuple)
    pending: dict[str, int] = {}
    image_bytes = images = file_bytes = 0
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if message.role not in _ROLES:
            raise ValidationError(f"{where} has unknown role {message.role!r}")
        if message.role != "tool" and pending:
            raise ValidationError(
                f"{where}: tool call {next(iter(pending))!r} of messages[{min(pending.values())}]"
                " has no tool message answering it (every tool call must be answered before "
                "the conversation goes on)"
            )
        content = message.content
        if isinstance(content, str):
            if not content.isascii():
                check_encodable(content, f"{where}.content")
        elif isinstance(content, tuple):
            for number, part in enumerate(content):
                kind = type(part)
                if kind is TextPart:
                    text = part.text
                    if type(text) is not str or not text.isascii():
                        place = f"{where}.content[{number}]"
                        check_encodable(check_text(text, place), place)
                    continue
                if kind not in _BINARY_PARTS:
                    raise ValidationError(
                        f"{where}.content[{number}] is not a part ({type(part).__name__})"
                    )
                if message.role != "user":
                    raise ValidationError(
                        f"{where}.content[{number}]: {kind.__name__} is allowed only in user "
                        f"messages, not {message.role}"
                    )
                if kind is ImagePart:
                    images += 1
                    image_bytes += len(part.data or b"")
                elif kind is FilePart:
                    file_bytes += len(part.data or b"")
        else:
            raise ValidationError(
                f"{where}.content must be a string or a tuple of parts, "
                f"not {type(content).__name__}"
            )
        if message.name is not None:
            check_encodable(check_text(message.name, f"{where}.name"), f"{where}.name")
        if message.refusal is not None:
            check_encodable(check_text(message.refusal, f"{where}.refusal"), f"{where}.refusal")
        if message.tool_calls and message.role != "assistant":
            raise ValidationError(f"{where}: only assistant messages carry tool_calls")
        if message.role == "tool":
            answered = message.tool_call_id
            if not isinstance(answered, str) or not answered:
                raise ValidationError(f"{where}: a tool message needs the tool_call_id it answers")
            if answered not in pending:
                raise ValidationError(
                    f"{where}: tool_call_id {answered!r} answers no tool call of the assistant "
                    "message before it"
                )
            del pending[answered]
        elif message.tool_call_id is not None:
            raise ValidationError(f"{where}: only tool messages carry a tool_call_id")
        for number, call in enumerate(message.tool_calls):
            place = f"{where}.tool_calls[{number}]"
            if not isinstance(call, ToolCall):
                raise ValidationError(f"{place} is not a ToolCall ({type(call).__name__})")
            for field_name in ("id", "name", "arguments"):
                value = getattr(call, field_name)
                check_encodable(check_text(value, f"{place}.{field_name}"), place)
            if not call.id or not call.name:
                raise ValidationError(f"{place} needs an id and a name")
            if call.id in pending:
                raise ValidationError(f"{place}: the id {call.id!r} is used twice")
            pending[call.id] = index
    if pending:
        raise ValidationError(
            f"tool call {next(iter(pending))!r} of messages[{min(pending.values())}] has no tool "
            "message answering it"
        )
    if images > MAX_IMAGES_PER_REQUEST:
        raise ValidationError(
            f"{images} images in one request; OpenAI takes at most {MAX_IMAGES_PER_REQUEST}"
        )
    if image_bytes > MAX_IMAGE_BYTES_PER_REQUEST:
        raise ValidationError(
            f"the images total {image_bytes:,} bytes; OpenAI takes at most "
            f"{MAX_IMAGE_BYTES_PER_REQUEST // 2**20} MB of images in one request"
        )
    if file_bytes > MAX_FILE_BYTES_PER_REQUEST:
        raise ValidationError(
            f"the files total {file_bytes:,} bytes; OpenAI takes at most "
            f"{MAX_FILE_BYTES_PER_REQUEST // 2**20} MB of files in one request"
        )
    return messages


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


def build_request(
    model: object,
    system_message: object,
    user_message: object,
    temperature: object,
    max_tokens: object,
    *,
    messages: object = None,
    options: object = None,
    extra: object = None,
) -> ChatRequest:
    """The request of an entry point that takes ``messages=``, ``options=`` and ``extra=``
    beside the seed's arguments: a non-empty ``system_message`` goes first, then
    ``messages``, then ``user_message`` as the last user turn (when given)."""
    if messages is None and options is None and extra is None:
        if user_message is None:
            raise ValidationError("give user_message, or messages=[...]")
        return build_chat_request(model, system_message, user_message, temperature, max_tokens)
    head: list[object] = []
    system = check_text(system_message, "system_message")
    if system:
        head.append(Message("system", system))
    if messages is not None:
        head.extend(messages_from(messages))
    if user_message is not None:
        head.append(Message("user", check_text(user_message, "user_message")))
    if not head:
        raise ValidationError("give user_message, or messages=[...]")
    return ChatRequest(
        model=check_encodable(check_model(model), "model"),
        messages=check_messages(tuple(head)),
        temperature=check_temperature(temperature),
        max_tokens=check_max_tokens(max_tokens),
        extra=dict(check_extra(extra, "extra")) if extra is not None else {},
        options=options_from(options),
    )
