"""The OpenAI provider: api.openai.com, and any OpenAI-compatible server at a custom endpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from moodlemate.ai.plugin import (
    AnswerFormat,
    AnswerMode,
    APIConnectionError,
    APITimeoutError,
    ChatRequest,
    Completion,
    Connection,
    ModelInfo,
    Provider,
    ProviderError,
    RemoteBatches,
    StreamingNotSupportedError,
    TokenCount,
    UnsupportedInputError,
    bounds,
)
from moodlemate.providers.openai import (
    answer_formats,
    chat_tokens,
    input_tokens,
    models,
    pricing,
    responses,
    responses_reply,
    responses_wire,
    served_limits,
    tokens,
)
from moodlemate.providers.openai.clients import AsyncClientPool, ClientPool
from moodlemate.providers.openai.streaming import (
    AsyncSSEStream,
    ChunkReader,
    SSEStream,
    rejects_streaming,
)
from moodlemate.providers.openai.transport import httpx_module as _httpx

__all__ = ["OpenAIProvider"]


class OpenAIProvider(Provider):
    """Speaks the OpenAI chat-completions protocol through the openai SDK.

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

    def __init__(self) -> None:
        self._pool = ClientPool()
        self._async_pool = AsyncClientPool()
        self._served = served_limits.ServedLimits()

    # -- extension points ----------------------------------------------------------------

    def extra_headers(self, connection: Connection) -> Mapping[str, str]:
        """Headers every request to this provider carries (beyond auth)."""
        return {}

    def rules(self, model: str) -> models.ModelRules:
        return models.rules_for(model)

    def body(self, request: ChatRequest) -> dict[str, Any]:
        rules = self.rules(request.model)
        if self.uses_responses(request, rules):
            return responses_wire.responses_body(request, rules.reasoning)
        return models.chat_body(request, rules)

    def uses_responses(self, request: ChatRequest, rules: models.ModelRules | None = None) -> bool:
        """Whether ``request`` goes to the Responses API: asked for (``api="responses"``), or
        a model served only there."""
        if request.api is not None:
            return request.api == "responses"
        return (rules or self.rules(request.model)).responses_only

    def check_input(self, request: ChatRequest) -> None:
        problem = models.input_problem(request, self.rules(request.model))
        if problem is not None:
            raise UnsupportedInputError(problem)

    def answer_format(
        self, model: str, name: str, schema: Mapping[str, Any], mode: AnswerMode | None = None
    ) -> AnswerFormat:
        chosen = answer_formats.answer_format(model, name, schema, mode)
        return chosen or super().answer_format(model, name, schema, mode)

    def tool_definition(self, model: str, definition: Mapping[str, Any]) -> Mapping[str, Any]:
        return answer_formats.tool_definition(model, definition)

    def output_allowance(self, request: ChatRequest) -> int | None:
        return models.output_allowance(request, self.rules(request.model))

    # -- the contract --------------------------------------------------------------------

    def execute(self, connection: Connection, request: ChatRequest) -> Completion:
        client = self._pool.get(connection, self.extra_headers(connection))
        # Sent as a stream and read here, so the body is cut at its size limit.
        limit = bounds.limits().max_body_bytes
        try:
            response = client.post(**self._post_args(connection, request), stream=True)
            try:
                content = bounds.read_limited(response.iter_bytes(), limit)
            finally:
                response.close()
        except Exception as exc:
            self._raise(exc, request)
        return self._parse(content, response.headers, request)

    async def aexecute(self, connection: Connection, request: ChatRequest) -> Completion:
        client = self._async_pool.get(connection, self.extra_headers(connection))
        limit = bounds.limits().max_body_bytes
        try:
            response = await client.post(**self._post_args(connection, request), stream=True)
            try:
                content = await bounds.aread_limited(response.aiter_bytes(), limit)
            finally:
                await response.aclose()
        except Exception as exc:
            self._raise(exc, request)
        return self._parse(content, response.headers, request)

    def open_stream(self, connection: Connection, request: ChatRequest) -> SSEStream:
        client = self._pool.get(connection, self.extra_headers(connection))
        try:
            response = client.post(**self._post_args(connection, request), stream=True)
        except Exception as exc:
            self._raise(exc, request)
        return SSEStream(response, self._reader(response, request), self._translator(request))

    async def aopen_stream(self, connection: Connection, request: ChatRequest) -> AsyncSSEStream:
        client = self._async_pool.get(connection, self.extra_headers(connection))
        try:
            response = await client.post(**self._post_args(connection, request), stream=True)
        except Exception as exc:
            self._raise(exc, request)
        return AsyncSSEStream(response, self._reader(response, request), self._translator(request))

    def remote_batches(self) -> RemoteBatches:
        if not self.offers_remote_batches:
            return super().remote_batches()
        from moodlemate.providers.openai.batch_api import OpenAIBatches

        return OpenAIBatches(self)

    def count_tokens(self, text: str, model: str) -> int:
        return tokens.count_tokens(text, model)

    def count_message_tokens(self, messages: Sequence[Mapping[str, str]], model: str) -> TokenCount:
        return chat_tokens.count_message_tokens(messages, model)

    def count_input_tokens(self, request: ChatRequest) -> TokenCount:
        return input_tokens.count_input_tokens(request)

    def model_info(self, model: str, endpoint: str | None = None) -> ModelInfo | None:
        return pricing.openai_prices().get(model)

    def models(self, endpoint: str | None = None) -> list[ModelInfo]:
        return pricing.openai_prices().all()

    def served_context_window(self, connection: Connection, model: str) -> int | None:
        if self.recognises(connection.endpoint):
            return None  # the vendor's own service: its models are in the tables
        client = self._pool.get(connection, self.extra_headers(connection))
        options: Any = {**self._options(connection), "timeout": served_limits.TIMEOUT}

        def fetch(url: str) -> bytes | None:
            try:
                response = client.get(url, cast_to=_httpx().Response, options=options)
            except Exception:  # an error status or no answer: the server does not say
                return None
            return bytes(response.content) if 200 <= response.status_code < 300 else None

        return self._served.window(connection.endpoint, model, fetch)

    def close(self) -> None:
        self._pool.close()
        self._async_pool.forget()

    async def aclose(self) -> None:
        await self._async_pool.aclose()

    # -- internals: one request shape and one error mapping for all four call styles ----

    def _post_args(self, connection: Connection, request: ChatRequest) -> dict[str, Any]:
        # The SDK follows redirects, and httpx strips only Authorization when one leaves the
        # host: configured headers (a gateway's key) and the prompt would go wherever a 307
        # points. An API call has no business being redirected; the 3xx is an error.
        # The raw HTTP response: we parse the JSON (or the event stream) ourselves.
        return {
            "path": "/responses" if self.uses_responses(request) else "/chat/completions",
            "body": self.body(request),
            "cast_to": _httpx().Response,
            "options": self._options(connection),
        }

    def _options(self, connection: Connection) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": connection.timeout, "follow_redirects": False}
        # Without a key, drop the SDK's placeholder "Bearer no-key", but not an
        # Authorization header the user configured for this endpoint (a gateway's token).
        if connection.api_key is None and not any(
            name.lower() == "authorization" for name in connection.headers
        ):
            import openai

            options["headers"] = {"Authorization": openai.Omit()}
        return options

    def _parse(self, content: bytes, headers: Any, request: ChatRequest) -> Completion:
        if self.uses_responses(request):
            return responses_reply.parse_response(
                content, headers, provider=self.name, model=request.model
            )
        return responses.parse_completion(content, headers, provider=self.name, model=request.model)

    def _reader(self, response: Any, request: ChatRequest) -> ChunkReader:
        reader = (
            responses_reply.ResponsesEventReader if self.uses_responses(request) else ChunkReader
        )
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
        if isinstance(exc, ProviderError):  # raised by our own readers and caps
            exc.provider = exc.provider or self.name
            exc.model = exc.model or request.model
            return exc
        mapped = responses.provider_error(exc, provider=self.name, model=request.model)
        if mapped is not None:
            return mapped
        # A reset or a stall while reading the body escapes the SDK's own wrapping.
        httpx = _httpx()
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(
                "timed out reading the response", provider=self.name, model=request.model
            )
        if isinstance(exc, httpx.TransportError | ConnectionError):
            return APIConnectionError(
                f"transport failed ({type(exc).__name__})",
                provider=self.name,
                model=request.model,
            )
        return None
