"""Prices and limits of models. Money is Decimal: float drifts over a million calls.

Every cost the library records is a whole number of :data:`COST_QUANTUM` (a ten-billionth
of a dollar): far finer than any price list (a cent per hundred million tokens), yet a
figure with a bounded number of digits, so a server's ``1e-999999999`` can neither print
a million zeros nor slow every sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

from moodlemate.ai._usage import Usage

__all__ = ["COST_QUANTUM", "CostBreakdown", "ModelInfo", "Price", "to_money"]

_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)
COST_QUANTUM = Decimal("1e-10")
"""The precision of every recorded cost, in US dollars (rounded half to even)."""
_QUANTUM_EXPONENT = -10
_MAX_EXPONENT = 30
"""Amounts of 10**30 USD and more are not money: :func:`to_money` refuses them."""


def to_money(amount: Decimal) -> Decimal | None:
    """``amount`` rounded to :data:`COST_QUANTUM` (digits beyond it only: ``0.00075`` stays
    as written); None when it is no amount of money (NaN, infinite, negative, or 10**30 USD
    and more)."""
    if not amount.is_finite() or amount < 0 or amount.adjusted() >= _MAX_EXPONENT:
        return None
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= _QUANTUM_EXPONENT:
        return amount
    with localcontext() as ctx:
        ctx.prec = 60  # enough digits for any amount under 10**30 at the quantum
        try:
            return amount.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN).normalize()
        except InvalidOperation:  # pragma: no cover - excluded by the exponent bound
            return None


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """A call's cost in USD by what was billed, each piece to :data:`COST_QUANTUM`. ``output``
    is the reply's visible text tokens and ``reasoning`` the reasoning tokens (both at the
    output price). A piece is None where it does not apply (no audio or image tokens; no
    separate cache-write price, so written tokens are in ``input``) and where its tokens have
    no known price: those are named in ``unpriced``, and then the call's cost is unknown."""

    input: Decimal | None
    """Prompt text tokens read fresh (not from the cache), with cache writes where the
    price has no cache-write rate of its own."""
    cached_input: Decimal | None
    """Prompt tokens read from the prompt cache."""
    cache_write: Decimal | None
    """Prompt tokens written to the cache, where the price bills them apart (OpenRouter's
    ``input_cache_write``); None otherwise."""
    output: Decimal | None
    reasoning: Decimal | None
    audio_input: Decimal | None = None
    """Prompt audio tokens, at the model's audio input price."""
    audio_output: Decimal | None = None
    """Reply audio tokens, at the model's audio output price."""
    image_input: Decimal | None = None
    """Prompt image tokens, where the model prices them apart."""
    unpriced: tuple[str, ...] = ()
    """The pieces the reply has tokens of but the price list no figure for (``"audio_input"``,
    ``"audio_output"``, ``"image_input"``)."""

    @property
    def known(self) -> Decimal:
        """The priced pieces added up: the whole cost when ``unpriced`` is empty, else a lower
        bound of it."""
        pieces = (
            self.input,
            self.cached_input,
            self.cache_write,
            self.output,
            self.reasoning,
            self.audio_input,
            self.audio_output,
            self.image_input,
        )
        return sum((piece for piece in pieces if piece is not None), Decimal(0))


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens. ``cached_input`` None means cached tokens bill as input,
    ``cache_write`` None that written tokens do; ``audio_input``, ``audio_output`` and
    ``image_input`` None mean no known price for such tokens (a call that has them costs an
    unknown amount, never a guess)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    audio_input: Decimal | None = None
    audio_output: Decimal | None = None
    image_input: Decimal | None = None

    def cost(self, usage: Usage) -> Decimal | None:
        """The cost of ``usage``, exact to :data:`COST_QUANTUM`; None when it has tokens of a
        kind this price has no figure for (see :meth:`breakdown`'s ``unpriced``)."""
        rates = self._rates(usage)
        if any(rate is None and tokens for _, tokens, rate in rates):
            return None
        cost = _money(sum((tokens * rate for _, tokens, rate in rates if rate is not None), _ZERO))
        return _ZERO if cost is None else cost

    def breakdown(self, usage: Usage) -> CostBreakdown:
        """:meth:`cost` by piece (see :class:`CostBreakdown`)."""
        return self.cost_and_breakdown(usage)[1]

    def cost_and_breakdown(self, usage: Usage) -> tuple[Decimal | None, CostBreakdown]:
        """(:meth:`cost`, :meth:`breakdown`) of ``usage``, from one split of it and one
        product of each count and its rate: what a call's settling needs, at half the work."""
        pieces: dict[str, Decimal | None] = {}
        unpriced: list[str] = []
        total = _ZERO  # summed as cost() sums: the same figure to the last digit
        for name, tokens, rate in self._rates(usage):
            if rate is None:
                if tokens:
                    unpriced.append(name)
                pieces[name] = None
                continue
            product = tokens * rate
            total += product
            # No audio or image tokens: the piece does not apply.
            pieces[name] = None if name in _APART and not tokens else product
        if self.cache_write is None:
            pieces["cache_write"] = None  # written tokens are in "input"
        with localcontext() as ctx:
            ctx.prec = 60  # exact: a token count times a listed price, per million
            cost = None if unpriced else to_money(total / _MILLION)
            for name, amount in pieces.items():
                if amount is not None:
                    pieces[name] = to_money(amount / _MILLION)
        if cost is None and not unpriced:
            cost = _ZERO
        return cost, CostBreakdown(**pieces, unpriced=tuple(unpriced))

    def scaled(self, factor: Decimal) -> Price:
        """Every rate times ``factor`` (the Batch API's discount)."""

        def times(rate: Decimal | None) -> Decimal | None:
            return None if rate is None else rate * factor

        return Price(
            input=self.input * factor,
            output=self.output * factor,
            cached_input=times(self.cached_input),
            cache_write=times(self.cache_write),
            audio_input=times(self.audio_input),
            audio_output=times(self.audio_output),
            image_input=times(self.image_input),
        )

    @property
    def dearest(self) -> Price:
        """A text-only price at the highest input and output rates this price lists: the
        most any prompt or reply token can cost (a worst case that holds whatever kinds of
        token a reply turns out to have, where they are priced)."""
        inputs = (self.input, self.cache_write, self.audio_input, self.image_input)
        return Price(
            input=max(rate for rate in inputs if rate is not None),
            output=max(rate for rate in (self.output, self.audio_output) if rate is not None),
        )

    def _rates(self, usage: Usage) -> list[tuple[str, int, Decimal | None]]:
        """(piece, tokens, rate) for each part of ``usage`` billed apart, no token counted
        twice. Audio and image tokens first: a cached audio token is billed as audio input
        (the chat audio models list no cached-audio price), never as cheaper cached text.
        Each part is at least 0 and at most what is left of its whole."""
        prompt = max(usage.prompt_tokens, 0)
        audio_in = min(max(usage.audio_prompt_tokens, 0), prompt)
        image_in = min(max(usage.image_prompt_tokens, 0), prompt - audio_in)
        text = prompt - audio_in - image_in
        cached = min(max(usage.cached_tokens, 0), text)
        written = min(max(usage.cache_write_tokens, 0), text - cached)
        completion = max(usage.completion_tokens, 0)
        audio_out = min(max(usage.audio_completion_tokens, 0), completion)
        reasoning = min(max(usage.reasoning_tokens, 0), completion - audio_out)
        fresh = text - cached - written
        if self.cache_write is None:  # written tokens bill as fresh input
            fresh, written, written_rate = fresh + written, 0, self.input
        else:
            written_rate = self.cache_write
        return [
            ("input", fresh, self.input),
            (
                "cached_input",
                cached,
                self.input if self.cached_input is None else self.cached_input,
            ),
            ("cache_write", written, written_rate),
            ("output", completion - audio_out - reasoning, self.output),
            ("reasoning", reasoning, self.output),
            ("audio_input", audio_in, self.audio_input),
            ("audio_output", audio_out, self.audio_output),
            ("image_input", image_in, self.image_input),
        ]


_APART = frozenset({"audio_input", "audio_output", "image_input"})
"""Pieces that exist only where a reply has such tokens."""


def _money(per_million: Decimal) -> Decimal | None:
    """``per_million`` (tokens times USD per million tokens) in USD, as :func:`to_money`."""
    with localcontext() as ctx:
        ctx.prec = 60
        return to_money(per_million / _MILLION)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a provider knows of a model: price and limits, with where the figures came from."""

    name: str
    price: Price | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    source: str | None = None
    as_of: str | None = None
    max_input_tokens: int | None = None
    """A prompt limit below the context window, where the vendor sets one (gpt-5: 272,000)."""
    live: bool = False
    """True when fetched from the provider's service (now, or earlier into a cache); False for
    figures shipped with the package, as old as ``as_of``."""
