"""A cost ceiling per GPT instance, held by reservations against calls in flight.

Before a request is sent (a stream's on its first ``next()``), its worst-case cost is
reserved in the ledger: the prompt at the input price (bounded by its UTF-8 size, a token
being at least one byte; counted with the tokenizer only when that bound does not fit) plus
``max_tokens`` (or, when it is None, the provider's output allowance for the request:
:data:`DEFAULT_OUTPUT_ESTIMATE` tokens, more for a reasoning model by its effort; capped at the
model's own output limit) at the output price (every token at the dearest rate listed, audio
included, when the request asks for a spoken reply or sends audio). The call is refused with
:class:`~moodlemate.ai.errors.BudgetExceededError`, and nothing goes to the server, when the
ledger's cost plus every reservation in flight plus this one would cross the ceiling. When
the call ends its reservation is settled with the real cost (released if it failed), so
any number of threads, tasks or pre-made streams spend at most the budget, plus what one
call costs beyond its reservation (a reply longer than the default estimate, a provider
charging more than its price list).

Calls whose cost is unknown (no price, no cost in the response) reserve and add nothing:
a budget cannot see them, and a warning says so.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from moodlemate.ai._ledger import Reservation
from moodlemate.ai._messages import AudioPart
from moodlemate.ai._token_count import carries_more_than_text
from moodlemate.ai._token_framing import token_ceiling, tool_ceiling, wire_messages
from moodlemate.ai._usage import Usage
from moodlemate.ai.errors import (
    BudgetExceededError,
    BudgetStoreError,
    TokenizerUnavailableError,
    ValidationError,
)

if TYPE_CHECKING:
    from moodlemate.ai._ledger import Ledger
    from moodlemate.ai._pricing import Price
    from moodlemate.ai._provider import ChatRequest, Provider
    from moodlemate.ai._shared_budget import SharedBudget

__all__ = [
    "DEFAULT_OUTPUT_ESTIMATE",
    "prompt_tokens",
    "reserve",
    "to_budget",
    "worst_case_cost",
]

DEFAULT_OUTPUT_ESTIMATE = 4096
"""Output tokens a call with ``max_tokens=None`` is assumed to cost at most (capped at the
model's own output limit). Set ``max_tokens`` for a bound that holds whatever the reply."""


def to_budget(value: object) -> Decimal | None:
    """A budget in US dollars as Decimal; None means no ceiling. Floats go through ``str`` so
    ``0.1`` means ten cents, not its binary approximation."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise ValidationError(
            f"budget must be a Decimal, int, float, str or None, not {type(value).__name__}"
        )
    try:
        amount = Decimal(str(value)) if isinstance(value, float | str) else Decimal(value)
    except InvalidOperation:
        raise ValidationError(f"budget must be a number of US dollars, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValidationError(f"budget must be a finite amount of at least 0, got {value!r}")
    return amount


def reserve(
    ledger: Ledger,
    budget: Decimal | None,
    provider: Provider,
    request: ChatRequest,
    endpoint: str | None = None,
    shared: SharedBudget | None = None,
) -> Reservation:
    """Reserve ``request``'s worst-case cost in ``ledger`` (or in the ``shared`` scope, for
    every process: :mod:`moodlemate.ai._shared_budget`) under ``budget``, or raise
    BudgetExceededError. Without a budget nothing is counted (the reservation only records)."""
    if budget is None:
        return Reservation(None, Decimal(0))

    def hold(amount: Decimal | None) -> Reservation:
        if shared is not None:
            return shared.reserve(amount, budget, ledger)
        return ledger.reserve(amount, budget)

    # First with the prompt bounded by its UTF-8 size (a token spans at least one byte), so a
    # call well within the budget never loads a tokenizer; counted only when that bound
    # does not fit.
    bound = worst_case_cost(provider, request, endpoint, counted=False)
    try:
        return hold(bound)
    except BudgetStoreError:
        raise
    except BudgetExceededError:
        exact = worst_case_cost(provider, request, endpoint)
        if exact is None or bound is None or exact >= bound:
            raise
        return hold(exact)


def worst_case_cost(
    provider: Provider,
    request: ChatRequest,
    endpoint: str | None = None,
    price: Price | None = None,
    *,
    counted: bool = True,
) -> Decimal | None:
    """What ``request`` can cost at most at ``price`` (default: ``endpoint``'s prices; see
    the module docstring); None when unpriced. ``counted=False`` bounds the prompt by its
    UTF-8 size instead of counting its tokens."""
    if price is None:
        price = provider.price(request.model, endpoint)
        if request.options.service_tier == "priority":
            # Reserved at the dearer tier asked for, where it is priced (flex costs less).
            price = provider.tier_price(request.model, "priority", endpoint) or price
    if price is None:
        return None
    if _speaks_audio(request):
        # Audio tokens bill at their own, dearer rates (8 times the text rate on
        # gpt-4o-audio-preview): a call that may have them reserves every token at the dearest.
        price = price.dearest
    elif price.cache_write is not None and price.cache_write > price.input:
        # A prompt may be billed as cache writes, dearer than fresh input (1.25 times it on
        # Anthropic's models through OpenRouter): the worst case prices it so.
        price = replace(price, input=price.cache_write)
    output = request.max_tokens
    if output is None:
        info = provider.model_info(request.model, endpoint)
        limit = info.max_output_tokens if info is not None else None
        allowance = provider.output_allowance(request) or DEFAULT_OUTPUT_ESTIMATE
        output = min(allowance, limit or allowance)
    prompt = (
        prompt_tokens(provider, request)
        if counted
        else token_ceiling(request.messages) + tool_ceiling(request)
    )
    return price.cost(Usage(prompt_tokens=prompt, completion_tokens=output))


def _speaks_audio(request: ChatRequest) -> bool:
    """Whether the request asks for a spoken reply (the named option, or ``modalities`` passed
    through ``extra``, which reaches the server all the same) or sends audio."""
    if "audio" in (request.options.modalities or ()):
        return True
    passed = request.extra.get("modalities")
    if isinstance(passed, list | tuple) and "audio" in passed:
        return True
    return any(
        isinstance(part, AudioPart)
        for message in request.messages
        if not isinstance(message.content, str)
        for part in message.content
    )


def prompt_tokens(provider: Provider, request: ChatRequest) -> int:
    """The prompt's tokens as the provider counts them (an upper bound without a tokenizer)."""
    try:
        tokens = provider.count_message_tokens(wire_messages(request.messages), request.model)
        if not carries_more_than_text(request):
            return tokens.tokens
        return tokens.tokens + provider.count_input_tokens(request).tokens
    except TokenizerUnavailableError:
        # No tokenizer: a token spans at least one UTF-8 byte, so this is an upper bound.
        return token_ceiling(request.messages) + tool_ceiling(request)
