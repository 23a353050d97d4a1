"""A Completion as JSON-ready data: the one shape batch records and ``chat --json`` share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moodlemate.ai._provider import Completion
    from moodlemate.ai._usage import Usage

__all__ = ["completion_fields", "usage_fields"]


def usage_fields(usage: Usage) -> dict[str, int]:
    """The counts; the parts billed apart (cache writes, audio and image tokens) only when a
    reply has them, so a text call's record keeps its shape."""
    fields = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }
    parts = {
        "cache_write_tokens": usage.cache_write_tokens,
        "audio_prompt_tokens": usage.audio_prompt_tokens,
        "image_prompt_tokens": usage.image_prompt_tokens,
        "audio_completion_tokens": usage.audio_completion_tokens,
    }
    fields.update((name, count) for name, count in parts.items() if count)
    return fields


def completion_fields(completion: Completion) -> dict[str, Any]:
    """Text, model, finish reason, usage, cost (a decimal string in USD, None when unknown),
    attempts and request id."""
    return {
        "text": completion.text,
        "model": completion.model,
        "served_by": completion.served_by,
        "finish_reason": completion.finish_reason,
        "usage": usage_fields(completion.usage),
        "cost": None if completion.cost is None else format(completion.cost, "f"),
        "attempts": completion.attempts,
        "request_id": completion.request_id,
    }
