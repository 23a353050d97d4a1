"""How a chat request's messages add up to prompt tokens: the one framing rule.

Each message costs the tokens of its fields plus a fixed frame of 3 (and 1 more when it has a
``name``); every reply is primed with 3 more. These are the figures of OpenAI's cookbook "How
to count tokens with tiktoken", which match the API's ``prompt_tokens`` for the gpt-3.5, gpt-4
and gpt-4o families; for other backends, whose chat templates frame messages their own way,
the same frame is the documented default estimate (:meth:`Provider.count_message_tokens`).

A leaf module: providers, the budget, the context-window check and conversations all frame
messages through it, so the rule is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from moodlemate.ai._messages import Message, Part, TextPart

if TYPE_CHECKING:
    from moodlemate.ai._call_types import ChatRequest

__all__ = [
    "IMAGE_TOKEN_CEILING",
    "MAX_BYTES_PER_CHAR",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "TokenCount",
    "WireMessage",
    "count_messages",
    "token_ceiling",
    "tool_ceiling",
    "wire_messages",
]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
MAX_BYTES_PER_CHAR = 4
"""UTF-8 spends at most four bytes on a character, and a token spans at least one byte."""

WireMessage = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A counted prompt. ``estimate`` is True when the model's tokenizer or chat format is not
    known for certain (a non-OpenAI model, a custom endpoint), so the figure is a best guess."""

    tokens: int
    estimate: bool
    encoding: str | None = None
    """The tokenizer used, e.g. ``o200k_base``."""

    def __int__(self) -> int:
        return self.tokens


def count_messages(messages: Iterable[WireMessage], count: Callable[[str], int]) -> int:
    """The frame over messages in wire shape, ``count`` being the text tokenizer."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += count(value)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


IMAGE_TOKEN_CEILING = 50_000
"""More than any image costs on any model OpenAI publishes a formula for (gpt-4o-mini's
high-detail tiles top out near 48,200): the ceiling counts an image as this."""


def token_ceiling(messages: Iterable[Message]) -> int:
    """At least as many tokens as ``messages`` can take, without tokenizing them: the cheap
    bound that lets most requests skip counting. A non-text part counts as its bytes (a
    file, audio) or :data:`IMAGE_TOKEN_CEILING` (an image), whichever is more."""
    total = REPLY_PRIMING_TOKENS
    for m in messages:
        content = m.content
        if type(content) is str and not m.tool_calls:
            total += TOKENS_PER_MESSAGE + MAX_BYTES_PER_CHAR * (len(m.role) + len(content))
        elif type(content) is tuple and not m.tool_calls and m.name is None and not m.tool_call_id:
            # Parts alone (a user turn with an image): the same sum as below, in one pass.
            chars, binary = len(m.role), 0
            for part in content:
                if isinstance(part, TextPart):
                    chars += len(part.text)
                else:
                    binary += _part_ceiling(part)
            total += TOKENS_PER_MESSAGE + MAX_BYTES_PER_CHAR * chars + binary
        else:
            total += TOKENS_PER_MESSAGE + MAX_BYTES_PER_CHAR * sum(
                len(v) for v in _text_fields(m).values()
            )
            total += sum(_part_ceiling(part) for part in _binary_parts(m))
    return total


def tool_ceiling(request: ChatRequest) -> int:
    """At least as many tokens as ``request``'s tool definitions and answer format take (the
    bytes of their JSON, and of the request's extra fields, where a typed answer's goes)."""
    tools = request.options.tools
    response_format = request.options.response_format
    if not tools and response_format is None and not request.extra:
        return 0
    import json

    total = sum(len(json.dumps(tool).encode()) for tool in tools or ())
    if response_format is not None:
        total += len(json.dumps(response_format).encode())
    if request.extra:
        total += len(json.dumps(dict(request.extra), default=str).encode())
    return total


def wire_messages(messages: Iterable[Message]) -> list[dict[str, str]]:
    """A request's messages as the text the chat API's tokenizer sees of them: role, the
    content's text, name, tool_call_id, and each tool call's name and arguments. Images,
    files and audio are counted apart (:meth:`Provider.count_input_tokens`)."""
    return [
        {"role": m.role, "content": m.content}
        if type(m.content) is str and not m.tool_calls and m.name is None and not m.tool_call_id
        else _text_fields(m)
        for m in messages
    ]


def _text_fields(m: Message) -> dict[str, str]:
    fields = {"role": m.role, "content": m.text}
    if m.name is not None:
        fields["name"] = m.name
    if m.tool_call_id:
        fields["tool_call_id"] = m.tool_call_id
    for number, call in enumerate(m.tool_calls):
        fields[f"tool_calls[{number}]"] = f"{call.name}{call.arguments}"
    return fields


def _binary_parts(m: Message) -> list[Part]:
    content = m.content
    if isinstance(content, str):
        return []
    return [part for part in content if not isinstance(part, TextPart)]


def _part_ceiling(part: Part) -> int:
    data = getattr(part, "data", None)
    size = len(data) if isinstance(data, bytes) else 0
    return max(size, IMAGE_TOKEN_CEILING)
