"""What counts as an answer: the text of a completion, or a typed error saying why there is
none.

A reasoning model that spends ``max_tokens`` on hidden reasoning returns ``content: ""``
with ``finish_reason: "length"``; a refusal comes as ``message.refusal`` with no content;
a tool-calling reply has only ``tool_calls``. Returning ``""`` for each would pass them off
as an empty answer, so the str-returning calls (``chat_completion``, streams, conversations,
batch records) raise :class:`EmptyReplyError` or :class:`RefusalError` instead, carrying the
full completion. An empty text is an answer only when the server said it stopped normally.
"""

from __future__ import annotations

from moodlemate.ai._provider import Completion
from moodlemate.ai.errors import EmptyReplyError, RefusalError

__all__ = ["reply_text"]

NORMAL_STOP = "stop"


def reply_text(completion: Completion, max_tokens: int | None = None) -> str:
    """``completion.text``, unless the reply is a refusal or empty without a normal stop."""
    if completion.text:
        return completion.text
    if completion.refusal:
        raise RefusalError(f"the model refused to answer: {completion.refusal[:500]}", completion)
    if completion.tool_calls:
        names = ", ".join(
            str((call.get("function") or {}).get("name") or "?") for call in completion.tool_calls
        )
        raise EmptyReplyError(
            f"the model answered with {len(completion.tool_calls)} tool call(s) ({names[:200]})"
            " and no text; the tool calls are in error.completion.tool_calls",
            completion,
        )
    if completion.finish_reason == NORMAL_STOP:
        return ""
    raise EmptyReplyError(_why_empty(completion, max_tokens), completion)


def _why_empty(completion: Completion, max_tokens: int | None) -> str:
    reason = completion.finish_reason
    if reason == "length":
        limit = f" (max_tokens={max_tokens})" if max_tokens is not None else ""
        reasoning = completion.usage.reasoning_tokens
        spent = (
            f"was used up by {reasoning} reasoning tokens before any text"
            if reasoning
            else "was reached before any text"
        )
        return (
            f"the reply is empty: the token limit{limit} {spent} (finish_reason=length);"
            " raise max_tokens, or leave it None for the model's own limit"
        )
    if reason == "content_filter":
        return "the reply is empty: the provider's content filter withheld it"
    return (
        "the reply is empty and the server did not say it finished normally"
        f" (finish_reason={reason!r})"
    )
