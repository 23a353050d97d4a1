"""The OpenAI provider: api.openai.com, and any OpenAI-compatible server at a custom endpoint."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

from moodlemate.ai.plugin import (
    AnswerFormat,
    AnswerMode,
    AuthenticationError,
    ChatRequest,
    Completion,
    Connection,
    ModelInfo,
    Price,
    Provider,
    ProviderError,
    RemoteBatches,
    StreamingNotSupportedError,
    TokenCount,
    UnsupportedFeatureError,
    UnsupportedInputError,
    bounds,
)
from moodlemate.providers.openai import models, pricing, responses, served_limits, tokens
from moodlemate.providers.openai.after_fork import drop_after_fork
from moodlemate.providers.openai.streaming import (
    AsyncSSEStream,
    ChunkReader,
    SSEStream,
    rejects_streaming,
)

if TYPE_CHECKING:
    from moodlemate.providers.openai.lean_transport import LeanTransport
    from moodlemate.providers.openai.sdk_transport import SDKTransport

__all__ = ["DEFAULT_TRANSPORT", "TRANSPORTS", "OpenAIProvider"]

PATH = "/chat/completions"
DEFAULT_TRANSPORT = "lean"
TRANSPORTS = ("lean", "openai-sdk")
"""The HTTP transports a call can take (``Connection.transport``; None: the default)."""


class OpenAIProvider(Provider):
    """Speaks the OpenAI chat-completions protocol, through the lean transport by default
    (:mod:`~moodlemate.providers.openai.lean_transport`) or the openai SDK
    (``transport="openai-sdk"``).

    Subclasses for other OpenAI-protocol services override the class attributes and, where
    the service differs, :meth:`extra_headers`, :meth:`rules`, :meth:`model_info`.
    """

    name = "openai"
    default_endpoint = "https://api.openai.com/v1"
    # Typed as the base class declares them, so subclasses (Ollama: no key) can override.
    key_env: str | None = "OPENAI_API_KEY"
    key_prefixes: tuple[str, ...] = ("sk-",)
    key_min_length = 20  # legacy keys are 51 characters, project keys far longer
    endpoint_env: str | None = "OPENAI_BASE_URL"
    hosts: tuple[str, ...] = ("api.openai.com",)
    offers_remote_batches = True
    default_model: str | None = "gpt-4o-mini"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass serves another service, whose models are not OpenAI's: it has no default
        model unless it names one itself (so Groq is never sent ``gpt-4o-mini``)."""
        super().__init_subclass__(**kwargs)
        if "default_model" not in cls.__dict__:
            cls.default_model = None

    transports: tuple[str, ...] = TRANSPORTS

    def __init__(self) -> None:
        self._lean: LeanTransport | None = None
        self._sdk: SDKTransport | None = None
        # Threads making the first call at once must share one transport: a second one's
        # pool would be dropped with its connections open.
        self._making = threading.Lock()
        drop_after_fork(self)
        self._served = served_limits.ServedLimits()

    def after_fork(self) -> None:
        """In a forked child: a lock of its own (a thread may have held it at the fork)."""
        self._making = threading.Lock()

    # -- extension points ----------------------------------------------------------------

    def extra_headers(self, connection: Connection) -> Mapping[str, str]:
        """Headers every request to this provider carries (beyond auth)."""
        return {}

    def rules(self, model: str) -> models.ModelRules:
        return models.rules_for(model)

    def body(self, request: ChatRequest) -> dict[str, Any]:
        rules = self.rules(request.model)
        if self.uses_responses(request, rules):
            from moodlemate.providers.openai import responses_wire

            return responses_wire.responses_body(request, rules.reasoning)
        return models.chat_body(request, rules)

    def uses_responses(self, request: ChatRequest, rules: models.ModelRules | None = None) -> bool:
        """Whether ``request`` goes to the Responses API: asked for (``api="responses"``), or
        a model served only there."""
        if request.api is not None:
            return request.api == "responses"
        return (rules or self.rules(request.model)).responses_only

    def check_input(self, request: ChatRequest) -> None:
        rules = self.rules(request.model)
        problem = models.input_problem(request, rules)
        if problem is not None:
            raise UnsupportedInputError(problem)
        if request.options.reasoning_summary is not None and not self.uses_responses(
            request, rules
        ):
            raise UnsupportedInputError(
                f"reasoning_summary is a Responses API option and {self.name}'s chat "
                f"completions take none; send {request.model} with api='responses', or leave "
                "reasoning_summary out"
            )

    def answer_format(
        self, model: str, name: str, schema: Mapping[str, Any], mode: AnswerMode | None = None
    ) -> AnswerFormat:
        from moodlemate.providers.openai import answer_formats

        chosen = answer_formats.answer_format(model, name, schema, mode)
        return chosen or super().answer_format(model, name, schema, mode)

    def tool_definition(self, model: str, definition: Mapping[str, Any]) -> Mapping[str, Any]:
        from moodlemate.providers.openai import answer_formats

        return answer_formats.tool_definition(model, definition)

    def output_allowance(self, request: ChatRequest) -> int | None:
        return models.output_allowance(request, self.rules(request.model))

    # -- the contract --------------------------------------------------------------------

    def execute(self, connection: Connection, request: ChatRequest) -> Completion:
        transport = self.transport(connection)
        # Sent as a stream and read here, so the body is cut at its size limit.
        limit = bounds.limits().max_body_bytes
        try:
            response = transport.post(
                connection, self._extra(connection), self._path(request), self.body(request)
            )
            try:
                content = bounds.read_limited(response.iter_bytes(), limit)
            finally:
                response.close()
        except Exception as exc:
            self._raise(exc, request)
        return self._parse(content, response.headers, request)

    async def aexecute(self, connection: Connection, request: ChatRequest) -> Completion:
        transport = self.transport(connection)
        limit = bounds.limits().max_body_bytes
        try:
            response = await transport.apost(
                connection, self._extra(connection), self._path(request), self.body(request)
            )
            try:
                content = await bounds.aread_limited(response.aiter_bytes(), limit)
            finally:
                await response.aclose()
        except Exception as exc:
            self._raise(exc, request)
        return self._parse(content, response.headers, request)

    def open_stream(self, connection: Connection, request: ChatRequest) -> SSEStream:
        transport = self.transport(connection)
        try:
            response = transport.post(
                connection,
                self._extra(connection),
                self._path(request),
                self.body(request),
                stream=True,
            )
        except Exception as exc:
            self._raise(exc, request)
        return SSEStream(response, self._reader(response, request), self._translator(request))

    async def aopen_stream(self, connection: Connection, request: ChatRequest) -> AsyncSSEStream:
        transport = self.transport(connection)
        try:
            response = await transport.apost(
                connection,
                self._extra(connection),
                self._path(request),
                self.body(request),
                stream=True,
            )
        except Exception as exc:
            self._raise(exc, request)
        return AsyncSSEStream(response, self._reader(response, request), self._translator(request))

    def remote_batches(self) -> RemoteBatches:
        if not self.offers_remote_batches:
            return super().remote_batches()
        from moodlemate.providers.openai.batch_api import BatchParts, OpenAIBatches

        def client(connection: Connection) -> Any:
            return self.sdk().pool.get(connection, self.extra_headers(connection))

        return OpenAIBatches(
            BatchParts(self.name, self.body, client, self._translate, self.uses_responses)
        )

    def count_tokens(self, text: str, model: str) -> int:
        return tokens.count_tokens(text, model)

    def count_message_tokens(self, messages: Sequence[Mapping[str, str]], model: str) -> TokenCount:
        from moodlemate.providers.openai import chat_tokens

        return chat_tokens.count_message_tokens(messages, model)

    def count_input_tokens(self, request: ChatRequest) -> TokenCount:
        from moodlemate.providers.openai import input_tokens

        return input_tokens.count_input_tokens(request)

    def same_model(self, requested: str, served: str) -> bool:
        return models.same_model(requested, served)

    def model_info(self, model: str, endpoint: str | None = None) -> ModelInfo | None:
        return pricing.openai_prices().get(model)

    def models(self, endpoint: str | None = None) -> list[ModelInfo]:
        return pricing.openai_prices().all()

    def tier_price(self, model: str, tier: str | None, endpoint: str | None = None) -> Price | None:
        """OpenAI's price at the tier a reply names (``flex``: the batch price of the models
        offering it; ``priority``: its own list); None where the table has no such price."""
        if tier is None:
            return self.price(model, endpoint)
        info = pricing.openai_prices().tier(model, tier)
        return info.price if info is not None else None

    def served_context_window(self, connection: Connection, model: str) -> int | None:
        if self.recognises(connection.endpoint):
            return None  # the vendor's own service: its models are in the tables
        transport = self.transport(connection)
        asking = replace(connection, timeout=served_limits.TIMEOUT)
        extra = self._extra(connection)

        def fetch(url: str) -> bytes | None:
            try:
                response = transport.get(asking, extra, url)
                try:
                    if not 200 <= getattr(response, "status_code", 200) < 300:
                        return None
                    return bounds.read_limited(
                        response.iter_bytes(), bounds.limits().max_body_bytes
                    )
                finally:
                    response.close()
            except Exception:  # an error status or no answer: the server does not say
                return None

        return self._served.window(connection.endpoint, model, fetch)

    def served_models(self, connection: Connection) -> dict[str, int | None] | None:
        transport = self.transport(connection)
        asking = replace(connection, timeout=served_limits.TIMEOUT * 5)
        url = connection.endpoint.rstrip("/") + "/models"
        try:
            response = transport.get(asking, self._extra(connection), url)
            try:
                status = int(getattr(response, "status_code", 200))
                content = (
                    bounds.read_limited(response.iter_bytes(), bounds.limits().max_body_bytes)
                    if 200 <= status < 300
                    else b""
                )
            finally:
                response.close()
        except Exception as exc:
            raise self._listing_error(getattr(exc, "status_code", None), exc) from None
        if not 200 <= status < 300:
            raise self._listing_error(status, None)
        served = served_limits.models_from_listing(content)
        if served is None:
            raise ProviderError(f"{url} did not answer with a model listing", provider=self.name)
        return served

    def _listing_error(self, status: int | None, exc: Exception | None) -> ProviderError:
        kind = AuthenticationError if status == 401 else ProviderError
        what = f"HTTP {status}" if status is not None else type(exc).__name__
        message = f"the server's model listing failed: {what}"
        return kind(message, status_code=status, provider=self.name)

    def transport(self, connection: Connection) -> LeanTransport | SDKTransport:
        """The transport ``connection`` asks for (``Connection.transport``), made on first use."""
        name = connection.transport or DEFAULT_TRANSPORT
        if name == "lean":
            if self._lean is None:
                from moodlemate.providers.openai.lean_transport import LeanTransport

                with self._making:
                    if self._lean is None:
                        self._lean = LeanTransport()
            return self._lean
        if name == "openai-sdk":
            return self.sdk()
        raise UnsupportedFeatureError(
            f"provider {self.name!r} has no transport {name!r} (it has {', '.join(TRANSPORTS)})"
        )

    def sdk(self) -> SDKTransport:
        """The openai SDK transport (also the Batch API's, for its file calls)."""
        if self._sdk is None:
            from moodlemate.providers.openai.sdk_transport import SDKTransport

            with self._making:
                if self._sdk is None:
                    self._sdk = SDKTransport()
        return self._sdk

    def close(self) -> None:
        for transport in (self._lean, self._sdk):
            if transport is not None:
                transport.close()

    async def aclose(self) -> None:
        for transport in (self._lean, self._sdk):
            if transport is not None:
                await transport.aclose()

    # -- internals: one request shape and one error mapping for all four call styles ----

    def _extra(self, connection: Connection) -> Mapping[str, str]:
        return self.extra_headers(connection)

    def _path(self, request: ChatRequest) -> str:
        return "/responses" if self.uses_responses(request) else PATH

    def _parse(self, content: bytes, headers: Any, request: ChatRequest) -> Completion:
        if self.uses_responses(request):
            from moodlemate.providers.openai import responses_reply

            return responses_reply.parse_response(
                content, headers, provider=self.name, model=request.model
            )
        return responses.parse_completion(content, headers, provider=self.name, model=request.model)

    def _reader(self, response: Any, request: ChatRequest) -> ChunkReader:
        reader: type[ChunkReader] = ChunkReader
        if self.uses_responses(request):
            from moodlemate.providers.openai import responses_reply

            reader = responses_reply.ResponsesEventReader
        return reader(
            response.headers,
            provider=self.name,
            model=request.model,
            max_event_bytes=bounds.limits().max_event_bytes,
        )

    def _translator(self, request: ChatRequest) -> Callable[[Exception], ProviderError | None]:
        return lambda exc: self._translate(exc, request)

    def _raise(self, exc: Exception, request: ChatRequest) -> NoReturn:
        """Raise the core error for an exception from sending, where we know one."""
        if request.stream and rejects_streaming(exc):
            raise StreamingNotSupportedError(
                "the server does not stream this model",
                status_code=400,
                provider=self.name,
                model=request.model,
                code="unsupported_value",
            ) from exc
        mapped = self._translate(exc, request)
        if mapped is None or mapped is exc:
            raise exc
        raise mapped from exc

    def _translate(self, exc: Exception, request: ChatRequest) -> ProviderError | None:
        if isinstance(exc, ProviderError):  # raised by our transport, readers and caps
            exc.provider = exc.provider or self.name
            exc.model = exc.model or request.model
            return exc
        mapped = responses.provider_error(exc, provider=self.name, model=request.model)
        if mapped is not None:
            return mapped
        if self._sdk is not None:  # a reset or a stall reading the body escapes the SDK
            return self._sdk.network_error(exc, provider=self.name, model=request.model)
        return None
