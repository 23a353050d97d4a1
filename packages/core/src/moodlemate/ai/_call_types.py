"""The values one call is made of: the request, where it goes, and what came back.

Plain frozen data with no behaviour beyond a safe repr, so every layer (errors, hooks,
providers, the spend log) can name them without importing the machinery that uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from moodlemate.ai._evolve import evolved, plain
from moodlemate.ai._failed_entry import FailedEntry
from moodlemate.ai._messages import (
    AudioPart,
    Detail,
    FilePart,
    ImagePart,
    Message,
    Part,
    Role,
    TextPart,
    ToolCall,
)
from moodlemate.ai._options import NO_OPTIONS, Options
from moodlemate.ai._pricing import CostBreakdown
from moodlemate.ai._rate_limit_headers import RateLimits
from moodlemate.ai._secrets import mask
from moodlemate.ai._usage import Usage

__all__ = [
    "AudioPart",
    "ChatRequest",
    "Completion",
    "Connection",
    "Detail",
    "FailedEntry",
    "FilePart",
    "ImagePart",
    "Message",
    "Options",
    "Part",
    "Role",
    "TextPart",
    "ToolCall",
    "with_api",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@plain
@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A vendor-neutral chat request; ``extra`` passes provider-specific fields through."""

    model: str
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = False
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    """Fields sent as they are, over the named ones (a server's own parameters)."""
    options: Options = NO_OPTIONS
    """The named chat-completion options (seed, stop, tools, response_format...)."""
    api: Literal["chat", "responses"] | None = None
    """The vendor API to send it through, where a provider speaks more than one (OpenAI's chat
    completions and Responses); None lets the provider's model rules choose."""


def with_api(request: ChatRequest, default: str | None) -> ChatRequest:
    """``request`` naming the API it goes through: its own, else its options', else
    ``default`` (the instance's ``api``); still None lets the provider's model rules choose.
    Live calls and remote batch lines decide it here alike."""
    api = request.api or request.options.api or default
    if api == request.api:
        return request
    return evolved(request, api=api)


@plain
@dataclass(frozen=True, slots=True)
class Completion:
    """The full result of one chat completion."""

    text: str
    model: str
    provider: str
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    request_id: str | None = None
    cost: Decimal | None = None
    """Cost of the call in USD: what the provider charged when it says, else from the price table;
    None when the model's price is unknown."""
    reported_cost: Decimal | None = None
    """The cost the provider itself reported in the response (e.g. OpenRouter's ``usage.cost``)."""
    priced_model: str | None = None
    """The model whose listed price gave ``cost``: the model asked for, or the served one
    (``model``) when it is a snapshot or alias of it; None when the cost is the server's
    own figure or unknown. A server cannot make a call look cheaper by naming another model."""
    attempts: int = 1
    usage_reported: bool = True
    """False when the server sent no usage (some OpenAI-compatible servers omit it): the
    token counts are then zeros, not measurements, and the cost is unknown (None)."""
    refusal: str | None = None
    """The model's refusal message (``message.refusal``) when it declined to answer; ``text``
    is then usually empty, and the str-returning calls raise RefusalError."""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    """Tool calls the model asked for, as the server sent them (``id``, ``type``,
    ``function`` with ``name`` and ``arguments``)."""
    served_by: str | None = None
    """The model string that served the call when the instance has fallbacks (the call's
    own model or one of ``GPT.fallbacks``); None without fallbacks."""
    failed_before: tuple[FailedEntry, ...] = ()
    """The entries that failed before ``served_by`` answered, in order (see
    :mod:`moodlemate.ai._fallbacks`)."""
    rate_limits: RateLimits | None = None
    """The rate limits the server's headers stated with this response (``x-ratelimit-*``),
    which client-side pacing learns from; None when it sent none."""
    audio: Mapping[str, Any] | None = None
    """The spoken reply (``message.audio``: id, data, transcript, expires_at) when the request
    asked for the audio modality."""
    reasoning: str | None = None
    """The reasoning the server returned beside the answer (a Responses API reasoning summary,
    OpenRouter's ``reasoning``, ``reasoning_content`` from vLLM or llama.cpp); never part of
    ``text``."""
    response_id: str | None = None
    """The Responses API's id for this response (what ``previous_response_id`` takes)."""
    service_tier: str | None = None
    """The service tier the server says served the call (``default``, ``flex``,
    ``priority``...); the cost is that tier's price, unknown (None) where it has none."""
    cost_breakdown: CostBreakdown | None = None
    """``cost`` by piece (input, cached input, cache writes, output, reasoning, audio and
    image tokens) at the price table's rates: when it was priced from them, when the server's
    own figure is what they add up to, and when the cost is unknown only because some pieces
    have no price (named in ``unpriced``); None otherwise."""

    @property
    def message(self) -> Message:
        """The reply as an assistant :class:`Message` (text, tool calls, refusal), ready to
        append to the history the request was made of."""
        calls = tuple(_tool_call(call) for call in self.tool_calls)
        return Message(
            "assistant", self.text, tool_calls=tuple(c for c in calls if c), refusal=self.refusal
        )


def _tool_call(raw: Mapping[str, Any]) -> ToolCall | None:
    function = raw.get("function")
    if not isinstance(function, Mapping):
        return None
    call_id, name, arguments = raw.get("id"), function.get("name"), function.get("arguments")
    if not isinstance(name, str):
        return None
    # A call without an id (some servers stream none) is still a call: a tool run gives it
    # an id of its own rather than lose it (and take an empty reply for the answer).
    call_id = call_id if isinstance(call_id, str) else ""
    return ToolCall(call_id, name, arguments if isinstance(arguments, str) else "{}")


@plain
@dataclass(frozen=True, slots=True)
class Connection:
    """Where and as whom to send a request. The key never shows in a repr."""

    endpoint: str
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    timeout: float | None = None
    app_url: str | None = None
    """Your app's URL, for providers that attribute traffic to apps (OpenRouter)."""
    app_title: str | None = None
    """Your app's name, for the same providers."""
    key_note: str | None = field(default=None, repr=False, compare=False)
    """Why no key is sent, when a configured one was withheld (for the facade's messages)."""
    transport: str | None = None
    """The HTTP transport the provider should use, by a name the provider defines (the
    OpenAI provider: ``"lean"``, ``"openai-sdk"``); None: the provider's default."""

    def __repr__(self) -> str:
        return f"Connection(endpoint={self.endpoint!r}, api_key={mask(self.api_key)})"

    @property
    def host(self) -> str:
        return (urlsplit(self.endpoint).hostname or "").lower()
