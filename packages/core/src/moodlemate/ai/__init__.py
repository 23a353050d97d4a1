"""moodlemate.ai: one small, fast, dependable facade over LLM chat providers.

    from moodlemate.ai import GPT
    gpt = GPT()
    text = gpt.chat_completion("gpt-4o-mini", "Be brief.", "Hi")

Names are loaded on first access (PEP 562), so ``import moodlemate.ai`` costs next to
nothing and never imports a vendor SDK.
"""

from __future__ import annotations

from importlib import import_module

from moodlemate.ai._moved_modules import install as _install_moved_modules

# Not ``from typing import TYPE_CHECKING``: typing alone costs more than this whole module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    # ``X as X``: the explicit re-export form, so users' `mypy --strict` sees these names.
    from moodlemate.ai._bounds import (
        ResponseLimits as ResponseLimits,
    )
    from moodlemate.ai._conversation import (
        Conversation as Conversation,
    )
    from moodlemate.ai._gpt import (
        GPT as GPT,
    )
    from moodlemate.ai._hookspecs import (
        hookimpl as hookimpl,
    )
    from moodlemate.ai._ledger import (
        Ledger as Ledger,
    )
    from moodlemate.ai._messages import (
        AudioPart as AudioPart,
    )
    from moodlemate.ai._messages import (
        FilePart as FilePart,
    )
    from moodlemate.ai._messages import (
        ImagePart as ImagePart,
    )
    from moodlemate.ai._messages import (
        TextPart as TextPart,
    )
    from moodlemate.ai._messages import (
        ToolCall as ToolCall,
    )
    from moodlemate.ai._options import (
        Options as Options,
    )
    from moodlemate.ai._plugins import (
        PluginRegistry as PluginRegistry,
    )
    from moodlemate.ai._plugins import (
        registry as registry,
    )
    from moodlemate.ai._pricing import (
        ModelInfo as ModelInfo,
    )
    from moodlemate.ai._pricing import (
        Price as Price,
    )
    from moodlemate.ai._provider import (
        ChatRequest as ChatRequest,
    )
    from moodlemate.ai._provider import (
        Completion as Completion,
    )
    from moodlemate.ai._provider import (
        Connection as Connection,
    )
    from moodlemate.ai._provider import (
        Message as Message,
    )
    from moodlemate.ai._provider import (
        Provider as Provider,
    )
    from moodlemate.ai._retry import (
        RetryPolicy as RetryPolicy,
    )
    from moodlemate.ai._run import (
        Run as Run,
    )
    from moodlemate.ai._run import (
        Turn as Turn,
    )
    from moodlemate.ai._run_events import (
        TextDelta as TextDelta,
    )
    from moodlemate.ai._run_events import (
        ToolCallFinished as ToolCallFinished,
    )
    from moodlemate.ai._run_events import (
        ToolCallRequested as ToolCallRequested,
    )
    from moodlemate.ai._run_events import (
        ToolCallStarted as ToolCallStarted,
    )
    from moodlemate.ai._run_events import (
        TurnFinished as TurnFinished,
    )
    from moodlemate.ai._run_stream import (
        AsyncRunStream as AsyncRunStream,
    )
    from moodlemate.ai._run_stream import (
        RunStream as RunStream,
    )
    from moodlemate.ai._secrets import (
        RedactingFilter as RedactingFilter,
    )
    from moodlemate.ai._spend_log import (
        SpendLog as SpendLog,
    )
    from moodlemate.ai._streaming import (
        AsyncTextStream as AsyncTextStream,
    )
    from moodlemate.ai._streaming import (
        TextStream as TextStream,
    )
    from moodlemate.ai._structured import (
        TypedCompletion as TypedCompletion,
    )
    from moodlemate.ai._token_count import (
        TokenCount as TokenCount,
    )
    from moodlemate.ai._tool_calls import (
        ToolResult as ToolResult,
    )
    from moodlemate.ai._tools import (
        Tool as Tool,
    )
    from moodlemate.ai._usage import (
        Usage as Usage,
    )
    from moodlemate.ai.errors import (
        APIConnectionError as APIConnectionError,
    )
    from moodlemate.ai.errors import (
        APITimeoutError as APITimeoutError,
    )
    from moodlemate.ai.errors import (
        AuthenticationError as AuthenticationError,
    )
    from moodlemate.ai.errors import (
        BadRequestError as BadRequestError,
    )
    from moodlemate.ai.errors import (
        BudgetExceededError as BudgetExceededError,
    )
    from moodlemate.ai.errors import (
        BudgetStoreError as BudgetStoreError,
    )
    from moodlemate.ai.errors import (
        ClientClosedError as ClientClosedError,
    )
    from moodlemate.ai.errors import (
        ConfigurationError as ConfigurationError,
    )
    from moodlemate.ai.errors import (
        ConflictError as ConflictError,
    )
    from moodlemate.ai.errors import (
        ContextWindowExceededError as ContextWindowExceededError,
    )
    from moodlemate.ai.errors import (
        EmptyReplyError as EmptyReplyError,
    )
    from moodlemate.ai.errors import (
        HookTimeoutError as HookTimeoutError,
    )
    from moodlemate.ai.errors import (
        InvalidAPIKeyError as InvalidAPIKeyError,
    )
    from moodlemate.ai.errors import (
        InvalidEndpointError as InvalidEndpointError,
    )
    from moodlemate.ai.errors import (
        MalformedResponseError as MalformedResponseError,
    )
    from moodlemate.ai.errors import (
        MaxTurnsError as MaxTurnsError,
    )
    from moodlemate.ai.errors import (
        MissingAPIKeyError as MissingAPIKeyError,
    )
    from moodlemate.ai.errors import (
        MoodlemateError as MoodlemateError,
    )
    from moodlemate.ai.errors import (
        NotFoundError as NotFoundError,
    )
    from moodlemate.ai.errors import (
        PermissionDeniedError as PermissionDeniedError,
    )
    from moodlemate.ai.errors import (
        PluginError as PluginError,
    )
    from moodlemate.ai.errors import (
        ProviderError as ProviderError,
    )
    from moodlemate.ai.errors import (
        ProviderNotInstalledError as ProviderNotInstalledError,
    )
    from moodlemate.ai.errors import (
        QuotaExceededError as QuotaExceededError,
    )
    from moodlemate.ai.errors import (
        RateLimitError as RateLimitError,
    )
    from moodlemate.ai.errors import (
        RefusalError as RefusalError,
    )
    from moodlemate.ai.errors import (
        ReplyError as ReplyError,
    )
    from moodlemate.ai.errors import (
        ResponseTooLargeError as ResponseTooLargeError,
    )
    from moodlemate.ai.errors import (
        RunBudgetError as RunBudgetError,
    )
    from moodlemate.ai.errors import (
        RunDeadlineError as RunDeadlineError,
    )
    from moodlemate.ai.errors import (
        RunLimitError as RunLimitError,
    )
    from moodlemate.ai.errors import (
        ServerError as ServerError,
    )
    from moodlemate.ai.errors import (
        StreamingNotSupportedError as StreamingNotSupportedError,
    )
    from moodlemate.ai.errors import (
        StreamInterruptedError as StreamInterruptedError,
    )
    from moodlemate.ai.errors import (
        StructuredOutputError as StructuredOutputError,
    )
    from moodlemate.ai.errors import (
        TokenizerUnavailableError as TokenizerUnavailableError,
    )
    from moodlemate.ai.errors import (
        ToolExecutionError as ToolExecutionError,
    )
    from moodlemate.ai.errors import (
        TruncatedAnswerError as TruncatedAnswerError,
    )
    from moodlemate.ai.errors import (
        UnknownProviderError as UnknownProviderError,
    )
    from moodlemate.ai.errors import (
        UnsupportedFeatureError as UnsupportedFeatureError,
    )
    from moodlemate.ai.errors import (
        UnsupportedInputError as UnsupportedInputError,
    )
    from moodlemate.ai.errors import (
        ValidationError as ValidationError,
    )

__version__ = "0.1.0"

_install_moved_modules()  # moodlemate.ai.retry and the other old paths, with a warning

# The module that defines each public name, imported on first access. The one list of the
# public API: ``__all__`` and the lookup below come from it (the block above, for type
# checkers, must match; tests/core/test_public_api.py checks that).
_LAZY: dict[str, tuple[str, ...]] = {
    "moodlemate.ai._bounds": ("ResponseLimits",),
    "moodlemate.ai._conversation": ("Conversation",),
    "moodlemate.ai.errors": (
        "APIConnectionError",
        "APITimeoutError",
        "AuthenticationError",
        "BadRequestError",
        "BudgetExceededError",
        "BudgetStoreError",
        "ClientClosedError",
        "ConfigurationError",
        "ConflictError",
        "ContextWindowExceededError",
        "EmptyReplyError",
        "HookTimeoutError",
        "InvalidAPIKeyError",
        "InvalidEndpointError",
        "MalformedResponseError",
        "MaxTurnsError",
        "MissingAPIKeyError",
        "MoodlemateError",
        "NotFoundError",
        "PermissionDeniedError",
        "PluginError",
        "ProviderError",
        "ProviderNotInstalledError",
        "QuotaExceededError",
        "RateLimitError",
        "RefusalError",
        "ReplyError",
        "ResponseTooLargeError",
        "RunBudgetError",
        "RunDeadlineError",
        "RunLimitError",
        "ServerError",
        "StreamInterruptedError",
        "StreamingNotSupportedError",
        "StructuredOutputError",
        "TokenizerUnavailableError",
        "ToolExecutionError",
        "TruncatedAnswerError",
        "UnknownProviderError",
        "UnsupportedFeatureError",
        "UnsupportedInputError",
        "ValidationError",
    ),
    "moodlemate.ai._messages": (
        "AudioPart",
        "FilePart",
        "ImagePart",
        "TextPart",
        "ToolCall",
    ),
    "moodlemate.ai._options": ("Options",),
    "moodlemate.ai._gpt": ("GPT",),
    "moodlemate.ai._hookspecs": ("hookimpl",),
    "moodlemate.ai._ledger": ("Ledger",),
    "moodlemate.ai._plugins": (
        "PluginRegistry",
        "registry",
    ),
    "moodlemate.ai._secrets": ("RedactingFilter",),
    "moodlemate.ai._spend_log": ("SpendLog",),
    "moodlemate.ai._pricing": (
        "ModelInfo",
        "Price",
    ),
    "moodlemate.ai._provider": (
        "ChatRequest",
        "Completion",
        "Connection",
        "Message",
        "Provider",
    ),
    "moodlemate.ai._retry": ("RetryPolicy",),
    "moodlemate.ai._streaming": (
        "AsyncTextStream",
        "TextStream",
    ),
    "moodlemate.ai._run": (
        "Run",
        "Turn",
    ),
    "moodlemate.ai._run_events": (
        "TextDelta",
        "ToolCallFinished",
        "ToolCallRequested",
        "ToolCallStarted",
        "TurnFinished",
    ),
    "moodlemate.ai._run_stream": (
        "AsyncRunStream",
        "RunStream",
    ),
    "moodlemate.ai._structured": ("TypedCompletion",),
    "moodlemate.ai._tool_calls": ("ToolResult",),
    "moodlemate.ai._tools": ("Tool",),
    "moodlemate.ai._token_count": ("TokenCount",),
    "moodlemate.ai._usage": ("Usage",),
}

_DEFINED_IN = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted([*_DEFINED_IN, "__version__", "register", "register_provider"])


def register(plugin: Any, name: str | None = None) -> None:
    """Register a plugin (a module or object with ``@hookimpl`` functions) defined in code."""
    from moodlemate.ai._plugins import registry

    registry.register(plugin, name)


def register_provider(provider: Provider) -> None:
    """Register one provider object defined in code, e.g. in a script or notebook."""
    from moodlemate.ai._plugins import registry

    registry.register_provider(provider)


def __getattr__(name: str) -> Any:
    module = _DEFINED_IN.get(name)
    if module is None:
        raise AttributeError(f"module 'moodlemate.ai' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
