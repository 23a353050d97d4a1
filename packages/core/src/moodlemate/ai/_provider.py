"""The provider contract: what a plugin implements so the GPT facade can use a backend.

A provider is stateless apart from caches: the facade hands it a :class:`Connection`
(endpoint, key, headers) and a :class:`ChatRequest` on every call, so one provider object
serves many GPT instances, keys and endpoints at once. Retries, validation, cost and the
ledger live in the facade; a provider only translates requests and responses and raises
errors from :mod:`moodlemate.ai.errors` (with ``retryable`` and ``retry_after`` set), never
vendor SDK exceptions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from moodlemate.ai._answer_format import AnswerFormat, AnswerMode, answer_instructions
from moodlemate.ai._call_types import (
    AudioPart,
    ChatRequest,
    Completion,
    Connection,
    FailedEntry,
    FilePart,
    ImagePart,
    Message,
    Role,
)
from moodlemate.ai._pricing import ModelInfo, Price
from moodlemate.ai._token_framing import TokenCount, count_messages
from moodlemate.ai._urls import host_of, origin
from moodlemate.ai.errors import InvalidAPIKeyError, UnsupportedFeatureError

if TYPE_CHECKING:
    from moodlemate.ai._rate_limit_headers import RateLimits
    from moodlemate.ai._remote_batches import RemoteBatches

__all__ = [
    "AsyncProviderStream",
    "ChatRequest",
    "Completion",
    "Connection",
    "FailedEntry",
    "Message",
    "Provider",
    "ProviderStream",
    "Role",
]


class ProviderStream(ABC):
    """An open streamed response, as a provider returns it: iterate once for the text deltas
    (non-empty strings); after the end, :meth:`completion` gives the whole result."""

    @abstractmethod
    def __iter__(self) -> Iterator[str]: ...

    @abstractmethod
    def completion(self) -> Completion:
        """The result once the stream ended; raises a ProviderError if it ended early."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    def rate_limits(self) -> RateLimits | None:
        """The rate limits the response's headers stated, once it is open (for pacing)."""
        return None


class AsyncProviderStream(ABC):
    """Async twin of :class:`ProviderStream`."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[str]: ...

    @abstractmethod
    def completion(self) -> Completion: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    @property
    def rate_limits(self) -> RateLimits | None:
        """As :attr:`ProviderStream.rate_limits`."""
        return None


DEFAULT_IMAGE_TOKENS = 765
"""The default count of an image, where the provider knows no formula."""

_RENAMED = {
    "complete": "execute",
    "acomplete": "aexecute",
    "stream": "open_stream",
    "astream": "aopen_stream",
}
"""Provider methods of earlier releases, and their names now."""


class Provider(ABC):
    """Base class for providers. Subclasses set the class attributes and implement the
    abstract methods; the rest has defaults that suit an OpenAI-compatible backend."""

    name: str
    """Registry name users select, e.g. ``"openai"``."""
    default_endpoint: str
    """Base URL used when no endpoint is configured, e.g. ``https://api.openai.com/v1``."""
    key_env: str | None = None
    """Environment variable that holds this provider's key, e.g. ``OPENAI_API_KEY``."""
    key_prefixes: tuple[str, ...] = ()
    """Accepted key prefixes on the provider's own endpoint; empty accepts any."""
    key_min_length: int = 0
    """The shortest key the provider's own endpoint issues: a bare prefix (``"sk-"``) is a
    truncated paste, refused before it is sent."""
    endpoint_env: str | None = None
    """Environment variable naming this provider's endpoint (``OPENAI_BASE_URL``, the openai
    SDK's convention); the provider's key variable may go there too."""
    requires_key: bool = True
    """Whether the provider's own endpoint needs a key (a local server may not)."""
    default_model: str | None = None
    """The model calls use when none is configured; None when there is no sensible one (a
    local server's models are whatever it has pulled): such calls must name a model."""
    hosts: tuple[str, ...] = ()
    """Hostnames (and their subdomains) that identify this provider's endpoint; empty: the
    default endpoint's scheme, host and port, so a local server on ``localhost:1234`` does
    not claim every other server on localhost."""
    offers_remote_batches: bool = False
    """Whether :meth:`remote_batches` works (a subclass for another service must say so
    again: OpenRouter speaks OpenAI's chat protocol, not its Batch API)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for old, new in _RENAMED.items():
            if old in cls.__dict__ and new not in cls.__dict__:
                raise TypeError(
                    f"{cls.__qualname__}.{old}: the provider method is now {new!r} "
                    f"(the facade's {old!r} takes other arguments); rename it"
                )
        # A subclass for another service (an OpenAIProvider for a local server) must not
        # inherit its parent's key variable, key format or hosts: it would send the
        # parent's key (OPENAI_API_KEY) to its own server. It declares its own, or none.
        if "default_endpoint" in cls.__dict__:
            inherited = (
                ("key_env", None),
                ("key_prefixes", ()),
                ("key_min_length", 0),
                ("endpoint_env", None),
                ("hosts", ()),
                ("offers_remote_batches", False),
            )
            for attr, unset in inherited:
                if attr not in cls.__dict__:
                    setattr(cls, attr, unset)

    def recognises(self, endpoint: str) -> bool:
        """True when ``endpoint`` is this provider's own service (selects it automatically)."""
        host = host_of(endpoint)
        if not host:
            return False
        if not self.hosts:
            return origin(endpoint) == origin(self.default_endpoint)
        return any(host == h or host.endswith("." + h) for h in self.hosts)

    def check_key(self, key: str, endpoint: str) -> None:
        """Raise InvalidAPIKeyError (without the key in the message) if ``key`` cannot be one of
        this provider's keys. Custom endpoints accept any well-formed token."""
        if not self.recognises(endpoint):
            return
        if self.key_prefixes and not key.startswith(self.key_prefixes):
            expected = " or ".join(f"'{p}'" for p in self.key_prefixes)
            raise InvalidAPIKeyError(
                f"that is not an API key for {self.name}: its keys start with {expected}"
            )
        if len(key) < self.key_min_length:
            raise InvalidAPIKeyError(
                f"that is not an API key for {self.name}: {len(key)} characters, and its keys "
                f"have at least {self.key_min_length} (truncated when pasted?)"
            )

    @abstractmethod
    def execute(self, connection: Connection, request: ChatRequest) -> Completion:
        """Send one request, once (the facade retries), and return its completion. (Named
        apart from the facade's ``complete``, whose arguments differ.)"""

    async def aexecute(self, connection: Connection, request: ChatRequest) -> Completion:
        """Async :meth:`execute`. The default runs :meth:`execute` in a worker thread, so
        every provider works from async code; override it with a native async client."""
        import asyncio

        return await asyncio.to_thread(self.execute, connection, request)

    def open_stream(self, connection: Connection, request: ChatRequest) -> ProviderStream:
        """Send ``request`` (its ``stream`` is True) once and return the open stream, after the
        status is known: an error status raises here, before any text. Raise
        StreamingNotSupportedError when the server refuses to stream the model."""
        raise UnsupportedFeatureError(f"provider {self.name!r} does not support streaming")

    async def aopen_stream(
        self, connection: Connection, request: ChatRequest
    ) -> AsyncProviderStream:
        """Async :meth:`open_stream`."""
        raise UnsupportedFeatureError(f"provider {self.name!r} does not support async streaming")

    def remote_batches(self) -> RemoteBatches:
        """The vendor's own batch service (upload, create, poll, download, cancel): see
        :mod:`moodlemate.ai._remote_batches`. Raise UnsupportedFeatureError when there is none."""
        raise UnsupportedFeatureError(
            f"provider {self.name!r} does not offer remote batches (a vendor batch service "
            "such as OpenAI's Batch API); run the batch locally instead (without --remote)"
        )

    def check_input(self, request: ChatRequest) -> None:  # noqa: B027 - optional hook
        """Raise UnsupportedInputError when ``request.model`` cannot take what the request
        carries (an image part, audio, tools, an option), by this provider's model rules.
        Called before anything is sent; the default accepts everything."""

    @abstractmethod
    def count_tokens(self, text: str, model: str) -> int:
        """Tokens ``text`` encodes to for ``model``; must work offline once data is cached."""

    def count_message_tokens(self, messages: Sequence[Mapping[str, str]], model: str) -> TokenCount:
        """Prompt tokens of a chat request's ``messages`` (wire shape: role, content, optional
        name), predicting the response's ``prompt_tokens``.

        This default frames :meth:`count_tokens` with OpenAI's per-message overhead and marks
        the result an estimate, since a backend's own chat template may frame messages
        differently; a provider that knows its format exactly overrides it.
        """
        tokens = count_messages(messages, lambda text: self.count_tokens(text, model))
        return TokenCount(tokens, estimate=True)

    def count_input_tokens(self, request: ChatRequest) -> TokenCount:
        """Prompt tokens ``request`` carries beyond its messages' text: image, file and audio
        parts, and the tool definitions in ``request.options.tools``.

        This default is a vendor-neutral estimate (``estimate=True``): an image as 765
        tokens (a 1024x1024 image at high detail on OpenAI's tile formula), a file or audio
        clip as one token per 4 bytes, tool definitions as their JSON text. A provider that
        knows its formulas overrides it."""
        import json

        tokens = 0
        for message in request.messages:
            if isinstance(message.content, str):
                continue
            for part in message.content:
                if isinstance(part, ImagePart):
                    tokens += DEFAULT_IMAGE_TOKENS
                elif isinstance(part, FilePart | AudioPart):
                    tokens += len(part.data or b"") // 4
        for tool in request.options.tools:
            tokens += self.count_tokens(json.dumps(tool), request.model)
        return TokenCount(tokens, estimate=True)

    def model_info(self, model: str, endpoint: str | None = None) -> ModelInfo | None:
        """Price and limits of ``model`` at ``endpoint`` (None: the provider's own service);
        None when unknown. One provider object serves every instance and endpoint, so a
        catalog that differs by endpoint (OpenRouter and its proxies) is keyed by it."""
        return None

    def served_context_window(self, connection: Connection, model: str) -> int | None:
        """The context window the server at ``connection`` reports for ``model``, for models
        no table knows (a local server's); None when it does not say. Called rarely (a
        conversation's trimming): it may ask the server, within a short timeout."""
        return None

    def served_models(self, connection: Connection) -> dict[str, int | None] | None:
        """The models the server at ``connection`` serves, each with the context window it
        reports (None when it does not say), for ``moodlemate-ai models``; None when this
        provider cannot ask. Raises :class:`~moodlemate.ai.errors.ProviderError` when the
        server refuses or does not answer."""
        return None

    def same_model(self, requested: str, served: str) -> bool:
        """Whether a reply whose ``model`` field says ``served`` is the model ``requested``
        (the same name, or a snapshot or alias of it the provider knows). Only then is a
        call priced as ``served``: a server's label cannot make a call look cheaper (or
        dearer) than the model asked for. This default knows no aliases: equal names only."""
        return served.casefold() == requested.casefold()

    def price(self, model: str, endpoint: str | None = None) -> Price | None:
        info = self.model_info(model, endpoint)
        return info.price if info else None

    def tier_price(self, model: str, tier: str | None, endpoint: str | None = None) -> Price | None:
        """``model``'s price at the service tier a reply names: :meth:`price` for none or
        ``default``; None (unknown, never a guess) for any other tier this provider does not
        price. Providers with tier prices override it."""
        return self.price(model, endpoint) if tier in (None, "default") else None

    def models(self, endpoint: str | None = None) -> list[ModelInfo]:
        """Every model this provider has a price or limits for at ``endpoint`` (None: its
        own service), for listings."""
        return []

    def answer_format(
        self, model: str, name: str, schema: Mapping[str, Any], mode: AnswerMode | None = None
    ) -> AnswerFormat:
        """How to ask ``model`` for an answer following ``schema`` (named ``name``), in ``mode``
        or, when None, the best mode the model takes. This default suits OpenAI-compatible
        servers of unknown ability (llama.cpp, vLLM, Ollama take a non-strict ``json_schema``);
        a provider that knows its models' rules overrides it."""
        if mode is None or mode == "json_schema":
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": dict(schema), "strict": False},
            }
            return AnswerFormat("json_schema", {"response_format": response_format})
        if mode == "json_object":
            return AnswerFormat(
                "json_object",
                {"response_format": {"type": "json_object"}},
                instructions=answer_instructions(schema),
            )
        return AnswerFormat("instructions", instructions=answer_instructions(schema))

    def output_allowance(self, request: ChatRequest) -> int | None:
        """Output tokens a budget reserves for ``request`` when it sets no ``max_tokens``; None
        for the core's default. A provider whose reasoning models spend hidden tokens first
        says how many (a budget must hold against them too)."""
        return None

    def tool_definition(self, model: str, definition: Mapping[str, Any]) -> Mapping[str, Any]:
        """``definition`` (OpenAI-shaped: ``{"type": "function", "function": {...}}``) as
        ``model`` should be sent it; a provider whose models take a strict form rewrites it.
        This default sends it as it is."""
        return definition

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the pooled connections no call is using (:meth:`GPT.close`); never cut a
        call in flight, which may belong to another GPT of the process. May be called again,
        from any thread, and calls after it must still work."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the async clients bound to the running event loop."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.default_endpoint}>"
