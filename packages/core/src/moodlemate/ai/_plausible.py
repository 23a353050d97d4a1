"""Bounds on what a server may report about a call's usage and cost.

A buggy or hostile server can claim ``prompt_tokens = 10**30`` or a ``cost`` of
``1e999999``: priced and added to the ledger, either would trip every budget for good. No
real call comes near these bounds, so a value beyond them is treated as unknown (as if the
server had not reported it), with one warning per provider and kind of value.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from decimal import Decimal

from moodlemate.ai._provider import Completion
from moodlemate.ai._usage import Usage

__all__ = ["MAX_CALL_COST", "MAX_CALL_TOKENS", "bounded"]

MAX_CALL_TOKENS = 100_000_000
"""Any one token count of one call: 50 times the largest context windows offered today."""
MAX_CALL_COST = Decimal(1000)
"""USD for one call: far above the most expensive model's full context and output."""

log = logging.getLogger("moodlemate.ai")
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def bounded(completion: Completion) -> Completion:
    """``completion`` with implausible usage (any count negative or over MAX_CALL_TOKENS)
    marked as not reported and an implausible reported cost (not a finite amount from 0 to
    MAX_CALL_COST) dropped."""
    usage = completion.usage
    counts = (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
    )
    cost = completion.reported_cost
    # Negative values too: a plugin that passes a server's figures through unchecked would
    # otherwise lower the ledger's total and lift the budget.
    bad_usage = completion.usage_reported and not all(
        0 <= count <= MAX_CALL_TOKENS for count in counts
    )
    bad_cost = cost is not None and not (cost.is_finite() and 0 <= cost <= MAX_CALL_COST)
    if not bad_usage and not bad_cost:
        return completion
    if bad_usage:
        _warn_once(
            completion.provider, "token counts", f"negative, or over {MAX_CALL_TOKENS:,} tokens"
        )
        completion = replace(completion, usage=Usage(), usage_reported=False, reported_cost=None)
    if bad_cost:
        _warn_once(completion.provider, "cost", f"not an amount from $0 to ${MAX_CALL_COST}")
        completion = replace(completion, reported_cost=None)
    return completion


def _warn_once(provider: str, what: str, why: str) -> None:
    with _warned_lock:
        if (provider, what) in _warned:
            return
        _warned.add((provider, what))
    log.warning(
        "%s reported implausible %s (%s): treated as unknown; further ones are not logged",
        provider,
        what,
        why,
    )
