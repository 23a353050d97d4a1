"""One exception hierarchy users can catch without importing any vendor SDK.

Every message passes through :func:`moodlemate.ai._secrets.redact`, so an API key that a
server echoes back (or that a caller pastes into a model name) never reaches a traceback.
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from moodlemate.ai._error_base import MoodlemateError, ValidationError
from moodlemate.ai._secrets import redact
from moodlemate.ai._usage import summed_cost

if TYPE_CHECKING:
    from moodlemate.ai._call_types import Completion

__all__ = [
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
    "ServerContextWindowExceededError",
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
    "error_for_status",
]


class ConfigurationError(MoodlemateError):
    """Settings that cannot work: unknown provider, missing package, bad config file."""


class UnknownProviderError(ConfigurationError, LookupError):
    pass


class ProviderNotInstalledError(UnknownProviderError):
    """A known provider whose package is missing; the message names the extra to install."""


class MissingAPIKeyError(ConfigurationError):
    pass


class PluginError(ConfigurationError):
    """A plugin broke the provider contract (import failure, missing method, duplicate name)."""


class HookTimeoutError(PluginError):
    """A plugin's ``before_request`` hook returned after the call's deadline had passed: the
    request was not sent. (An ``after_response`` hook that overruns only draws a warning:
    the answer is already paid for.)"""


class TokenizerUnavailableError(ConfigurationError):
    """A tokenizer's data cannot be loaded (typically offline without a BPE cache)."""


class UnsupportedFeatureError(ConfigurationError):
    """The provider does not implement what was asked (async calls, streaming)."""


class InvalidAPIKeyError(ValidationError):
    pass


class UnsupportedInputError(ValidationError):
    """The model does not take what the request carries (an image, audio, a tool, an
    option), by its provider's model rules; raised before sending."""


class InvalidEndpointError(ValidationError):
    pass


class ContextWindowExceededError(ValidationError):
    """The prompt plus the requested output cannot fit the model's context window: counted
    before sending, or the server's refusal (then also a :class:`BadRequestError`)."""

    window: int | None = None
    """The window in tokens, when known (the server's own figure for a server refusal)."""


class BudgetExceededError(MoodlemateError):
    """The instance's cost ceiling is reached; the call was not sent."""


class BudgetStoreError(BudgetExceededError):
    """The store of a shared budget (the spend log's SQLite file, Redis) cannot be used, so
    the budget cannot be checked and the call was not sent (the budget fails closed; see
    ``budget_fail_open``). A BudgetExceededError, so code that stops on a spent budget stops
    here too; catch this one to tell an outage from a spent budget."""


class ClientClosedError(MoodlemateError, RuntimeError):
    """The GPT was closed (:meth:`GPT.close`, or its ``with`` block ended): it sends nothing
    more. Make a new one. (A RuntimeError too, as a closed ``httpx.Client`` raises.)"""


class ToolExecutionError(MoodlemateError):
    """A tool raised, and the run was told to raise rather than tell the model
    (``raise_tool_errors=True``); the tool's exception is the ``__cause__``."""

    def __init__(self, message: str, *, call: Any) -> None:
        super().__init__(message)
        self.call = call
        """The ToolCall that failed."""


class RunLimitError(MoodlemateError):
    """A tool run stopped at one of its bounds before the model gave its answer; ``run`` holds
    the turns so far (each billed and in the ledger), their cost and their tool calls."""

    def __init__(self, message: str, run: Any) -> None:
        super().__init__(message)
        self.run = run


class MaxTurnsError(RunLimitError):
    """The model still asked for tools after ``max_turns`` turns."""


class RunBudgetError(RunLimitError, BudgetExceededError):
    """The run's next turn could cost more than what is left of the run's ``budget``; it was
    not sent. Also a BudgetExceededError."""


class RunDeadlineError(RunLimitError):
    """The run's ``deadline`` (model turns and tool time together) ran out."""


class ProviderError(MoodlemateError):
    """A call to a provider failed. Carries what support tickets and dashboards need."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider: str | None = None,
        model: str | None = None,
        request_id: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.provider = provider
        self.model = model
        self.request_id = request_id
        self.code = code
        self.retry_after = retry_after
        self.attempts = 1
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        parts = [self.message]
        context = [
            f"{name}={value}"
            for name, value in (
                ("provider", self.provider),
                ("model", self.model),
                ("status", self.status_code),
                ("code", self.code),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        if self.retry_after is not None:
            context.append(f"retry_after={self.retry_after:g}s")
        if self.attempts > 1:
            context.append(f"attempts={self.attempts}")
        if context:
            parts.append(f"({', '.join(context)})")
        return redact(" ".join(parts))


class APIConnectionError(ProviderError):
    """No usable answer came over the network. ``cause_kind`` says why, where the transport
    could tell: ``"dns"`` (the host name does not resolve), ``"refused"`` (nothing listens
    there), ``"tls"`` (the handshake or certificate failed), ``"timeout"``, ``"closed"`` (the
    server dropped the connection), ``"proxy"``, or ``"network"`` (anything else); None when
    unknown. The first three will not heal by waiting a few seconds."""

    retryable = True
    cause_kind: str | None = None

    def __init__(self, message: str, *, cause_kind: str | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        if cause_kind is not None:
            self.cause_kind = cause_kind


class APITimeoutError(APIConnectionError):
    retryable = True
    cause_kind: str | None = "timeout"


class MalformedResponseError(ProviderError):
    """The server answered 2xx with a body that is not a usable completion."""

    retryable = True


class ResponseTooLargeError(MalformedResponseError):
    """The response exceeded one of the size limits (:class:`~moodlemate.ai.ResponseLimits`).
    Not retried: the same server would send the same body. The message names the limit."""

    retryable = False


class RateLimitError(ProviderError):
    retryable = True


class QuotaExceededError(ProviderError):
    """Billing, not load: out of quota or credits. Waiting does not help, so never retried."""


class AuthenticationError(ProviderError):
    pass


class PermissionDeniedError(ProviderError):
    pass


class BadRequestError(ProviderError):
    pass


class NotFoundError(ProviderError):
    pass


class ConflictError(ProviderError):
    retryable = True


class ServerError(ProviderError):
    retryable = True


class ServerContextWindowExceededError(ContextWindowExceededError, BadRequestError):
    """The server refused a request over its context window (OpenAI's
    ``context_length_exceeded``, llama.cpp's ``exceed_context_size_error``, vLLM's message).
    Catch :class:`ContextWindowExceededError` for both this and the check before sending."""

    def __init__(
        self,
        message: str,
        *,
        window: int | None = None,
        prompt_tokens: int | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.window = window
        self.prompt_tokens = prompt_tokens
        """The prompt's length in the server's own tokens, when it says (llama.cpp does)."""


class StreamingNotSupportedError(BadRequestError):
    """The server refuses to stream this model (o1 at times); the facade falls back to a
    single non-streamed response."""


class StreamInterruptedError(ProviderError):
    """A stream failed after text was delivered. Not retried: a retry would repeat text the
    caller already has. ``partial_text`` holds what arrived; ``__cause__`` the failure."""

    def __init__(
        self,
        message: str,
        *,
        partial_text: str = "",
        provider: str | None = None,
        model: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, model=model, request_id=request_id)
        self.partial_text = partial_text


class ReplyError(ProviderError):
    """The call succeeded (and was billed) but its reply is no answer. Never retried: the same
    request gets the same kind of reply. ``completion`` is the full result, usage and cost
    included (the call is in the ledger); ``completions`` every billed reply that led to it
    (a typed answer's earlier attempts too) and ``cost`` their summed cost."""

    retryable = False

    def __init__(self, message: str, completion: Completion) -> None:
        super().__init__(
            message,
            provider=completion.provider,
            model=completion.model,
            request_id=completion.request_id,
        )
        self.completion = completion
        self.completions: tuple[Completion, ...] = (completion,)
        self.attempts = completion.attempts

    @property
    def cost(self) -> Decimal | None:
        """The summed cost of ``completions``; None when any one's cost is unknown."""
        return summed_cost(c.cost for c in self.completions)


class EmptyReplyError(ReplyError):
    """The reply has no text and the server did not say it stopped normally: typically a
    reasoning model that spent ``max_tokens`` on hidden reasoning (``finish_reason`` is
    ``"length"``), a content filter, or a reply made only of tool calls."""


class TruncatedAnswerError(ReplyError):
    """A typed answer was cut off by the token limit (``finish_reason`` ``"length"``): asking
    again would be cut off the same way. ``partial`` holds the text that arrived; raise
    ``max_tokens`` (or leave it None)."""

    @property
    def partial(self) -> str:
        return self.completion.text


class StructuredOutputError(ReplyError):
    """No reply matched the answer's schema within ``max_attempts``. ``completions`` holds every
    attempt (each billed and in the ledger) and ``problems`` what was wrong with each."""

    def __init__(
        self,
        message: str,
        completions: tuple[Completion, ...],
        problems: tuple[tuple[str, ...], ...],
    ) -> None:
        super().__init__(message, completions[-1])
        self.completions = completions
        self.problems = problems
        self.attempts = len(completions)


class RefusalError(ReplyError):
    """The model refused to answer (``message.refusal``); ``refusal`` holds its explanation."""

    @property
    def refusal(self) -> str:
        return self.completion.refusal or ""


_BY_STATUS: dict[int, type[ProviderError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: QuotaExceededError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: APITimeoutError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def error_for_status(
    status: int, code: str | None = None, *, quota_codes: Collection[str] = ()
) -> type[ProviderError]:
    """Map an HTTP status to the error class users catch. ``quota_codes`` are the vendor's
    error codes for "out of credit" (OpenAI's ``insufficient_quota``): a body carrying one
    is a QuotaExceededError, which no retry fixes, whatever its status."""
    if code is not None and code in quota_codes:
        return QuotaExceededError
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, ProviderError)
