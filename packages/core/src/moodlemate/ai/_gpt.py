"""The GPT facade: settings, provider choice, the retry policy and accounting, nothing vendor.

Each call validates its arguments, picks the provider, sends through the shared
:class:`~moodlemate.ai._retry.RetryPolicy` and records usage and cost in the instance's
:class:`~moodlemate.ai._ledger.Ledger`. Providers come from plugins and are resolved on first
use, so constructing a GPT imports no vendor SDK.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from os import PathLike
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from moodlemate.ai._bounds import ResponseLimits
from moodlemate.ai._budget import to_budget
from moodlemate.ai._call import Accounts, Call, RunTurn
from moodlemate.ai._call_types import with_api
from moodlemate.ai._config import check_headers, resolve_settings
from moodlemate.ai._context_window import check_context_window
from moodlemate.ai._credentials import (
    check_assigned_key,
    check_key_format,
    connect,
    endpoint_for,
    endpoint_of,
    key_for,
    provider_for,
    target_from,
)
from moodlemate.ai._evolve import evolved
from moodlemate.ai._ledger import Ledger
from moodlemate.ai._message_dicts import messages_from
from moodlemate.ai._options import Options, options_from
from moodlemate.ai._plugins import PluginRegistry, registry
from moodlemate.ai._provider import ChatRequest, Completion, Connection, Message, Provider
from moodlemate.ai._redis import check_redis_url
from moodlemate.ai._replies import reply_text
from moodlemate.ai._retry import RetryPolicy
from moodlemate.ai._routing import split_provider
from moodlemate.ai._secrets import RedactingFilter, mask, register_secret
from moodlemate.ai._token_count import TokenCount, check_messages, count_request, wire_messages
from moodlemate.ai._urls import normalize_endpoint
from moodlemate.ai._validation import (
    build_chat_request,
    build_request,
    check_model,
    check_request,
    check_text,
)
from moodlemate.ai.errors import (
    ClientClosedError,
    ConfigurationError,
    MoodlemateError,
    ValidationError,
)

if TYPE_CHECKING:
    from moodlemate.ai._answer_stream import AnswerStream, AsyncAnswerStream
    from moodlemate.ai._conversation import Conversation
    from moodlemate.ai._credentials import Target
    from moodlemate.ai._fallbacks import FallbackChain
    from moodlemate.ai._pacing import Pacer
    from moodlemate.ai._pricing import ModelInfo
    from moodlemate.ai._run import Run, RunSettings
    from moodlemate.ai._run_hooks import RunHooks
    from moodlemate.ai._run_stream import AsyncRunStream, RunStream
    from moodlemate.ai._shared_budget import SharedBudget
    from moodlemate.ai._spend_log import SpendLog
    from moodlemate.ai._streaming import AsyncTextStream, TextStream
    from moodlemate.ai._structured import TypedCompletion
    from moodlemate.ai._tools import Tool

__all__ = ["GPT"]

log = logging.getLogger("moodlemate.ai")
log.addHandler(logging.NullHandler())
log.addFilter(RedactingFilter())

DEFAULT_CONVERSATION = "default"
DEFAULT_ATTEMPTS = 3
"""Replies a typed answer may take (the first and two re-asks)."""

T = TypeVar("T")


class _Unset:
    """The type of :data:`UNSET`: "not given", where None means "clear it"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


class GPT:
    """A chat facade over any registered provider.

    ``GPT()`` takes provider, endpoint, model and key from the environment and the config file
    (``profile`` picks one of its profiles), else defaults to OpenAI; arguments beat both.
    A key or headers given in code go to this instance's endpoint, in whatever order
    ``api_key`` and ``endpoint`` are set; keys from the environment or a config file stay
    with the endpoint they were configured for (:mod:`moodlemate.ai._credentials` has the
    table). ``app_url``/``app_title`` identify your app to providers that attribute traffic
    (OpenRouter). ``transport`` names the HTTP transport the provider uses (the OpenAI
    provider's default ``"lean"``, or ``"openai-sdk"``; also ``MOODLEMATE_TRANSPORT`` and the
    config file's ``transport``). ``api`` picks the vendor API for every call, where the
    provider speaks more than one (OpenAI: ``"chat"`` or ``"responses"``; also
    ``MOODLEMATE_API`` and the config file's ``api``); None lets the provider's model rules
    choose, and a call's ``options={"api": ...}`` beats it.
    """

    def __init__(
        self,
        provider: str | None = None,
        *,
        endpoint: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        retry: RetryPolicy | None = None,
        plugins: PluginRegistry | None = None,
        budget: Decimal | int | float | str | None = None,
        profile: str | None = None,
        headers: Mapping[str, str] | None = None,
        app_url: str | None = None,
        app_title: str | None = None,
        fallbacks: Iterable[str] | None = None,
        limits: ResponseLimits | None = None,
        log: str | PathLike[str] | SpendLog | bool | None = None,
        budget_scope: str | None = None,
        budget_window: str | None = None,
        budget_fail_open: bool | str = False,
        redis: str | None = None,
        pacing: bool | str | Mapping[str, Any] | None = None,
        transport: str | None = None,
        api: str | None = None,
    ) -> None:
        settings = resolve_settings(
            provider=provider,
            endpoint=endpoint,
            model=model,
            profile=profile,
            headers=headers,
            app_url=app_url,
            app_title=app_title,
            transport=transport,
            api=api,
        )
        self._api = settings.api
        self._plugins = plugins or registry
        self._target_lock = threading.Lock()
        self._target = target_from(settings)
        self._model = settings.model if settings.model_is_explicit else None
        if settings.provider_is_explicit or provider is not None:
            self._plugins.get(settings.provider)  # a misspelt name fails here, not at a call
        self.retry = RetryPolicy() if retry is None else retry
        self.limits = ResponseLimits() if limits is None else limits
        self.ledger = Ledger()
        self.budget = budget
        self.log = _spend_log(settings.log if log is None else log)
        """Where every call is recorded (:mod:`moodlemate.ai._spend_log`), or None."""
        redis_url = redis if redis is not None else settings.redis
        self.redis = None if redis_url is None else check_redis_url(redis_url)
        """The Redis URL shared budgets and pacing use, or None (the URL may hold a password:
        messages show it masked)."""
        from moodlemate.ai._flags import parse_flag

        self.shared_budget = _shared_budget(
            self.log,
            self.redis,
            budget_scope,
            budget_window,
            parse_flag(budget_fail_open, "budget_fail_open"),
        )
        """The budget every process shares (:mod:`moodlemate.ai._shared_budget`), or None."""
        self.pacer = _pacer(settings.pacing if pacing is None else pacing, self.redis, budget_scope)
        """Client-side rate-limit pacing (:mod:`moodlemate.ai._pacing`), or None when off."""
        self.fallbacks = settings.fallbacks if fallbacks is None else fallbacks
        self._fallback_on: tuple[type[BaseException], ...] | None = None
        self._local = threading.local()
        self._unpriced_warned: set[str] = set()
        self._conversations: dict[str, Conversation] = {}
        self._conversation_lock = threading.Lock()
        self._closed = False
        self._opened: dict[int, Provider] = {}
        """Every provider a call of this instance went through (its own, ``provider:model``
        routes, fallbacks), by identity: what :meth:`close` and :meth:`aclose` release."""
        if api_key is not None:
            self.api_key = api_key

    # -- settings ------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """Default model for calls that do not name one (context_assistant, the CLI): the
        configured one, else the provider's ``default_model``. A provider without one (a local
        server) raises ValidationError saying to name a model; assign None to go back."""
        if self._model is not None:
            return self._model
        provider = self.provider
        if provider.default_model is None:
            raise ValidationError(
                f"provider {provider.name!r} has no default model: name one "
                f"(GPT(model=...), MOODLEMATE_MODEL, the config file, or --model)"
            )
        return provider.default_model

    @model.setter
    def model(self, value: str | None) -> None:
        self._model = value

    @property
    def provider(self) -> Provider:
        """The provider calls go to: the one named, else the one that owns the endpoint."""
        return provider_for(self._target, self._plugins)

    @property
    def endpoint(self) -> str:
        """Base URL requests go to (no trailing slash): the one set, else ``OPENAI_BASE_URL``
        (for the openai provider), else the provider's default."""
        target = self._target
        return endpoint_for(target, provider_for(target, self._plugins))

    @endpoint.setter
    def endpoint(self, url: str | None) -> None:
        self.configure(endpoint=url)

    @property
    def api_key(self) -> str | None:
        """The key that calls to the current endpoint would send, or None."""
        target = self._target
        provider = provider_for(target, self._plugins)
        return key_for(target, provider, endpoint_for(target, provider))

    @api_key.setter
    def api_key(self, key: str) -> None:
        self.configure(api_key=check_key_format(key))

    def configure(
        self,
        *,
        endpoint: str | _Unset | None = UNSET,
        api_key: str | _Unset | None = UNSET,
        headers: Mapping[str, str] | _Unset | None = UNSET,
    ) -> None:
        """Change the endpoint, key and headers together: a call running meanwhile sees all
        the old values or all the new ones, never a mix (None clears a setting).

        A key set in code goes to this instance's endpoint, whatever the order of setting
        them (see :mod:`moodlemate.ai._credentials`). It is checked against the provider's key
        format as soon as the endpoint is known, here or before the first request.
        """
        changes: dict[str, object] = {}
        if not isinstance(endpoint, _Unset):
            changes["endpoint"] = None if endpoint is None else normalize_endpoint(endpoint)
            changes["endpoint_beats_env"] = True
            changes["provider_explicit"] = False  # the newest choice: its owner serves it
            changes["untrusted"] = changes["withheld"] = None  # chosen in code, not by a file
        if not isinstance(api_key, _Unset):
            changes["api_key"] = None if api_key is None else check_key_format(api_key)
        if not isinstance(headers, _Unset):
            changes["headers"] = MappingProxyType(dict(check_headers(headers or {})))
            changes["headers_scope"] = None
        with self._target_lock:
            target = replace(self._target, **changes)  # type: ignore[arg-type]
            check_assigned_key(target, self._plugins)
            self._target = target
        if target.api_key is not None:
            # Known to redaction from now on (a refused key never is: a fragment such as
            # "sk-or-" would mask that prefix in every later message).
            register_secret(target.api_key)

    @property
    def api(self) -> str | None:
        """The vendor API every call goes through (``"chat"``, ``"responses"``) where the
        provider speaks more than one; None (the default): the provider's model rules choose
        (OpenAI: Responses-only models to ``/v1/responses``, the others to chat completions).
        A call's ``options={"api": ...}`` (or ``ChatRequest.api``) beats it."""
        return self._api

    @api.setter
    def api(self, value: str | None) -> None:
        from moodlemate.ai._options import check_api

        self._api = check_api(value)

    @property
    def budget(self) -> Decimal | None:
        """Cost ceiling in USD: a call whose worst-case cost, with those of the calls in flight,
        would take ``ledger.cost`` past it raises BudgetExceededError before sending. None (the
        default) means no ceiling. See :mod:`moodlemate.ai._budget`."""
        return self._budget

    @budget.setter
    def budget(self, value: Decimal | int | float | str | None) -> None:
        self._budget = to_budget(value)

    @property
    def fallbacks(self) -> tuple[str, ...]:
        """Models tried in order when a call's own model is out (``provider:model`` routes
        included, each with its own key rules); see :mod:`moodlemate.ai._fallbacks`."""
        return self._fallbacks

    @fallbacks.setter
    def fallbacks(self, models: Iterable[str] | None) -> None:
        if models is None or models == () or models == []:  # GPT() imports nothing more
            self._fallbacks: tuple[str, ...] = ()
            return
        from moodlemate.ai._fallbacks import check_fallbacks

        self._fallbacks = check_fallbacks(models)

    @property
    def fallback_on(self) -> tuple[type[BaseException], ...] | None:
        """Errors that, ending an entry's retries, move a call to the next fallback; None:
        :data:`~moodlemate.ai._fallbacks.OUTAGES` (quota and context-window rules apply
        besides, see :mod:`moodlemate.ai._fallbacks`)."""
        return self._fallback_on

    @fallback_on.setter
    def fallback_on(
        self, errors: type[BaseException] | Iterable[type[BaseException]] | None
    ) -> None:
        from moodlemate.ai._fallbacks import check_fallback_on

        self._fallback_on = check_fallback_on(errors)

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy every call of this instance runs under (replace it to change it)."""
        return self._retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        if not isinstance(policy, RetryPolicy):
            raise ValidationError(f"retry must be a RetryPolicy, not {type(policy).__name__}")
        self._retry = policy

    @property
    def limits(self) -> ResponseLimits:
        """How large a response may be (see :class:`~moodlemate.ai._bounds.ResponseLimits`)."""
        return self._limits

    @limits.setter
    def limits(self, limits: ResponseLimits) -> None:
        if not isinstance(limits, ResponseLimits):
            raise ValidationError(f"limits must be ResponseLimits, not {type(limits).__name__}")
        self._limits = limits

    @property
    def last_result(self) -> Completion | None:
        """The full result of this thread's last successful call on this instance."""
        result: Completion | None = getattr(self._local, "last", None)
        return result

    def __repr__(self) -> str:
        target = self._target
        try:
            name = provider_for(target, self._plugins).name
            key = self.api_key
        except MoodlemateError:  # a repr never raises: show what was set
            name, key = target.provider, target.api_key
        return f"GPT(provider={name!r}, endpoint={target.endpoint!r}, api_key={mask(key)})"

    # -- the seed contract ---------------------------------------------------------------

    def chat_completion(
        self,
        model: str,
        system_message: str,
        user_message: str,
        temperature: float = 0.7,
        max_tokens: int | None = None,
    ) -> str:
        """Send one system + user turn and return the reply text.

        A reply with no text raises instead of returning ``""`` (unless the server said it
        stopped normally): RefusalError for a refusal, EmptyReplyError otherwise (e.g. a
        reasoning model that spent ``max_tokens`` on reasoning). Both carry the Completion."""
        completion = self.complete(model, system_message, user_message, temperature, max_tokens)
        return reply_text(completion, max_tokens)

    def count_tokens(self, text: str, model: str = "gpt-4o-mini") -> int:
        """Tokens ``text`` encodes to for ``model``, counted locally (no request)."""
        check_text(text, "text")
        provider, name = self.route(model)
        return provider.count_tokens(text, name)

    def context_assistant(self, prompt: str) -> str:
        """Answer ``prompt`` in the instance's default conversation, which remembers earlier
        turns (trimmed to the model's context window); see :meth:`conversation`."""
        return self.conversation().ask(prompt)

    # -- beyond the seed -----------------------------------------------------------------

    def check_connection(self, model: str | None = None) -> None:
        """Raise what a call to ``model`` (default: :attr:`model`) would raise before sending
        for want of a provider or key (UnknownProviderError, MissingAPIKeyError,
        InvalidAPIKeyError); sends nothing. A batch checks this once before its first request."""
        self.provider_connection(model)

    def route(self, model: str | None = None) -> tuple[Provider, str]:
        """The provider that serves ``model`` (default: :attr:`model`) and the model name it
        gets: the provider a ``provider:`` prefix names (the prefix removed), else this
        instance's. Every call, count and listing asks this one question."""
        routed, name = split_provider(
            check_model(self.model if model is None else model), self._plugins
        )
        return routed or self.provider, name

    def provider_connection(self, model: str | None = None) -> tuple[Provider, Connection, str]:
        """The provider, :class:`Connection` (endpoint, scoped key, headers) and model name
        (``provider:`` prefix removed) a call to ``model`` would use, from the credentials
        rules; for code that drives a provider directly, such as a remote batch. Raises as
        :meth:`check_connection` does."""
        routed, name = split_provider(
            check_model(self.model if model is None else model), self._plugins
        )
        self._check_open()
        provider, connection = self._connect(self._target, routed)
        return provider, connection, name

    def model_info(self, model: str | None = None) -> ModelInfo | None:
        """What the provider knows of ``model`` (default: :attr:`model`) at this instance's
        endpoint: price, window, output limit; None when nothing."""
        routed, name = split_provider(
            check_model(self.model if model is None else model), self._plugins
        )
        provider, endpoint = endpoint_of(self._target, self._plugins, routed)
        return provider.model_info(name, endpoint)

    def context_window(self, model: str | None = None) -> int | None:
        """``model``'s context window in tokens (default: :attr:`model`): the provider's
        tables, else what the server at this endpoint reports about it (a local server's
        ``/v1/models``, asked once and remembered), else None."""
        routed, name = split_provider(
            check_model(self.model if model is None else model), self._plugins
        )
        info = self.model_info(model)
        if info is not None and info.context_window:
            return info.context_window
        provider, connection = self._connect(self._target, routed)
        return provider.served_context_window(connection, name)

    def count_chat_tokens(
        self, system_message: str, user_message: str, model: str = "gpt-4o-mini"
    ) -> int:
        """Prompt tokens that ``chat_completion`` with these messages would be billed for,
        counted locally. See :meth:`count_message_tokens` to learn whether it is an estimate."""
        request = build_chat_request(model, system_message, user_message, 1, None)
        provider, name = self.route(request.model)
        return provider.count_message_tokens(wire_messages(request.messages), name).tokens

    def count_message_tokens(
        self,
        messages: Iterable[Message | Mapping[str, Any]],
        model: str = "gpt-4o-mini",
        *,
        tools: Iterable[Mapping[str, Any]] | None = None,
    ) -> TokenCount:
        """Prompt tokens of a whole conversation (Message values or OpenAI-shaped dicts: text,
        parts, tool turns) and of the ``tools`` it would be sent with, with ``estimate`` set
        when the model's tokenizer, chat format or a part's cost is not known exactly."""
        messages = list(messages)
        provider, name = self.route(model)
        if tools is None and all(
            isinstance(m, Mapping) and all(isinstance(v, str) for v in m.values()) for m in messages
        ):
            return provider.count_message_tokens(check_messages(messages), name)
        request = check_request(
            ChatRequest(
                name,
                messages_from(messages),
                options=options_from({"tools": list(tools or ())}),
            )
        )
        provider.check_input(request)
        return count_request(provider, request)

    @overload
    def complete(
        self,
        model: str,
        system_message: str = "",
        user_message: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        *,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        schema: None = None,
        max_attempts: int = DEFAULT_ATTEMPTS,
    ) -> Completion: ...

    @overload
    def complete(
        self,
        model: str,
        system_message: str = "",
        user_message: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        *,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        schema: Any,
        max_attempts: int = DEFAULT_ATTEMPTS,
    ) -> TypedCompletion[Any]: ...

    def complete(
        self,
        model: str,
        system_message: str = "",
        user_message: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        *,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        schema: Any = None,
        max_attempts: int = DEFAULT_ATTEMPTS,
    ) -> Completion | TypedCompletion[Any]:
        """Like :meth:`chat_completion`, but returns the full :class:`Completion`.

        ``messages`` (Message values or OpenAI-shaped dicts: parts, tool turns) go between
        the system message and ``user_message``; ``options`` are the named request options
        (:class:`Options`); ``extra`` fields are sent as they are. See docs/messages.md.
        With ``schema``, a :class:`TypedCompletion` whose ``parsed`` is the checked answer
        (see :meth:`parse`)."""
        request = build_request(
            model,
            system_message,
            user_message,
            temperature,
            max_tokens,
            messages=messages,
            options=options,
            extra=extra,
        )
        if schema is not None:
            from moodlemate.ai._answer_schema import answer_schema
            from moodlemate.ai._structured import run_typed

            return run_typed(self, request, answer_schema(schema), max_attempts)
        if self._fallbacks:
            return self.send(request)
        completion = self.prepare(request, checked=True).send()
        self._local.last = completion
        return completion

    def parse(
        self,
        model: str,
        system_message: str,
        user_message: str | None,
        schema: type[T] | Any,
        *,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        max_attempts: int = DEFAULT_ATTEMPTS,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> T:
        """The model's answer as an instance of ``schema`` (a pydantic model, dataclass,
        TypedDict, type hint, or a JSON schema dict for plain JSON). The schema is sent in the
        strictest form the model takes; a reply that does not validate is answered with its
        problems and asked again, up to ``max_attempts`` replies (each billed and logged) within
        one deadline. Raises StructuredOutputError when none validates, RefusalError on a
        refusal and TruncatedAnswerError when ``max_tokens`` cut the answer short."""
        result = self.complete(
            model,
            system_message,
            user_message,
            temperature,
            max_tokens,
            messages=messages,
            options=options,
            extra=extra,
            schema=schema,
            max_attempts=max_attempts,
        )
        parsed: T = result.parsed
        return parsed

    async def aparse(
        self,
        model: str,
        system_message: str,
        user_message: str | None,
        schema: type[T] | Any,
        *,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        max_attempts: int = DEFAULT_ATTEMPTS,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> T:
        """Async :meth:`parse`."""
        from moodlemate.ai._answer_schema import answer_schema
        from moodlemate.ai._structured import arun_typed

        request = build_request(
            model,
            system_message,
            user_message,
            temperature,
            max_tokens,
            messages=messages,
            options=options,
            extra=extra,
        )
        result = await arun_typed(self, request, answer_schema(schema), max_attempts)
        parsed: T = result.parsed
        return parsed

    def run(
        self,
        model: str,
        prompt: str | None = None,
        *,
        tools: Iterable[object],
        system_message: str = "",
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        max_turns: int = 8,
        budget: Decimal | int | float | str | None = None,
        deadline: float | None = None,
        tool_timeout: float = 60.0,
        tool_choice: str | Mapping[str, Any] | None = None,
        stop_after: str | Iterable[str] = (),
        before_tool_call: Callable[..., Any] | None = None,
        raise_tool_errors: bool = False,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Run:
        """Ask ``model`` with ``tools`` (plain functions, :class:`Tool` values, or
        ``(definition, function)`` pairs) and run the tools it calls until it answers.

        Each model turn is a normal call (retried, priced, logged, within the instance's
        budget); the run as a whole is held to ``max_turns`` turns, a ``budget`` in USD
        (checked before each turn against its worst case) and a ``deadline`` in seconds
        (default: the retry policy's), tool time included. Tools of one turn run at once, each
        within ``tool_timeout``. The model's arguments are checked against each tool's schema
        before it runs; bad arguments, unknown tools and exceptions are told to the model (its
        text redacted) unless ``raise_tool_errors``. ``before_tool_call(call, tool)`` approves
        a call (True) or refuses it (False, or the reason). Returns a :class:`Run`; a bound
        reached raises a RunLimitError carrying the run so far. See docs/tools.md."""
        from moodlemate.ai._run import run_tools

        request, found, settings = self._run_parts(
            model, prompt, tools, system_message, messages, temperature, max_tokens, options,
            extra, max_turns, budget, deadline, tool_timeout, tool_choice, stop_after,
            before_tool_call, raise_tool_errors,
        )  # fmt: skip
        return run_tools(self, request, found, settings)

    async def arun(
        self,
        model: str,
        prompt: str | None = None,
        *,
        tools: Iterable[object],
        system_message: str = "",
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        max_turns: int = 8,
        budget: Decimal | int | float | str | None = None,
        deadline: float | None = None,
        tool_timeout: float = 60.0,
        tool_choice: str | Mapping[str, Any] | None = None,
        stop_after: str | Iterable[str] = (),
        before_tool_call: Callable[..., Any] | None = None,
        raise_tool_errors: bool = False,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Run:
        """Async :meth:`run`: async tools run as tasks on the caller's loop (cancelling the
        run cancels them), sync ones in threads; ``before_tool_call`` may be async."""
        from moodlemate.ai._run import arun_tools

        request, found, settings = self._run_parts(
            model, prompt, tools, system_message, messages, temperature, max_tokens, options,
            extra, max_turns, budget, deadline, tool_timeout, tool_choice, stop_after,
            before_tool_call, raise_tool_errors,
        )  # fmt: skip
        return await arun_tools(self, request, found, settings)

    def run_stream(
        self,
        model: str,
        prompt: str | None = None,
        *,
        tools: Iterable[object],
        system_message: str = "",
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        max_turns: int = 8,
        budget: Decimal | int | float | str | None = None,
        deadline: float | None = None,
        tool_timeout: float = 60.0,
        tool_choice: str | Mapping[str, Any] | None = None,
        stop_after: str | Iterable[str] = (),
        before_tool_call: Callable[..., Any] | None = None,
        raise_tool_errors: bool = False,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> RunStream:
        """:meth:`run`, each model turn streamed: an iterator of events as they happen (text
        deltas, tool calls requested, started and finished, each turn finished with its cost),
        the :class:`Run` as ``.run`` once it ends. Same arguments, bounds and errors as
        :meth:`run`; checked here, sent on the first ``next()``. Use it in a ``with`` block:
        leaving early closes the turn's stream and ends the tools running."""
        from moodlemate.ai._run import RunLoop
        from moodlemate.ai._run_stream import RunStream

        request, found, settings = self._run_parts(
            model, prompt, tools, system_message, messages, temperature, max_tokens, options,
            extra, max_turns, budget, deadline, tool_timeout, tool_choice, stop_after,
            before_tool_call, raise_tool_errors,
        )  # fmt: skip
        return RunStream(RunLoop(self, request, found, settings))

    def arun_stream(
        self,
        model: str,
        prompt: str | None = None,
        *,
        tools: Iterable[object],
        system_message: str = "",
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        max_turns: int = 8,
        budget: Decimal | int | float | str | None = None,
        deadline: float | None = None,
        tool_timeout: float = 60.0,
        tool_choice: str | Mapping[str, Any] | None = None,
        stop_after: str | Iterable[str] = (),
        before_tool_call: Callable[..., Any] | None = None,
        raise_tool_errors: bool = False,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncRunStream:
        """Async :meth:`run_stream`: ``async for event in gpt.arun_stream(...)`` (async tools
        as tasks on the caller's loop, cancelled with it; ``before_tool_call`` may be async)."""
        from moodlemate.ai._run import RunLoop
        from moodlemate.ai._run_stream import AsyncRunStream

        request, found, settings = self._run_parts(
            model, prompt, tools, system_message, messages, temperature, max_tokens, options,
            extra, max_turns, budget, deadline, tool_timeout, tool_choice, stop_after,
            before_tool_call, raise_tool_errors,
        )  # fmt: skip
        return AsyncRunStream(RunLoop(self, request, found, settings))

    def _run_parts(
        self,
        model: str,
        prompt: str | None,
        tools: Iterable[object],
        system_message: str,
        messages: Iterable[Message | Mapping[str, Any]] | None,
        temperature: float,
        max_tokens: int | None,
        options: Options | Mapping[str, Any] | None,
        extra: Mapping[str, Any] | None,
        max_turns: int,
        budget: Decimal | int | float | str | None,
        deadline: float | None,
        tool_timeout: float,
        tool_choice: str | Mapping[str, Any] | None,
        stop_after: str | Iterable[str],
        before_tool_call: Callable[..., Any] | None,
        raise_tool_errors: bool,
    ) -> tuple[ChatRequest, dict[str, Tool], RunSettings]:
        from moodlemate.ai._run import RunSettings
        from moodlemate.ai._tools import tool_set

        if isinstance(tools, str | bytes) or not isinstance(tools, Iterable):
            raise ValidationError("tools must be a list of functions or Tool values")
        found = tool_set(tools)
        settings = RunSettings(
            max_turns=max_turns,
            budget=to_budget(budget),
            deadline=deadline,
            tool_timeout=tool_timeout,
            tool_choice=tool_choice,
            stop_after=(stop_after,) if isinstance(stop_after, str) else tuple(stop_after),
            before_tool_call=before_tool_call,
            raise_tool_errors=bool(raise_tool_errors),
        )
        request = build_request(
            model,
            system_message,
            prompt,
            temperature,
            max_tokens,
            messages=messages if messages is not None else (),
            options=options,
            extra=extra,
        )
        return request, found, settings

    def send(self, request: ChatRequest, *, run_turn: RunTurn | None = None) -> Completion:
        """Send a prepared request under the retry policy and record it in the ledger
        (``run_turn``: the tool run's turn this call is, for the spend log)."""
        if self._fallbacks:
            completion = self._chain(request, run_turn).send(Call.send_unhooked)
        else:
            completion = evolved(self.prepare(request), run_turn=run_turn).send()
        self._local.last = completion
        return completion

    def prepare(
        self, request: ChatRequest, *, checked: bool = False, target: Target | None = None
    ) -> Call:
        """The :class:`~moodlemate.ai._call.Call` that sends ``request``: routed, with this
        instance's credentials, policy and accounts as they are now, and its context window
        checked (the budget is reserved when it is sent). Every path (sync, async, stream,
        each fallback entry) runs one. ``target``: a destination pinned earlier (a tool run
        sends every turn where its first went), instead of the instance's current one."""
        self._check_open()
        if not checked:
            request = check_request(request)
        routed, model = split_provider(request.model, self._plugins)
        if model != request.model:
            request = evolved(request, model=model)
        request = with_api(request, self._api)
        provider, connection = self._connect(target or self._target, routed)
        provider.check_input(request)
        check_context_window(provider, request, connection.endpoint)
        return Call(
            provider=provider,
            connection=connection,
            request=request,
            policy=self._retry,
            limits=self._limits,
            accounts=self._accounts,
            hooks=self._plugins.call_hooks(),
        )

    @overload
    def stream(
        self,
        model: str,
        system_message: str = "",
        user_message: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        *,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        schema: None = None,
    ) -> TextStream: ...

    @overload
    def stream(
        self,
        model: str,
        system_message: str = "",
        user_message: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        *,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        schema: Any,
    ) -> AnswerStream[Any]: ...

    def stream(
        self,
        model: str,
        system_message: str = "",
        user_message: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        *,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        schema: Any = None,
    ) -> TextStream | AnswerStream[Any]:
        """Like :meth:`chat_completion`, but an iterator of text deltas; the full Completion is
        ``.completion`` (and :attr:`last_result`) once it ends. Sent on the first ``next()``.
        ``messages``, ``options`` and ``extra`` as in :meth:`complete`.

        With ``schema``, an iterator of the answer as far as it has arrived (the fields that
        are complete), the last item being the checked answer, also ``.parsed``."""
        request = build_request(
            model,
            system_message,
            user_message,
            temperature,
            max_tokens,
            messages=messages,
            options=options,
            extra=extra,
        )
        if schema is not None:
            from moodlemate.ai._answer_schema import answer_schema
            from moodlemate.ai._answer_stream import AnswerStream
            from moodlemate.ai._structured import typed_request

            answer = answer_schema(schema)
            return AnswerStream(self.stream_request(typed_request(self, request, answer)), answer)
        return self.stream_request(request)

    def stream_request(self, request: ChatRequest) -> TextStream:
        """Stream a prepared request (see :mod:`moodlemate.ai._streaming` for the guarantees)."""
        from moodlemate.ai._streaming import TextStream

        if self._fallbacks:
            from moodlemate.ai._fallback_streams import FallbackStream

            return FallbackStream(self._chain(evolved(request, stream=True)), self._remember)
        return TextStream(self.prepare(evolved(request, stream=True)), self._remember)

    def conversation(
        self,
        name: str = DEFAULT_CONVERSATION,
        *,
        system_message: str | None = None,
        model: str | None = None,
        tools: Iterable[object] | None = None,
    ) -> Conversation:
        """The named conversation of this instance, created on first use; ``"default"`` is
        the one :meth:`context_assistant` uses. Settings given here are applied to it:
        ``tools`` (functions, :class:`Tool` values) make each of its turns a tool run, so
        ``gpt.conversation(tools=[f])`` lets :meth:`context_assistant` call ``f``; ``()``
        takes them away."""
        from moodlemate.ai._conversation import Conversation

        if not check_text(name, "name"):
            raise ValidationError("conversation name must not be empty")
        with self._conversation_lock:
            conversation = self._conversations.get(name)
            if conversation is None:
                conversation = self._conversations[name] = Conversation(self, name)
        if system_message is not None:
            conversation.system_message = system_message
        if model is not None:
            conversation.model = model
        if tools is not None:
            conversation.tools = tools
        return conversation

    # -- async twins: same validation, retry policy, ledger and settings -----------------

    async def achat_completion(
        self,
        model: str,
        system_message: str,
        user_message: str,
        temperature: float = 0.7,
        max_tokens: int | None = None,
    ) -> str:
        """Async :meth:`chat_completion`."""
        completion = await self.acomplete(
            model, system_message, user_message, temperature, max_tokens
        )
        return reply_text(completion, max_tokens)

    async def acomplete(
        self,
        model: str,
        system_message: str = "",
        user_message: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        *,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        """Async :meth:`complete`."""
        request = build_request(
            model,
            system_message,
            user_message,
            temperature,
            max_tokens,
            messages=messages,
            options=options,
            extra=extra,
        )
        if self._fallbacks:
            return await self.asend(request)
        return await self.prepare(request, checked=True).asend()

    async def asend(self, request: ChatRequest, *, run_turn: RunTurn | None = None) -> Completion:
        """Async :meth:`send`. Does not set :attr:`last_result` (tasks share a thread): use
        the returned Completion."""
        if self._fallbacks:
            return await self._chain(request, run_turn).asend(Call.asend_unhooked)
        return await evolved(self.prepare(request), run_turn=run_turn).asend()

    async def acount_tokens(self, text: str, model: str = "gpt-4o-mini") -> int:
        """Async :meth:`count_tokens` (local and fast, so it runs inline)."""
        return self.count_tokens(text, model)

    async def acontext_assistant(self, prompt: str) -> str:
        """Async :meth:`context_assistant`."""
        return await self.conversation().aask(prompt)

    @overload
    def astream(
        self,
        model: str,
        system_message: str = "",
        user_message: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        *,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        schema: None = None,
    ) -> AsyncTextStream: ...

    @overload
    def astream(
        self,
        model: str,
        system_message: str = "",
        user_message: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        *,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        schema: Any,
    ) -> AsyncAnswerStream[Any]: ...

    def astream(
        self,
        model: str,
        system_message: str = "",
        user_message: str | None = None,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        *,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        schema: Any = None,
    ) -> AsyncTextStream | AsyncAnswerStream[Any]:
        """Async :meth:`stream`: ``async for delta in gpt.astream(...)``; with ``schema``,
        ``async for partial in ...``, the last item being the checked answer (``.parsed``)."""
        request = build_request(
            model,
            system_message,
            user_message,
            temperature,
            max_tokens,
            messages=messages,
            options=options,
            extra=extra,
        )
        if schema is not None:
            from moodlemate.ai._answer_schema import answer_schema
            from moodlemate.ai._answer_stream import AsyncAnswerStream
            from moodlemate.ai._structured import typed_request

            answer = answer_schema(schema)
            stream = self.astream_request(typed_request(self, request, answer))
            return AsyncAnswerStream(stream, answer)
        return self.astream_request(request)

    def astream_request(self, request: ChatRequest) -> AsyncTextStream:
        """Async :meth:`stream_request`."""
        from moodlemate.ai._streaming import AsyncTextStream

        if self._fallbacks:
            from moodlemate.ai._fallback_streams import AsyncFallbackStream

            return AsyncFallbackStream(self._chain(evolved(request, stream=True)), self._remember)
        return AsyncTextStream(self.prepare(evolved(request, stream=True)), self._remember)

    async def aclose(self) -> None:
        """Close the async connections bound to the running event loop of every provider this
        instance used (call before the loop ends to release them promptly). The instance
        stays usable: a GPT shared by several event loops closes each loop's connections
        this way; ``async with`` (or :meth:`close`) is what ends it."""
        for provider in self._providers():
            await provider.aclose()

    def close(self) -> None:
        """Release the provider's pooled connections that no call is using, and refuse every
        later call with :class:`ClientClosedError` before anything is sent, as a closed
        ``httpx.Client`` or ``openai.OpenAI`` refuses (a call after ``close`` is a bug to
        show, not a reason to open new connections). Idempotent, and safe from any thread:
        a call already in flight keeps its connection and ends as it would have (cutting it
        could make a retry send the request twice). The pools are shared by every GPT of
        the process: the others open new connections when they need them. Every provider
        the instance used is released: its own, and those its ``provider:model`` routes and
        fallbacks reached."""
        self._closed = True
        for provider in self._providers():
            provider.close()

    def __enter__(self) -> GPT:
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> GPT:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """The running loop's connections (:meth:`aclose`), then what :meth:`close` does:
        the idle sync connections are released and later calls refused."""
        self._closed = True  # no call of another task starts while the loop's pools close
        try:
            await self.aclose()
        finally:
            self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this GPT was closed and sends nothing more; make a new one")

    # -- internals -----------------------------------------------------------------------

    def _connect(self, target: Target, routed: Provider | None) -> tuple[Provider, Connection]:
        """:func:`connect`, remembering the provider for :meth:`close`."""
        provider, connection = connect(target, self._plugins, routed)
        self._opened.setdefault(id(provider), provider)  # one dict operation: thread-safe
        return provider, connection

    def _providers(self) -> list[Provider]:
        """The providers to release: every one a call went through, and the instance's own
        (a call may have picked it up through another path, such as a remote batch's)."""
        providers = list(self._opened.copy().values())
        try:
            own = self.provider
        except ConfigurationError:
            return providers  # no provider of its own (its calls would have raised the same)
        return providers if any(p is own for p in providers) else [own, *providers]

    @property
    def _accounts(self) -> Accounts:
        return Accounts(
            ledger=self.ledger,
            budget=self._budget,
            shared=self.shared_budget,
            log=self.log,
            unpriced=self._unpriced_warned,
            pacer=self.pacer,
        )

    def _chain(
        self,
        request: ChatRequest,
        run_turn: RunTurn | None = None,
        target: Target | None = None,
    ) -> FallbackChain:
        from moodlemate.ai._fallbacks import FallbackChain

        def prepare(entry: ChatRequest) -> Call:
            call = self.prepare(entry, target=target)
            return call if run_turn is None else evolved(call, run_turn=run_turn)

        return FallbackChain(
            request,
            self._fallbacks,
            prepare=prepare,
            route=lambda model: self._route(model, target)[0],
            hooks=self._plugins.call_hooks(),
            on=self.fallback_on,
        )

    def _pinned(self) -> Target:
        """Where calls go now (endpoint, keys, headers): a tool run keeps it for every turn."""
        return self._target

    def _route(self, model: str, target: Target | None = None) -> tuple[Provider, str]:
        """:meth:`route` for ``target`` (default: the instance's current one)."""
        routed, name = split_provider(check_model(model), self._plugins)
        return routed or provider_for(target or self._target, self._plugins), name

    def _endpoint(self, model: str, target: Target) -> str:
        """The endpoint a call to ``model`` would go to under ``target``."""
        routed, _ = split_provider(check_model(model), self._plugins)
        return endpoint_of(target, self._plugins, routed)[1]

    def _remember(self, completion: Completion) -> None:
        self._local.last = completion

    def _run_hooks(self) -> RunHooks | None:
        """The tool-run hooks of this instance's plugins (None when none implements them)."""
        from moodlemate.ai._run_hooks import RunHooks

        return RunHooks.of(self._plugins.plugin_manager)


def _spend_log(value: str | PathLike[str] | SpendLog | bool | None) -> SpendLog | None:
    """The instance's spend log: a path opens one (lazily: sqlite3 loads on the first call),
    False or None means none."""
    if value is None or value is False:
        return None
    from moodlemate.ai._spend_log import SpendLog

    if isinstance(value, SpendLog):
        return value
    if value is True or not isinstance(value, str | PathLike) or not str(value):
        raise ValidationError(f"log must be a path, a SpendLog or None, not {value!r}")
    return SpendLog(value)


def _shared_budget(
    store: SpendLog | None,
    redis: str | None,
    scope: str | None,
    window: str | None,
    fail_open: bool,
) -> SharedBudget | None:
    if scope is None:
        if window is not None:
            raise ValidationError("budget_window needs a budget_scope")
        return None
    from moodlemate.ai._shared_budget import SharedBudget

    if redis is not None:
        from moodlemate.ai._redis_budget import RedisBudgetStore

        return SharedBudget(RedisBudgetStore(redis), scope, window, fail_open=fail_open)
    if store is None:
        raise ValidationError(
            "budget_scope needs a store: a log (one machine) or redis (many machines)"
        )
    return SharedBudget(store, scope, window, fail_open=fail_open)


def _pacer(value: object, redis: str | None, scope: str | None) -> Pacer | None:
    """The instance's pacer: on when asked for (True, or a table of models' limits), and by
    default when Redis is set; off (None) otherwise."""
    if value is None:
        value = redis is not None
    if isinstance(value, str):
        from moodlemate.ai._flags import parse_flag

        value = parse_flag(value, "pacing")
    if value is False:
        return None
    from moodlemate.ai._pacing import Pacer, pace_limits

    configured = None if value is True else pace_limits(value)
    return Pacer(configured, redis=redis, scope=scope or "default")
