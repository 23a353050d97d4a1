"""moodlemate.ai: one small, fast, dependable facade over LLM chat providers.

    from moodlemate.ai import GPT
    gpt = GPT()
    text = gpt.chat_completion("gpt-4o-mini", "Be brief.", "Hi")

Names are loaded on first access (PEP 562), so ``import moodlemate.ai`` costs next to
nothing and never imports a vendor SDK.
"""

from __future__ import annotations

from importlib import import_module

# Not ``from typing import TYPE_CHECKING``: typing alone costs more than this whole module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from moodlemate.ai.errors import (
        APIConnectionError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        BudgetExceededError,
        ConfigurationError,
        ConflictError,
        ContextWindowExceededError,
        InvalidAPIKeyError,
        InvalidEndpointError,
        MalformedResponseError,
        MissingAPIKeyError,
        MoodlemateError,
        NotFoundError,
        PermissionDeniedError,
        PluginError,
        ProviderError,
        ProviderNotInstalledError,
        QuotaExceededError,
        RateLimitError,
        ServerError,
        StreamingNotSupportedError,
        StreamInterruptedError,
        TokenizerUnavailableError,
        UnknownProviderError,
        UnsupportedFeatureError,
        ValidationError,
    )
    from moodlemate.ai.gpt import GPT
    from moodlemate.ai.hookspecs import hookimpl
    from moodlemate.ai.ledger import Ledger
    from moodlemate.ai.plugins import registry
    from moodlemate.ai.pricing import ModelInfo, Price
    from moodlemate.ai.provider import ChatRequest, Completion, Connection, Message, Provider
    from moodlemate.ai.retry import RetryPolicy
    from moodlemate.ai.token_count import TokenCount
    from moodlemate.ai.usage import Usage

__version__ = "0.1.0"

_ERRORS = [
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigurationError",
    "ConflictError",
    "ContextWindowExceededError",
    "InvalidAPIKeyError",
    "InvalidEndpointError",
    "MalformedResponseError",
    "MissingAPIKeyError",
    "MoodlemateError",
    "NotFoundError",
    "PermissionDeniedError",
    "PluginError",
    "ProviderError",
    "ProviderNotInstalledError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "StreamInterruptedError",
    "StreamingNotSupportedError",
    "TokenizerUnavailableError",
    "UnknownProviderError",
    "UnsupportedFeatureError",
    "ValidationError",
]

_LAZY: dict[str, str] = {
    "GPT": "moodlemate.ai.gpt",
    "hookimpl": "moodlemate.ai.hookspecs",
    "Ledger": "moodlemate.ai.ledger",
    "registry": "moodlemate.ai.plugins",
    "ModelInfo": "moodlemate.ai.pricing",
    "Price": "moodlemate.ai.pricing",
    "ChatRequest": "moodlemate.ai.provider",
    "Completion": "moodlemate.ai.provider",
    "Connection": "moodlemate.ai.provider",
    "Message": "moodlemate.ai.provider",
    "Provider": "moodlemate.ai.provider",
    "RetryPolicy": "moodlemate.ai.retry",
    "TokenCount": "moodlemate.ai.token_count",
    "Usage": "moodlemate.ai.usage",
    **dict.fromkeys(_ERRORS, "moodlemate.ai.errors"),
}

__all__ = [*sorted(_LAZY), "__version__", "register", "register_provider"]


def register(plugin: Any, name: str | None = None) -> None:
    """Register a plugin (a module or object with ``@hookimpl`` functions) defined in code."""
    from moodlemate.ai.plugins import registry

    registry.register(plugin, name)


def register_provider(provider: Provider) -> None:
    """Register one provider object defined in code, e.g. in a script or notebook."""
    from moodlemate.ai.plugins import registry

    registry.register_provider(provider)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'moodlemate.ai' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
