"""The OpenAI provider: api.openai.com, and any OpenAI-compatible server at a custom endpoint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from moodlemate.ai.errors import APIConnectionError
from moodlemate.ai.pricing import ModelInfo
from moodlemate.ai.provider import ChatRequest, Completion, Connection, Provider
from moodlemate.ai.token_count import TokenCount
from moodlemate.providers.openai import chat_tokens, models, pricing, responses, tokens
from moodlemate.providers.openai.clients import ClientPool

if TYPE_CHECKING:
    import openai

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
    hosts: tuple[str, ...] = ("api.openai.com",)

    def __init__(self) -> None:
        self._pool = ClientPool()

    # -- extension points ----------------------------------------------------------------

    def extra_headers(self, connection: Connection) -> Mapping[str, str]:
        """Headers every request to this provider carries (beyond auth)."""
        return {}

    def rules(self, model: str) -> models.ModelRules:
        return models.rules_for(model)

    def body(self, request: ChatRequest) -> dict[str, Any]:
        return models.chat_body(request, self.rules(request.model))

    # -- the contract --------------------------------------------------------------------

    def complete(self, connection: Connection, request: ChatRequest) -> Completion:
        client = self._pool.get(connection, self.extra_headers(connection))
        response = self._post(client, connection, request, self.body(request))
        return responses.parse_completion(
            response.content, response.headers, provider=self.name, model=request.model
        )

    def count_tokens(self, text: str, model: str) -> int:
        return tokens.count_tokens(text, model)

    def count_message_tokens(self, messages: Sequence[Mapping[str, str]], model: str) -> TokenCount:
        return chat_tokens.count_message_tokens(messages, model)

    def model_info(self, model: str) -> ModelInfo | None:
        return pricing.openai_prices().get(model)

    def models(self) -> list[ModelInfo]:
        return pricing.openai_prices().all()

    def close(self) -> None:
        self._pool.close()

    # -- internals -----------------------------------------------------------------------

    def _post(
        self,
        client: openai.OpenAI,
        connection: Connection,
        request: ChatRequest,
        body: dict[str, Any],
    ) -> Any:
        options: dict[str, Any] = {"timeout": connection.timeout}
        if connection.api_key is None:
            import openai

            options["headers"] = {"Authorization": openai.Omit()}
        # The raw HTTP response: we parse the JSON ourselves (see responses.py).
        post: Any = client.post
        try:
            return post("/chat/completions", body=body, cast_to=_httpx().Response, options=options)
        except Exception as exc:
            mapped = responses.provider_error(exc, provider=self.name, model=request.model)
            if mapped is not None:
                raise mapped from exc
            # A reset while reading the body escapes the SDK's own wrapping.
            if isinstance(exc, _httpx().TransportError | ConnectionError):
                raise APIConnectionError(
                    f"transport failed ({type(exc).__name__})",
                    provider=self.name,
                    model=request.model,
                ) from exc
            raise


@cache
def _httpx() -> Any:
    """The HTTP library of the installed SDK: httpx2 from openai 3, httpx before it."""
    try:
        import httpx2  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # openai < 3
        import httpx  # type: ignore[import-not-found,unused-ignore]

        return httpx
    return httpx2
