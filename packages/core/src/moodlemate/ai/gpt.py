"""The GPT facade: settings, provider choice, the retry policy and accounting, nothing vendor.

Each call validates its arguments, picks the provider, sends through the shared
:class:`~moodlemate.ai.retry.RetryPolicy` and records usage and cost in the instance's
:class:`~moodlemate.ai.ledger.Ledger`. Providers come from plugins and are resolved on first
use, so constructing a GPT imports no vendor SDK.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING

from moodlemate.ai.bounds import ResponseLimits
from moodlemate.ai.budget import reserve, to_budget
from moodlemate.ai.config import normalize_endpoint, origin, resolve_settings
from moodlemate.ai.context_window import check_context_window
from moodlemate.ai.errors import InvalidAPIKeyError, MissingAPIKeyError, ValidationError
from moodlemate.ai.ledger import Ledger, Reservation
from moodlemate.ai.plugins import PluginRegistry, registry
from moodlemate.ai.provider import ChatRequest, Completion, Connection, Provider
from moodlemate.ai.retry import RetryPolicy
from moodlemate.ai.routing import split_provider
from moodlemate.ai.secrets import RedactingFilter, mask, register_secret
from moodlemate.ai.token_count import TokenCount, check_messages, wire_messages
from moodlemate.ai.validation import build_chat_request, check_model, check_request, check_text

if TYPE_CHECKING:
    from moodlemate.ai.conversation import Conversation
    from moodlemate.ai.streaming import AsyncTextStream, StreamCall, TextStream

__all__ = ["GPT"]

log = logging.getLogger("moodlemate.ai")
log.addHandler(logging.NullHandler())
log.addFilter(RedactingFilter())

DEFAULT_SYSTEM_MESSAGE = "You are a helpful assistant."
DEFAULT_CONVERSATION = "default"


class GPT:
    """A chat facade over any registered provider.

    ``GPT()`` takes provider, endpoint, model and key from the environment and the config file
    (``profile`` picks one of its profiles), else defaults to OpenAI; arguments beat both.
    A key is scoped to the endpoint it was set for: after changing ``endpoint`` to another
    host, set ``api_key`` again (or pass both to the constructor). ``headers`` go only to the
    configured endpoint; ``app_url``/``app_title`` identify your app to providers that
    attribute traffic (OpenRouter).
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
        limits: ResponseLimits | None = None,
    ) -> None:
        settings = resolve_settings(
            provider=provider,
            endpoint=endpoint,
            model=model,
            profile=profile,
            headers=headers,
            app_url=app_url,
            app_title=app_title,
        )
        self._plugins = plugins or registry
        self._provider_name = settings.provider
        self._provider_explicit = settings.provider_is_explicit
        self._endpoint: str | None = settings.endpoint
        self._key: str | None = None
        self._key_is_fallback = False
        self._key_origin: str | None = None
        self.model = settings.model
        """Default model for calls that do not name one (context_assistant, the CLI)."""
        self.retry = RetryPolicy() if retry is None else retry
        self.limits = ResponseLimits() if limits is None else limits
        self.ledger = Ledger()
        self.budget = budget
        self._local = threading.local()
        self._unpriced_warned: set[str] = set()
        self._conversations: dict[str, Conversation] = {}
        self._conversation_lock = threading.Lock()
        self._headers = settings.headers
        self._headers_endpoint = settings.endpoint
        self._app_url = settings.app_url
        self._app_title = settings.app_title
        key = api_key if api_key is not None else settings.api_key
        if key is not None:
            self.api_key = key
        self._key_is_fallback = api_key is None and settings.api_key_is_literal

    # -- settings ------------------------------------------------------------------------

    @property
    def provider(self) -> Provider:
        """The provider calls go to: the one named, else the one that owns the endpoint."""
        if not self._provider_explicit and self._endpoint is not None:
            owner = self._plugins.for_endpoint(self._endpoint)
            if owner is not None:
                return owner
        return self._plugins.get(self._provider_name)

    @property
    def endpoint(self) -> str:
        """Base URL requests go to (no trailing slash); the provider's default unless set."""
        return self._endpoint or self.provider.default_endpoint

    @endpoint.setter
    def endpoint(self, url: str | None) -> None:
        self._endpoint = None if url is None else normalize_endpoint(url)
        self._provider_explicit = False  # the newest choice: its owner, if any, serves it

    @property
    def api_key(self) -> str | None:
        """The key that calls to the current endpoint would send, or None."""
        return self._key_for(self.provider, self.endpoint)

    @api_key.setter
    def api_key(self, key: str) -> None:
        if not isinstance(key, str):
            raise InvalidAPIKeyError(f"api_key must be a string, not {type(key).__name__}")
        if not key:
            raise InvalidAPIKeyError("api_key must not be empty")
        endpoint = self.endpoint
        _check_key(key, self.provider, endpoint)
        self._key = key
        self._key_origin = origin(endpoint)
        self._key_is_fallback = False

    @property
    def budget(self) -> Decimal | None:
        """Cost ceiling in USD: a call whose worst-case cost, with those of the calls in flight,
        would take ``ledger.cost`` past it raises BudgetExceededError before sending. None (the
        default) means no ceiling. See :mod:`moodlemate.ai.budget`."""
        return self._budget

    @budget.setter
    def budget(self, value: Decimal | int | float | str | None) -> None:
        self._budget = to_budget(value)

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
        """How large a response may be (see :class:`~moodlemate.ai.bounds.ResponseLimits`)."""
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
        name = self._provider_name
        if not self._provider_explicit and self._endpoint is not None:
            # The endpoint's owner serves the calls (see ``provider``); show that one.
            owner = self._plugins.for_endpoint(self._endpoint)
            name = owner.name if owner is not None else name
        return f"GPT(provider={name!r}, endpoint={self._endpoint!r}, api_key={mask(self._key)})"

    # -- the seed contract ---------------------------------------------------------------

    def chat_completion(
        self,
        model: str,
        system_message: str,
        user_message: str,
        temperature: float = 0.7,
        max_tokens: int | None = None,
    ) -> str:
        """Send one system + user turn and return the reply text."""
        return self.complete(model, system_message, user_message, temperature, max_tokens).text

    def count_tokens(self, text: str, model: str = "gpt-4o-mini") -> int:
        """Tokens ``text`` encodes to for ``model``, counted locally (no request)."""
        check_text(text, "text")
        provider, name = self._route(check_model(model))
        return provider.count_tokens(text, name)

    def context_assistant(self, prompt: str) -> str:
        """Answer ``prompt`` in the instance's default conversation, which remembers earlier
        turns (trimmed to the model's context window); see :meth:`conversation`."""
        return self.conversation().ask(prompt)

    # -- beyond the seed -----------------------------------------------------------------

    def count_chat_tokens(
        self, system_message: str, user_message: str, model: str = "gpt-4o-mini"
    ) -> int:
        """Prompt tokens that ``chat_completion`` with these messages would be billed for,
        counted locally. See :meth:`count_message_tokens` to learn whether it is an estimate."""
        request = build_chat_request(model, system_message, user_message, 1, None)
        return self.provider.count_message_tokens(
            wire_messages(request.messages), request.model
        ).tokens

    def count_message_tokens(
        self, messages: Iterable[Mapping[str, str]], model: str = "gpt-4o-mini"
    ) -> TokenCount:
        """Prompt tokens of a whole conversation (dicts with role, content and optional name),
        with ``estimate`` set when the model's tokenizer or chat format is not known exactly."""
        checked = check_messages(messages)
        return self.provider.count_message_tokens(checked, check_model(model))

    def complete(
        self,
        model: str,
        system_message: str,
        user_message: str,
        temperature: float = 0.7,
        max_tokens: int | None = None,
    ) -> Completion:
        """Like :meth:`chat_completion`, but returns the full :class:`Completion`."""
        request = build_chat_request(model, system_message, user_message, temperature, max_tokens)
        return self.send(request)

    def send(self, request: ChatRequest) -> Completion:
        """Send a prepared request under the retry policy and record it in the ledger."""
        provider, request, connection = self._prepare(request)
        hooks = self._plugins.call_hooks()
        if hooks is None:
            return self._send(provider, connection, request)
        return hooks.around(
            request,
            provider.name,
            connection.endpoint,
            lambda: self._send(provider, connection, request),
        )

    def _prepare(self, request: ChatRequest) -> tuple[Provider, ChatRequest, Connection]:
        """Everything every path (sync, async, stream) does before sending: route a
        ``provider:model`` string, scope the key, and refuse oversized calls (the budget is
        checked when the request is sent: see :func:`~moodlemate.ai.budget.reserve`)."""
        provider, model = self._route(check_request(request).model)
        if model != request.model:
            request = replace(request, model=model)
        connection = self._connection(provider)
        check_context_window(provider, request)
        return provider, request, connection

    def _send(self, provider: Provider, connection: Connection, request: ChatRequest) -> Completion:
        def attempt(timeout: float) -> Completion:
            return provider.complete(replace(connection, timeout=timeout), request)

        label = f"{provider.name} {request.model}"
        reservation = reserve(self.ledger, self._budget, provider, request)
        try:
            completion, attempts = self.retry.run(attempt, label, self._limits)
        except BaseException:
            reservation.release()
            raise
        completion = self._account(provider, request, completion, attempts, reservation)
        self._local.last = completion
        return completion

    def stream(
        self,
        model: str,
        system_message: str,
        user_message: str,
        temperature: float = 0.7,
        max_tokens: int | None = None,
    ) -> TextStream:
        """Like :meth:`chat_completion`, but an iterator of text deltas; the full Completion is
        ``.completion`` (and :attr:`last_result`) once it ends. Sent on the first ``next()``."""
        request = build_chat_request(model, system_message, user_message, temperature, max_tokens)
        return self.stream_request(request)

    def stream_request(self, request: ChatRequest) -> TextStream:
        """Stream a prepared request (see :mod:`moodlemate.ai.streaming` for the guarantees)."""
        from moodlemate.ai.streaming import TextStream

        return TextStream(self._stream_call(request))

    def conversation(
        self,
        name: str = DEFAULT_CONVERSATION,
        *,
        system_message: str | None = None,
        model: str | None = None,
    ) -> Conversation:
        """The named conversation of this instance, created on first use; ``"default"`` is
        the one :meth:`context_assistant` uses. Settings given here are applied to it."""
        from moodlemate.ai.conversation import Conversation

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
        return completion.text

    async def acomplete(
        self,
        model: str,
        system_message: str,
        user_message: str,
        temperature: float = 0.7,
        max_tokens: int | None = None,
    ) -> Completion:
        """Async :meth:`complete`."""
        request = build_chat_request(model, system_message, user_message, temperature, max_tokens)
        return await self.asend(request)

    async def asend(self, request: ChatRequest) -> Completion:
        """Async :meth:`send`. Does not set :attr:`last_result` (tasks share a thread): use
        the returned Completion."""
        provider, request, connection = self._prepare(request)
        hooks = self._plugins.call_hooks()
        if hooks is None:
            return await self._asend(provider, connection, request)
        return await hooks.aaround(
            request,
            provider.name,
            connection.endpoint,
            lambda: self._asend(provider, connection, request),
        )

    async def _asend(
        self, provider: Provider, connection: Connection, request: ChatRequest
    ) -> Completion:
        async def attempt(timeout: float) -> Completion:
            return await provider.acomplete(replace(connection, timeout=timeout), request)

        label = f"{provider.name} {request.model}"
        reservation = reserve(self.ledger, self._budget, provider, request)
        try:
            completion, attempts = await self.retry.arun(attempt, label, self._limits)
        except BaseException:
            reservation.release()
            raise
        return self._account(provider, request, completion, attempts, reservation)

    async def acount_tokens(self, text: str, model: str = "gpt-4o-mini") -> int:
        """Async :meth:`count_tokens` (local and fast, so it runs inline)."""
        return self.count_tokens(text, model)

    async def acontext_assistant(self, prompt: str) -> str:
        """Async :meth:`context_assistant`."""
        return await self.conversation().aask(prompt)

    def astream(
        self,
        model: str,
        system_message: str,
        user_message: str,
        temperature: float = 0.7,
        max_tokens: int | None = None,
    ) -> AsyncTextStream:
        """Async :meth:`stream`: ``async for delta in gpt.astream(...)``."""
        request = build_chat_request(model, system_message, user_message, temperature, max_tokens)
        return self.astream_request(request)

    def astream_request(self, request: ChatRequest) -> AsyncTextStream:
        """Async :meth:`stream_request`."""
        from moodlemate.ai.streaming import AsyncTextStream

        return AsyncTextStream(self._stream_call(request))

    async def aclose(self) -> None:
        """Close the provider's async clients bound to the running event loop (call before
        the loop ends to release connections promptly)."""
        await self.provider.aclose()

    # -- internals -----------------------------------------------------------------------

    def _key_for(self, provider: Provider, endpoint: str) -> str | None:
        env_key = None
        if (
            provider.key_env
            and provider.recognises(endpoint)
            and not _downgraded(provider, endpoint)
        ):
            env_key = os.environ.get(provider.key_env) or None
            register_secret(env_key)
        # A key written in a config file ranks below the environment, like every setting.
        overridden = self._key_is_fallback and env_key is not None
        if self._key is not None and self._key_origin == origin(endpoint) and not overridden:
            return self._key
        return env_key

    def _route(self, model: str) -> tuple[Provider, str]:
        """The provider a model goes to: the one its ``provider:`` prefix names, else ours."""
        routed, name = split_provider(model, self._plugins)
        return routed or self.provider, name

    def _connection(self, provider: Provider) -> Connection:
        own = provider is self.provider
        endpoint = self.endpoint if own else provider.default_endpoint
        key = self._key_for(provider, endpoint)
        if key is not None and key is not self._key:
            try:  # from the provider's variable: checked as strictly as an assigned key
                _check_key(key, provider, endpoint)
            except InvalidAPIKeyError as exc:
                raise InvalidAPIKeyError(
                    f"{provider.key_env} holds an invalid key: {exc}"
                ) from None
        if key is None:
            if self._key is not None:
                log.info(
                    "not sending the api_key set for %s to %s; set api_key again for this endpoint",
                    self._key_origin,
                    origin(endpoint),
                )
            if provider.requires_key and provider.recognises(endpoint):
                if _downgraded(provider, endpoint):
                    raise MissingAPIKeyError(
                        f"not sending {provider.name}'s key over plain http to {origin(endpoint)}:"
                        f" use {provider.default_endpoint.partition(':')[0]}, or set GPT.api_key"
                    )
                hint = f"set {provider.key_env} or " if provider.key_env else "set "
                raise MissingAPIKeyError(f"no API key for {provider.name}: {hint}GPT.api_key")
        # Configured headers belong to the configured endpoint, like keys.
        headers = self._headers if own and self._endpoint == self._headers_endpoint else {}
        return Connection(
            endpoint=endpoint,
            api_key=key,
            headers=headers,
            app_url=self._app_url,
            app_title=self._app_title,
        )

    def _stream_call(self, request: ChatRequest) -> StreamCall:
        from moodlemate.ai.streaming import StreamCall

        provider, request, connection = self._prepare(replace(request, stream=True))

        def finish(completion: Completion, attempts: int, reservation: Reservation) -> Completion:
            completion = self._account(provider, request, completion, attempts, reservation)
            self._local.last = completion
            return completion

        return StreamCall(
            provider=provider,
            connection=connection,
            request=request,
            policy=self.retry,
            limits=self._limits,
            reserve=lambda: reserve(self.ledger, self._budget, provider, request),
            finish=finish,
            fallback=lambda r: self._send(provider, connection, r),
            afallback=lambda r: self._asend(provider, connection, r),
            hooks=self._plugins.call_hooks(),
        )

    def _account(
        self,
        provider: Provider,
        request: ChatRequest,
        completion: Completion,
        attempts: int,
        reservation: Reservation,
    ) -> Completion:
        cost = completion.reported_cost
        if cost is None:
            price = provider.price(completion.model) or provider.price(request.model)
            if price is not None and completion.usage_reported:
                cost = price.cost(completion.usage)
            elif request.model not in self._unpriced_warned:
                self._unpriced_warned.add(request.model)
                why = "no price known for" if price is None else "the server reported no usage for"
                log.warning(
                    "%s %s model %r: its cost is recorded as unknown "
                    "(and not counted against a budget)",
                    why,
                    provider.name,
                    request.model,
                )
        reservation.settle(self.ledger, request.model, completion.usage, cost)
        return replace(completion, cost=cost, attempts=attempts)


def _check_key(key: str, provider: Provider, endpoint: str) -> None:
    """Reject a key no server would accept (message without the key), before it is sent."""
    register_secret(key)
    if any(c.isspace() for c in key):
        raise InvalidAPIKeyError("api_key must not contain whitespace (stray newline?)")
    if not key.isprintable() or not key.isascii():
        raise InvalidAPIKeyError("api_key must be printable ASCII")
    provider.check_key(key, endpoint)


def _downgraded(provider: Provider, endpoint: str) -> bool:
    """The provider's https service addressed over plain http: its key from the environment
    would cross the network in clear text, so it is not offered there."""
    return endpoint.startswith("http:") and provider.default_endpoint.startswith("https:")
