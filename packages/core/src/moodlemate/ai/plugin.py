"""The plugin contract: everything a provider package imports, and nothing else.

A provider subclasses :class:`Provider` (``execute`` one request, ``count_tokens``, and
optionally ``aexecute``, ``open_stream``, ``model_info``...), registers it from a
``register_providers`` hook marked with :data:`hookimpl`, and raises the errors below. It
imports from this module only; every other module of ``moodlemate.ai`` is the facade's
implementation and may change in any release. See docs/plugins.md.
"""

from __future__ import annotations

from moodlemate.ai import _bounds as bounds
from moodlemate.ai._answer_format import AnswerFormat, AnswerMode, answer_instructions
from moodlemate.ai._bounds import ResponseLimits
from moodlemate.ai._call_types import (
    AudioPart,
    ChatRequest,
    Completion,
    Connection,
    Detail,
    FailedEntry,
    FilePart,
    ImagePart,
    Message,
    Options,
    Part,
    Role,
    TextPart,
    ToolCall,
)
from moodlemate.ai._hookspecs import hookimpl
from moodlemate.ai._image_size import image_dimensions
from moodlemate.ai._json_reader import json_loads
from moodlemate.ai._media import data_url
from moodlemate.ai._options import NO_OPTIONS
from moodlemate.ai._pricing import ModelInfo, Price
from moodlemate.ai._provider import AsyncProviderStream, Provider, ProviderStream
from moodlemate.ai._rate_limit_headers import RateLimits, rate_limits_from_headers
from moodlemate.ai._remote_batches import RemoteBatch, RemoteBatches, RemoteResult
from moodlemate.ai._retry import retry_after_from_headers, should_retry_from_headers
from moodlemate.ai._secrets import guard_loggers
from moodlemate.ai._token_framing import TokenCount, count_messages
from moodlemate.ai._urls import normalize_endpoint
from moodlemate.ai._usage import Usage
from moodlemate.ai.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ContextWindowExceededError,
    InvalidAPIKeyError,
    InvalidEndpointError,
    MalformedResponseError,
    MoodlemateError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ResponseTooLargeError,
    ServerContextWindowExceededError,
    ServerError,
    StreamingNotSupportedError,
    TokenizerUnavailableError,
    UnsupportedFeatureError,
    UnsupportedInputError,
    ValidationError,
    error_for_status,
)

__all__ = [
    "NO_OPTIONS",
    "APIConnectionError",
    "APITimeoutError",
    "AnswerFormat",
    "AnswerMode",
    "AsyncProviderStream",
    "AudioPart",
    "AuthenticationError",
    "BadRequestError",
    "ChatRequest",
    "Completion",
    "ConflictError",
    "Connection",
    "ContextWindowExceededError",
    "Detail",
    "FailedEntry",
    "FilePart",
    "ImagePart",
    "InvalidAPIKeyError",
    "InvalidEndpointError",
    "MalformedResponseError",
    "Message",
    "ModelInfo",
    "MoodlemateError",
    "NotFoundError",
    "Options",
    "Part",
    "PermissionDeniedError",
    "Price",
    "Provider",
    "ProviderError",
    "ProviderStream",
    "QuotaExceededError",
    "RateLimitError",
    "RateLimits",
    "RemoteBatch",
    "RemoteBatches",
    "RemoteResult",
    "ResponseLimits",
    "ResponseTooLargeError",
    "Role",
    "ServerContextWindowExceededError",
    "ServerError",
    "StreamingNotSupportedError",
    "TextPart",
    "TokenCount",
    "TokenizerUnavailableError",
    "ToolCall",
    "UnsupportedFeatureError",
    "UnsupportedInputError",
    "Usage",
    "ValidationError",
    "answer_instructions",
    "bounds",
    "count_messages",
    "data_url",
    "error_for_status",
    "guard_loggers",
    "hookimpl",
    "image_dimensions",
    "json_loads",
    "normalize_endpoint",
    "rate_limits_from_headers",
    "retry_after_from_headers",
    "should_retry_from_headers",
]
