"""Reject, before sending, a request whose prompt plus requested output cannot fit the model.

A request over the context window is refused by the server anyway; catching it here saves the
round trip and says exactly by how much it is over. The check needs the model's limits from
its provider, so models without a known window are sent unchecked.
"""

from __future__ import annotations

import logging

from moodlemate.ai._provider import ChatRequest, Provider
from moodlemate.ai._token_count import count_request
from moodlemate.ai._token_framing import token_ceiling, tool_ceiling
from moodlemate.ai.errors import ContextWindowExceededError

__all__ = ["MIN_OUTPUT_TOKENS", "check_context_window"]

log = logging.getLogger("moodlemate.ai")

MIN_OUTPUT_TOKENS = 1
"""Output assumed when ``max_tokens`` is None: the prompt must leave room for one token, as the
server itself requires."""


def check_context_window(
    provider: Provider, request: ChatRequest, endpoint: str | None = None
) -> None:
    """Raise ContextWindowExceededError if ``request`` cannot fit the window ``endpoint``'s
    catalog gives its model (a proxy's catalog may differ from the vendor's)."""
    info = provider.model_info(request.model, endpoint)
    if info is None or (info.context_window is None and info.max_input_tokens is None):
        return
    output = request.max_tokens or MIN_OUTPUT_TOKENS
    # A token spans at least one UTF-8 byte, so this bounds the prompt without tokenizing it:
    # most requests are far below their window and pay nothing for the check.
    ceiling = token_ceiling(request.messages) + tool_ceiling(request)
    fits_window = info.context_window is None or ceiling + output <= info.context_window
    fits_input = info.max_input_tokens is None or ceiling <= info.max_input_tokens
    if fits_window and fits_input:
        return
    # Without tokenizer data this is an estimate, which warns but never refuses a call.
    counted = count_request(provider, request)
    prompt = counted.tokens
    problem = None
    if info.max_input_tokens is not None and prompt > info.max_input_tokens:
        problem = (
            f"the prompt is {prompt:,} tokens, over {request.model}'s input limit of "
            f"{info.max_input_tokens:,}"
        )
    elif info.context_window is not None and prompt + output > info.context_window:
        asked = "max_tokens" if request.max_tokens else "the minimum reply"
        problem = (
            f"the prompt ({prompt:,} tokens) plus {asked} ({output:,}) is {prompt + output:,} "
            f"tokens, over {request.model}'s context window of {info.context_window:,}"
        )
    if problem is None:
        return
    if counted.estimate:
        log.warning("%s by an estimated count; sending anyway", problem)
        return
    raise ContextWindowExceededError(f"{problem}: shorten the prompt or lower max_tokens")
