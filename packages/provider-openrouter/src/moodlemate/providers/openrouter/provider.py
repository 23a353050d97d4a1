"""The OpenRouter provider: the OpenAI provider with OpenRouter's endpoint, keys, headers,
model ids and price catalog. OpenRouter speaks the OpenAI protocol, so requests, responses,
errors and token counting are the OpenAI provider's own code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moodlemate.ai.plugin import (
    ChatRequest,
    Completion,
    Connection,
    ModelInfo,
    Price,
    Provider,
    UnsupportedInputError,
)
from moodlemate.providers.openai import OpenAIProvider
from moodlemate.providers.openai.models import ModelRules, routed_rules_for
from moodlemate.providers.openai.streaming import AsyncSSEStream
from moodlemate.providers.openrouter import catalog

__all__ = ["OpenRouterProvider"]


class OpenRouterProvider(OpenAIProvider):
    """``openrouter``: https://openrouter.ai/api/v1, keys ``sk-or-...``, model ids such as
    ``openai/gpt-4o-mini`` or ``anthropic/claude-sonnet-4``."""

    name = "openrouter"
    default_model = "openai/gpt-4o-mini"
    default_endpoint = catalog.DEFAULT_ENDPOINT
    key_env = "OPENROUTER_API_KEY"
    key_prefixes = ("sk-or-",)
    key_min_length = 20  # 'sk-or-v1-' and 64 hex digits
    hosts = ("openrouter.ai",)

    def extra_headers(self, connection: Connection) -> Mapping[str, str]:
        """App attribution: OpenRouter reads ``X-OpenRouter-Title``; ``X-Title`` is its
        older name, still honoured, so both are sent."""
        headers: dict[str, str] = {}
        if connection.app_url:
            headers["HTTP-Referer"] = connection.app_url
        if connection.app_title:
            headers["X-OpenRouter-Title"] = connection.app_title
            headers["X-Title"] = connection.app_title
        return headers

    def rules(self, model: str) -> ModelRules:
        """OpenAI's request rules apply to OpenAI's models (``openai/o1``, ``openai/o3-mini``);
        OpenRouter normalises the others, whatever their names look like."""
        return routed_rules_for(model)

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The chat body with ``reasoning_effort`` moved into OpenRouter's ``reasoning`` object,
        which it applies to every reasoning model it routes to; ``extra={"reasoning": {...}}``
        adds its other keys (``max_tokens``, ``exclude``, ``enabled``)."""
        body = super().body(request)
        effort = body.pop("reasoning_effort", None)
        if effort is None:
            return body
        given = body.get("reasoning")
        reasoning = dict(given) if isinstance(given, Mapping) else {}
        if "max_tokens" in reasoning:
            raise UnsupportedInputError(
                "OpenRouter takes reasoning effort or reasoning max_tokens, not both: leave out "
                "reasoning_effort or extra's reasoning.max_tokens"
            )
        reasoning.setdefault("effort", effort)
        body["reasoning"] = reasoning
        return body

    def uses_responses(self, request: ChatRequest, rules: ModelRules | None = None) -> bool:
        """OpenRouter serves every model, o1-pro and o3-pro included, on chat completions."""
        return False

    async def aexecute(self, connection: Connection, request: ChatRequest) -> Completion:
        # Fetch the price catalog off the event loop, so the call is priced from it.
        await catalog.aload(connection.endpoint)
        return await super().aexecute(connection, request)

    async def aopen_stream(self, connection: Connection, request: ChatRequest) -> AsyncSSEStream:
        await catalog.aload(connection.endpoint)
        return await super().aopen_stream(connection, request)

    def tier_price(self, model: str, tier: str | None, endpoint: str | None = None) -> Price | None:
        """The catalog's price for the default tier; OpenRouter publishes no other tier's."""
        return Provider.tier_price(self, model, tier, endpoint)

    def model_info(self, model: str, endpoint: str | None = None) -> ModelInfo | None:
        """From the catalog of ``endpoint`` (a proxy's or test server's ``/models``), never
        from whichever endpoint another instance used last: the object is shared."""
        return catalog.lookup(model, endpoint or self.default_endpoint)

    def models(self, endpoint: str | None = None) -> list[ModelInfo]:
        found = catalog.models_for(endpoint or self.default_endpoint)
        return sorted(found.values(), key=lambda info: info.name)
