"""Prompt tokens of a chat request for OpenAI models, per OpenAI's cookbook framing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from moodlemate.ai.plugin import TokenCount, count_messages
from moodlemate.providers.openai import tokens

__all__ = ["count_message_tokens"]


def count_message_tokens(messages: Iterable[Mapping[str, str]], model: str) -> TokenCount:
    """Exact for models tiktoken knows; an o200k_base estimate (``estimate=True``) otherwise."""
    encoding = tokens.encoding_for(model)
    encode = encoding.encode_ordinary
    counted = count_messages(messages, lambda text: len(encode(text)))
    return TokenCount(counted, estimate=not tokens.tokenizer_known(model), encoding=encoding.name)
