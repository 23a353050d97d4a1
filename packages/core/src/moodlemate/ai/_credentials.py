"""Which key and which headers go to which endpoint: every credential rule in one place.

A :class:`Target` is one immutable snapshot of where an instance points and as whom; the
facade swaps it whole on every change and a call reads it once, so a call never mixes one
setting's old value with another's new one. :func:`connect` turns it into the
:class:`~moodlemate.ai._provider.Connection` a provider receives.

Where keys go (first match wins, in this order):

=================================================  ==========================================
key from                                           sent to
=================================================  ==========================================
code: ``GPT(api_key=...)``, ``gpt.api_key = ...``,  this instance's endpoint, whichever it is and
``gpt.configure(api_key=...)``, the CLI's ``--key`` in whatever order the two were set; never to
                                                   a ``provider:model`` route to another provider
a profile's ``api_key_env`` variable               the endpoint that profile configures (else its
                                                   provider's own service), while calls go there
``MOODLEMATE_API_KEY``                             the endpoint ``MOODLEMATE_ENDPOINT`` names
                                                   (else the provider's own service), while
                                                   calls go there
the provider's variable (``OPENAI_API_KEY``,       that provider's own service, over https when
``OPENROUTER_API_KEY``)                            the service is https (scheme and host compared
                                                   case-insensitively), or the endpoint its
                                                   base-URL variable (``OPENAI_BASE_URL``) names
the key ``moodlemate-ai keys set`` stored for the  as the provider's variable
provider (:mod:`moodlemate.ai._key_store`)
a profile's literal ``api_key``                    as ``api_key_env``, but ranked below the
                                                   provider's variable (a file ranks below the
                                                   environment)
=================================================  ==========================================

Headers given in code follow the instance like a key given in code; a config file's headers
stay with the endpoint that file configures. A routed call gets its provider's own key
source and no configured headers.

One exception ranks above the table: when an untrusted project-local ``moodlemate.toml``
chose where calls go (its endpoint; else its provider, when not the default one), a key or
headers given in code are not sent there, and the call is refused with a message naming the
file and how to trust it (setting the endpoint in code, or trusting the file, lifts it).
:mod:`moodlemate.ai._config` has already kept every other credential that file does not hold
away from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from moodlemate.ai._config import ENV_API_KEY
from moodlemate.ai._provider import Connection
from moodlemate.ai._secrets import register_secret
from moodlemate.ai._urls import normalize_endpoint, origin
from moodlemate.ai.errors import (
    InvalidAPIKeyError,
    InvalidEndpointError,
    MissingAPIKeyError,
    ProviderError,
)

if TYPE_CHECKING:
    from moodlemate.ai._config import Settings
    from moodlemate.ai._plugins import PluginRegistry
    from moodlemate.ai._provider import Provider

__all__ = [
    "MAX_KEY_LENGTH",
    "Scope",
    "ScopedKey",
    "Target",
    "check_assigned_key",
    "check_key",
    "check_key_format",
    "connect",
    "endpoint_for",
    "endpoint_of",
    "explain_unsent_key",
    "key_for",
    "provider_for",
    "target_from",
]

MAX_KEY_LENGTH = 16_384
"""Longer than any real key or gateway token (JWTs included): anything longer is a mistake,
such as a file's content pasted where the key goes."""
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a configured credential may go: one endpoint, or a provider's own service."""

    provider: str
    endpoint: str | None = None
    """The endpoint it was configured with; None: ``provider``'s own service."""

    def covers(self, provider: Provider, endpoint: str) -> bool:
        if provider.name != self.provider:
            return False
        if self.endpoint is None:
            return provider.recognises(endpoint) and not downgraded(provider, endpoint)
        return origin(endpoint) == origin(self.endpoint)


@dataclass(frozen=True, slots=True)
class ScopedKey:
    """A key that came with a place: a config profile's, or ``MOODLEMATE_API_KEY``."""

    key: str = field(repr=False)
    source: str
    """What to name in messages: ``$WORK_KEY``, ``the config file's api_key``."""
    scope: Scope


@dataclass(frozen=True, slots=True)
class Target:
    """Where an instance points and as whom: replaced whole, never changed in place."""

    provider: str
    provider_explicit: bool = False
    """The provider was chosen at least as explicitly as the endpoint; else the provider that
    owns the endpoint (openrouter.ai) serves it."""
    endpoint: str | None = None
    """The chosen endpoint; None: the provider's base-URL variable, else its default."""
    endpoint_beats_env: bool = True
    """Chosen by argument, assignment or ``MOODLEMATE_ENDPOINT``: beats ``OPENAI_BASE_URL``.
    A config file's endpoint does not (the environment ranks above files)."""
    api_key: str | None = field(default=None, repr=False)
    """The key given in code: it follows the instance."""
    scoped: tuple[ScopedKey, ...] = ()
    """Configured keys ranked above the provider's variable, most specific first."""
    fallback: ScopedKey | None = None
    """A config file's literal key, ranked below the provider's variable."""
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY, repr=False)
    headers_scope: Scope | None = None
    """None: the headers were given in code and follow the instance."""
    app_url: str | None = None
    app_title: str | None = None
    untrusted: str | None = None
    """The untrusted project file that chose ``endpoint`` (else ``provider``): what was given
    in code is not sent there. Cleared when the endpoint is set in code."""
    withheld: str | None = None
    """Credentials the configuration named but that are held back, and why (a call that
    has no key then raises this). Cleared when the endpoint is set in code."""
    transport: str | None = None
    """The HTTP transport asked for (``GPT(transport=...)``, ``MOODLEMATE_TRANSPORT``, the file)."""


def target_from(settings: Settings) -> Target:
    """The instance's first Target: the resolved settings, each configured key and header
    set scoped to where its configuration points (the table above)."""
    scope = Scope(settings.provider, settings.endpoint)
    scoped: list[ScopedKey] = []
    fallback = None
    if settings.api_key is not None:
        profile_key = ScopedKey(check_key_format(settings.api_key), settings.api_key_source, scope)
        if settings.api_key_is_literal:
            fallback = profile_key
        else:
            scoped.append(profile_key)
    if settings.env_api_key is not None:
        scoped.append(ScopedKey(settings.env_api_key, ENV_API_KEY, scope))
    return Target(
        provider=settings.provider,
        provider_explicit=settings.provider_is_explicit,
        endpoint=settings.endpoint,
        endpoint_beats_env=not settings.endpoint_in_file,
        scoped=tuple(scoped),
        fallback=fallback,
        headers=settings.headers,
        headers_scope=scope if settings.headers_in_file else None,
        app_url=settings.app_url,
        app_title=settings.app_title,
        untrusted=settings.untrusted,
        withheld=settings.withheld,
        transport=settings.transport,
    )


def check_assigned_key(target: Target, plugins: PluginRegistry) -> None:
    """The provider's own format for a key given in code, once its destination is known;
    deferred to the first request while provider and endpoint are still the defaults."""
    key = target.api_key
    if key is None:
        return
    provider = provider_for(target, plugins)
    chosen = target.endpoint is not None or target.provider_explicit
    if not chosen and env_endpoint(provider) is None:
        return
    check_key(key, provider, endpoint_for(target, provider))


def provider_for(target: Target, plugins: PluginRegistry) -> Provider:
    """The provider named, else the one that owns the chosen endpoint, else the named one."""
    if not target.provider_explicit and target.endpoint is not None:
        owner = plugins.for_endpoint(target.endpoint)
        if owner is not None:
            return owner
    return plugins.get(target.provider)


def endpoint_for(target: Target, provider: Provider) -> str:
    """The endpoint calls go to: argument/assignment/``MOODLEMATE_ENDPOINT``, then the
    provider's base-URL variable (``OPENAI_BASE_URL``), then a config file's, then the
    provider's default."""
    if target.endpoint is not None and target.endpoint_beats_env:
        return target.endpoint
    return env_endpoint(provider) or target.endpoint or provider.default_endpoint


def env_endpoint(provider: Provider) -> str | None:
    """The endpoint the provider's base-URL variable names, normalized; None when unset."""
    variable = provider.endpoint_env
    raw = os.environ.get(variable) if variable else None
    if not raw or not variable:
        return None
    return _normalized_env(variable, raw)


@lru_cache(maxsize=16)
def _normalized_env(variable: str, raw: str) -> str:
    try:
        return normalize_endpoint(raw)
    except InvalidEndpointError as exc:
        raise InvalidEndpointError(f"{variable}: {exc.message}") from None


def key_for(target: Target, provider: Provider, endpoint: str, *, own: bool = True) -> str | None:
    """The key a call from ``target`` to ``provider`` at ``endpoint`` carries, or None.

    ``own`` is False for a ``provider:model`` route to a provider the instance does not use:
    nothing configured for the instance goes there, only that provider's variable.
    """
    if own and _refusal(target, provider, endpoint) is not None:
        return None
    key, _ = _pick(target, provider, endpoint, own)
    return key


def _refusal(target: Target, provider: Provider, endpoint: str) -> str | None:
    """Why a key or headers given in code may not go to ``endpoint``, or None: it is the
    place an untrusted project file chose (not one the environment names)."""
    if target.untrusted is None or endpoint == env_endpoint(provider):
        return None
    given = [
        what
        for what, present in (
            ("the API key set in code (or by --key)", target.api_key is not None),
            ("the headers set in code", target.headers_scope is None and bool(target.headers)),
        )
        if present
    ]
    if not given:
        return None
    from pathlib import Path

    from moodlemate.ai._config_file import trust_hint

    return (
        f"not sending {' or '.join(given)} to {origin(endpoint)}: that endpoint (or provider) "
        f"comes from {target.untrusted}, a project-local config file that is not trusted; set "
        f"the endpoint in code (or --endpoint), or {trust_hint(Path(target.untrusted))}"
    )


def _pick(target: Target, provider: Provider, endpoint: str, own: bool) -> tuple[str | None, str]:
    """(key, its source), source naming a key not sent when the key is None."""
    if own and target.api_key is not None:
        return target.api_key, "api_key"
    if own:
        for scoped in target.scoped:
            if scoped.scope.covers(provider, endpoint):
                return scoped.key, scoped.source
    env_key, unsent = _env_key(provider, endpoint)
    if env_key is not None:
        return env_key, provider.key_env or ""
    stored, stored_note = _stored_key(provider, endpoint)
    if stored is not None:
        return stored, f"the key stored for {provider.name}"
    unsent = unsent or stored_note
    if own and target.fallback is not None and target.fallback.scope.covers(provider, endpoint):
        return target.fallback.key, target.fallback.source
    return None, unsent


def _env_key(provider: Provider, endpoint: str) -> tuple[str | None, str]:
    """The provider's variable, if it may go to ``endpoint``; else (None, a note on why not)."""
    variable = provider.key_env
    key = os.environ.get(variable) if variable else None
    if not key or not variable:
        return None, ""
    register_secret(key)
    if _service_may_receive(provider, endpoint):
        return key, variable
    return None, _unsent_note(provider, endpoint, f"{variable} is set", "the environment")


def _stored_key(provider: Provider, endpoint: str) -> tuple[str | None, str]:
    """The key ``moodlemate-ai keys set`` stored, under the rule of the provider's variable."""
    from moodlemate.ai._key_store import stored_key

    key = stored_key(provider.name)
    if key is None:
        return None, ""
    if _service_may_receive(provider, endpoint):
        return key, f"the key stored for {provider.name}"
    where = f"a key is stored for {provider.name}"
    return None, _unsent_note(provider, endpoint, where, "`moodlemate-ai keys`")


def _service_may_receive(provider: Provider, endpoint: str) -> bool:
    """The provider's own service over its own scheme, or where its base-URL variable points."""
    base = env_endpoint(provider)
    if base is not None and origin(endpoint) == origin(base):
        return True
    return provider.recognises(endpoint) and not downgraded(provider, endpoint)


def _unsent_note(provider: Provider, endpoint: str, what: str, kind: str) -> str:
    where = provider.endpoint_env
    also = f", or to the endpoint {where} names" if where else ""
    service = origin(provider.default_endpoint)
    return (
        f"{what} but was not sent to {origin(endpoint)}: keys from {kind} "
        f"go only to {service}{also}; to send a key to this endpoint, set GPT.api_key "
        "(or the CLI's --key)"
    )


def downgraded(provider: Provider, endpoint: str) -> bool:
    """The provider's https service addressed over plain http: a key from the environment
    would cross the network in clear text, so it is not offered there."""
    return (
        urlsplit(endpoint).scheme.lower() == "http"
        and urlsplit(provider.default_endpoint).scheme.lower() == "https"
    )


def endpoint_of(
    target: Target, plugins: PluginRegistry, routed: Provider | None = None
) -> tuple[Provider, str]:
    """The provider and endpoint a call would go to, without the key checks of
    :func:`connect` (to look up what that endpoint's catalog knows)."""
    provider, endpoint, _ = _destination(target, plugins, routed)
    return provider, endpoint


def _destination(
    target: Target, plugins: PluginRegistry, routed: Provider | None
) -> tuple[Provider, str, bool]:
    """(provider, endpoint, whether it is the instance's own provider): a route to a
    provider the instance does not use goes to that provider's own endpoint."""
    ours = provider_for(target, plugins)
    provider = routed or ours
    if provider is ours:
        return provider, endpoint_for(target, provider), True
    return provider, endpoint_for(_BARE, provider), False


def connect(
    target: Target, plugins: PluginRegistry, routed: Provider | None = None
) -> tuple[Provider, Connection]:
    """The provider and the Connection for one call, all from the one ``target`` snapshot.

    ``routed`` is the provider a ``provider:model`` prefix named; it is the instance's own
    provider when the instance already uses it, and a foreign one otherwise. Raises
    MissingAPIKeyError or InvalidAPIKeyError before anything is sent.
    """
    provider, endpoint, own = _destination(target, plugins, routed)
    refusal = _refusal(target, provider, endpoint) if own else None
    if refusal is not None:
        raise MissingAPIKeyError(refusal)
    key, source = _pick(target, provider, endpoint, own)
    if key is not None:
        check_key(key, provider, endpoint, source)
    elif own and target.withheld is not None:
        raise MissingAPIKeyError(target.withheld)
    elif provider.requires_key and provider.recognises(endpoint):
        if downgraded(provider, endpoint) and provider.key_env and os.environ.get(provider.key_env):
            raise MissingAPIKeyError(
                f"not sending {provider.key_env} over plain http to {origin(endpoint)}: use "
                f"{urlsplit(provider.default_endpoint).scheme}, or set GPT.api_key"
            )
        hint = f"set {provider.key_env} or " if provider.key_env else "set "
        raise MissingAPIKeyError(f"no API key for {provider.name}: {hint}GPT.api_key")
    headers = target.headers if own and _headers_go(target, provider, endpoint) else _EMPTY
    connection = Connection(
        endpoint=endpoint,
        api_key=key,
        headers=headers,
        app_url=target.app_url,
        app_title=target.app_title,
        key_note=source if key is None and source else None,
        transport=target.transport,
    )
    return provider, connection


_BARE = Target(provider="")


def _headers_go(target: Target, provider: Provider, endpoint: str) -> bool:
    scope = target.headers_scope
    return scope is None or scope.covers(provider, endpoint)


def check_key_format(key: object) -> str:
    """Reject what no server accepts, whatever the provider (message without the key)."""
    if not isinstance(key, str):
        raise InvalidAPIKeyError(f"api_key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidAPIKeyError("api_key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidAPIKeyError(
            f"api_key is {len(key):,} characters long; no key is longer than {MAX_KEY_LENGTH:,}"
        )
    if key.isascii() and key.isprintable() and " " not in key:
        return key  # the common case, in three C calls: it runs before every request
    if any(c.isspace() for c in key):
        raise InvalidAPIKeyError("api_key must not contain whitespace (stray newline?)")
    raise InvalidAPIKeyError("api_key must be printable ASCII")


def check_key(key: str, provider: Provider, endpoint: str, source: str = "api_key") -> None:
    """The general format, then the provider's own for ``endpoint``; the message names where
    the key came from (``OPENAI_API_KEY holds an invalid key: ...``), never the key."""
    try:
        check_key_format(key)
        provider.check_key(key, endpoint)
    except InvalidAPIKeyError as exc:
        if source == "api_key":
            raise
        raise InvalidAPIKeyError(f"{source} holds an invalid key: {exc.message}") from None
    register_secret(key)  # accepted: from here on, any message that quotes it is redacted


def explain_unsent_key(exc: BaseException, connection: Connection) -> None:
    """A server that refused a call we sent without a key learns why no key went: the
    message of its AuthenticationError names the key that was withheld and how to send it."""
    note = connection.key_note
    unexplained = isinstance(exc, ProviderError) and note and note not in exc.message
    if unexplained and isinstance(exc, ProviderError) and exc.status_code == 401:
        exc.args = (f"{exc.message} ({note})", *exc.args[1:])
