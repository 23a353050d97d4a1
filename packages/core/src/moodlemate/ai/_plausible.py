"""Bounds on what a server may report about a call: its usage, its cost, its model's name.

A server's reply is untrusted input. A buggy or hostile one can claim ``prompt_tokens =
10**30``, a ``cost`` of ``1e999999``, a reply to a ``max_tokens=10`` request that took
99 million tokens, or a pricier (or cheaper) model than the one asked for; priced and
added to the ledger, any of these would trip every budget for good, or let calls through
that a budget should stop. So, before a call is priced:

- every token count is bounded by what the request could produce (:class:`Ceiling`): the
  prompt at most its size bound (four tokens a character, a token spanning at least one
  UTF-8 byte, whatever the server's tokenizer; images and files by their own ceilings; tool
  definitions by their bytes) plus ``PROMPT_SLACK`` tokens (a server's chat template) plus
  the bytes of the request's extra fields (schemas); found without a tokenizer, so a call
  that reports usage loads none it did not need; the reply at most ``max_tokens`` (or the
  model's own output limit when it is None) plus ``COMPLETION_SLACK``. A count beyond its
  bound counts as the bound; a count beyond every bound with no request bound known, or a
  negative one, makes the usage unknown;
- the call is priced as the model asked for, unless the served model is that model or a
  snapshot or alias of it (:meth:`Provider.same_model`); the discrepancy is warned about
  once and left visible (``Completion.model`` is what the server said,
  ``Completion.priced_model`` what the cost was computed from);
- a reported cost is dropped for the price list's figure when it is no amount of money,
  over :data:`MAX_CALL_COST`, or over ``REPORTED_COST_MARGIN`` times the request's worst
  case (every token at the dearest rate the price lists: cache writes, audio); a computed
  cost over :data:`MAX_CALL_COST` is unknown, and so is one with audio or image tokens the
  price list has no figure for;
- every amount is rounded to :data:`~moodlemate.ai._pricing.COST_QUANTUM`;
- the strings the server chose (model, request id, finish reason, refusal) pass the key
  redactor, since they reach logs, spans, metrics, the spend log and the terminal.

One warning per provider and kind of value; then the bound holds silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING

from moodlemate.ai._pricing import CostBreakdown, Price, to_money
from moodlemate.ai._provider import Completion
from moodlemate.ai._secrets import redact
from moodlemate.ai._token_framing import token_ceiling, tool_ceiling
from moodlemate.ai._usage import Usage

if TYPE_CHECKING:
    from moodlemate.ai._provider import ChatRequest, Provider

__all__ = [
    "COMPLETION_SLACK",
    "MAX_CALL_COST",
    "MAX_CALL_TOKENS",
    "PROMPT_SLACK",
    "REPORTED_COST_MARGIN",
    "Ceiling",
    "bounded",
    "ceiling",
    "cost_of",
    "scrubbed",
    "unknown_cost_charge",
]

MAX_CALL_TOKENS = 100_000_000
"""Any one token count of one call: 50 times the largest context windows offered today."""
MAX_CALL_COST = Decimal(1000)
"""USD for one call: far above the most expensive model's full context and output."""
PROMPT_SLACK = 256
"""Prompt tokens a server may count beyond the prompt's size bound (its chat template)."""
COMPLETION_SLACK = 16
"""Reply tokens a server may count beyond ``max_tokens`` (end-of-turn markers)."""
REPORTED_COST_MARGIN = 2
"""A reported cost may be this many times the request's worst case at the listed price
(fees, rounding); beyond it the listed price is used."""

log = logging.getLogger("moodlemate.ai")
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The most tokens a request could produce; None where nothing bounds a count."""

    prompt: int | None = None
    completion: int | None = None

    def clamp(self, usage: Usage) -> Usage:
        """``usage`` with every count at most its bound (cached within prompt, reasoning
        within completion)."""
        prompt = usage.prompt_tokens
        if self.prompt is not None:
            prompt = min(prompt, self.prompt)
        completion = usage.completion_tokens
        if self.completion is not None:
            completion = min(completion, self.completion)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=min(usage.cached_tokens, prompt),
            reasoning_tokens=min(usage.reasoning_tokens, completion),
            cache_write_tokens=min(usage.cache_write_tokens, prompt),
            audio_prompt_tokens=min(usage.audio_prompt_tokens, prompt),
            image_prompt_tokens=min(usage.image_prompt_tokens, prompt),
            audio_completion_tokens=min(usage.audio_completion_tokens, completion),
        )


def ceiling(provider: Provider, request: ChatRequest, endpoint: str | None = None) -> Ceiling:
    """What ``request`` could produce at most (see the module docstring)."""
    # Bounded by the prompt's size (a token spans at least one UTF-8 byte), not its count: a
    # call that reports usage must not load a tokenizer the call itself never needed.
    prompt = token_ceiling(request.messages) + tool_ceiling(request) + PROMPT_SLACK
    if request.extra:
        prompt += _extra_size(request.extra)
    output = request.max_tokens
    if output is None:
        info = provider.model_info(request.model, endpoint)
        output = None if info is None else info.max_output_tokens
    completion = None
    if output is not None:
        choices = request.extra.get("n", 1)
        choices = choices if isinstance(choices, int) and 1 <= choices <= 128 else 1
        completion = choices * (output + COMPLETION_SLACK)
    return Ceiling(prompt=prompt, completion=completion)


def _extra_size(extra: object) -> int:
    import json

    try:
        return len(json.dumps(extra, default=str).encode())
    except (TypeError, ValueError):
        return 0


def scrubbed(completion: Completion) -> Completion:
    """``completion`` with a registered key masked in the strings its server chose."""
    model = redact(completion.model)
    request_id = None if completion.request_id is None else redact(completion.request_id)
    finish = None if completion.finish_reason is None else redact(completion.finish_reason)
    refusal = None if completion.refusal is None else redact(completion.refusal)
    if (model, request_id, finish, refusal) == (
        completion.model,
        completion.request_id,
        completion.finish_reason,
        completion.refusal,
    ):
        return completion
    return replace(
        completion, model=model, request_id=request_id, finish_reason=finish, refusal=refusal
    )


def bounded(completion: Completion, limit: Ceiling | None = None) -> Completion:
    """``completion`` with its usage within ``limit`` (counts beyond it count as it), usage
    that nothing bounds and that is implausible (negative, over MAX_CALL_TOKENS) marked as
    not reported, and a reported cost that is no amount from 0 to MAX_CALL_COST dropped."""
    usage = completion.usage
    limit = limit or Ceiling()
    if completion.usage_reported:
        counts = (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            usage.reasoning_tokens,
            usage.cache_write_tokens,
            usage.audio_prompt_tokens,
            usage.image_prompt_tokens,
            usage.audio_completion_tokens,
        )
        # Negative values: a plugin that passes a server's figures through unchecked would
        # otherwise lower the ledger's total and lift the budget.
        if min(counts) < 0:
            return _unknown_usage(completion)
        clamped = limit.clamp(usage)
        if clamped != usage:
            _warn_once(
                completion.provider,
                "token counts",
                "more than the request could produce; counted as its bound",
            )
            completion = replace(completion, usage=clamped)
        if max(clamped.prompt_tokens, clamped.completion_tokens) > MAX_CALL_TOKENS:
            return _unknown_usage(completion)
    cost = completion.reported_cost
    if cost is not None:
        money = to_money(cost)
        if money is None or money > MAX_CALL_COST:
            _warn_once(completion.provider, "cost", f"not an amount from $0 to ${MAX_CALL_COST}")
            money = None
        if money != cost or money is None:
            completion = replace(completion, reported_cost=money)
    return completion


def _unknown_usage(completion: Completion) -> Completion:
    _warn_once(completion.provider, "token counts", f"negative, or over {MAX_CALL_TOKENS:,} tokens")
    return replace(completion, usage=Usage(), usage_reported=False, reported_cost=None)


def cost_of(
    completion: Completion,
    requested: str,
    same_model: Callable[[str, str], bool],
    price_of: Callable[[str], Price | None],
    limit: Ceiling | None = None,
) -> tuple[Decimal | None, str | None, CostBreakdown | None]:
    """(The cost of ``completion``, the model it was priced as, the cost by piece) for a call
    that asked for ``requested``; ``completion`` already :func:`bounded` by ``limit``. The
    cost is None when unknown, and the model None when the cost is unknown or the server's own
    figure stands. The pieces are at the price of the model priced as (else ``requested``):
    when the cost was computed from that price; when the server's own figure stands and they
    add up to it (OpenRouter's ``usage.cost`` at its catalog's prices); and when the cost is
    unknown only because some pieces have no price (named in ``unpriced``). None otherwise:
    never a split that does not match the cost."""
    priced_as, price = _price_for(completion, requested, same_model, price_of)
    cost, pieces = _cost_at(completion, priced_as, price, limit)
    priced_model = priced_as if cost is not None and pieces is not None else None
    if (priced_model or requested) != priced_as:
        price, pieces = price_of(requested), None
    return cost, priced_model, _breakdown(completion, cost, price, pieces)


def _price_for(
    completion: Completion,
    requested: str,
    same_model: Callable[[str, str], bool],
    price_of: Callable[[str], Price | None],
) -> tuple[str, Price | None]:
    """(The model a call for ``requested`` is priced as, its price): the served model when it
    is that model or a snapshot or alias of it and has a price, else ``requested``."""
    served = completion.model
    if served == requested or same_model(requested, served):
        price = price_of(served)
        if price is not None:
            return served, price
    elif _first(completion.provider, f"model {requested}"):
        log.warning(
            "%s answered a call for %r as %r, which is not that model nor a snapshot of "
            "it: priced as %r (the served name is kept in Completion.model and the spend "
            "log); further ones are not logged",
            completion.provider,
            requested,
            served[:100],
            requested,
        )
    return requested, price_of(requested)


def _cost_at(
    completion: Completion, priced_as: str, price: Price | None, limit: Ceiling | None
) -> tuple[Decimal | None, CostBreakdown | None]:
    """(The cost of ``completion``, its pieces at ``price`` when the cost was computed from
    it (else None)); the cost is the server's own figure when it is plausible, None when
    unknown."""
    reported = completion.reported_cost
    if reported is not None:
        worst = _worst_case(price, limit)
        if worst is None or reported <= worst * REPORTED_COST_MARGIN:
            return reported, None
        _warn_once(
            completion.provider,
            "cost",
            f"over {REPORTED_COST_MARGIN}x what the request could cost at {priced_as!r}'s price",
        )
    if price is None or not completion.usage_reported:
        return None, None
    cost, pieces = price.cost_and_breakdown(completion.usage)
    if cost is None:  # audio or image tokens the price list has no figure for
        return None, pieces
    if cost > MAX_CALL_COST:
        _warn_once(completion.provider, "computed cost", f"over ${MAX_CALL_COST} for one call")
        return None, pieces
    return cost, pieces


def _breakdown(
    completion: Completion,
    cost: Decimal | None,
    price: Price | None,
    pieces: CostBreakdown | None,
) -> CostBreakdown | None:
    """``completion``'s cost by piece at ``price`` (``pieces``: already computed at it), when
    it matches ``cost`` (see :func:`cost_of`)."""
    if price is None or not completion.usage_reported:
        return None
    if pieces is None:
        pieces = price.breakdown(completion.usage)
    if cost is None:
        return pieces if pieces.unpriced else None
    if pieces.unpriced or abs(pieces.known - cost) > _SAME_AMOUNT:
        return None
    return pieces


def unknown_cost_charge(
    completion: Completion,
    cost: Decimal | None,
    pieces: CostBreakdown | None,
    reserved: Decimal,
) -> Decimal | None:
    """What a call of unknown cost counts against a budget: for a call that was priced when
    it was reserved yet cannot be priced (tokens or a service tier without a listed price,
    or no usage reported), its reservation or its priced pieces, whichever is more; so such
    replies cannot spend a budget unseen. None for a known cost, and for a call nothing
    priced (a local model's: it reserved nothing)."""
    if cost is not None:
        return None
    known = pieces.known if pieces is not None else Decimal(0)
    if known > MAX_CALL_COST:  # no call costs that much: as a computed cost, not believed
        known = Decimal(0)
    return max(reserved, known) or None


_SAME_AMOUNT = Decimal("1e-9")
"""Two amounts this close are one figure: pieces rounded one by one to COST_QUANTUM, or a
JSON float, cannot drift further."""


def _worst_case(price: Price | None, limit: Ceiling | None) -> Decimal | None:
    if price is None or limit is None or limit.prompt is None or limit.completion is None:
        return None
    # At the dearest rates listed (cache writes, audio): any token may have been one of them.
    worst = Usage(prompt_tokens=limit.prompt, completion_tokens=limit.completion)
    return price.dearest.cost(worst)


def _warn_once(provider: str, what: str, why: str) -> None:
    if _first(provider, what):
        log.warning(
            "%s reported implausible %s (%s): treated as unknown or bounded; "
            "further ones are not logged",
            provider,
            what,
            why,
        )


def _first(provider: str, what: str) -> bool:
    """True the first time (``provider``, ``what``) is seen (the set stays small: ``what``
    names a kind of value or a model the caller asked for, never a server's string)."""
    with _warned_lock:
        if (provider, what) in _warned:
            return False
        _warned.add((provider, what))
    return True
