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

if TYPE_CHECKING:
    from moodlemate.ai._call_types import Message

__all__ = [
    "MAX_BYTES_PER_CHAR",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "TokenCount",
    "WireMessage",
    "count_messages",
    "token_ceiling",
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


def token_ceiling(messages: Iterable[Message]) -> int:
    """At least as many tokens as ``messages`` can take, without tokenizing them: the cheap
    bound that lets most requests skip counting."""
    return REPLY_PRIMING_TOKENS + sum(
        TOKENS_PER_MESSAGE + MAX_BYTES_PER_CHAR * (len(m.role) + len(m.content)) for m in messages
    )


def wire_messages(messages: Iterable[Message]) -> list[dict[str, str]]:
    """A request's messages as the chat API receives them."""
    return [{"role": m.role, "content": m.content} for m in messages]
