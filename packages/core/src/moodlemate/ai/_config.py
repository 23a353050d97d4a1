"""Where settings come from. One order for every setting:
explicit argument > environment > config file > built-in default.

A project-local ``moodlemate.toml`` that the user has not trusted
(:mod:`moodlemate.ai._project_trust`) may still choose the provider, endpoint, model and the
rest, but not where data is kept or shared (its ``log`` and ``redis`` are dropped when the
file is read, :mod:`moodlemate.ai._config_file`), and it is not trusted with credentials:
no credential it does not itself hold (a key or headers from the user's config file,
``MOODLEMATE_API_KEY``; a key or headers given in code, see
:mod:`moodlemate.ai._credentials`) goes where it points, and its own go nowhere over plain
http to another machine. Whatever is held back is named in a warning and in the error of a
call that then has no key, with the command that trusts the file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from moodlemate.ai._config_file import (
    CONFIG_ENV,
    PROFILE_ENV,
    PROJECT_FILE,
    USER_FILE,
    Section,
    load_config,
    register_header_secret,
    trust_hint,
    warn_untrusted,
)
from moodlemate.ai._defaults import DEFAULT_MODEL, DEFAULT_PROVIDER
from moodlemate.ai._secrets import register_secret
from moodlemate.ai._urls import normalize_endpoint
from moodlemate.ai.errors import (
    ConfigurationError,
    InvalidEndpointError,
    MissingAPIKeyError,
    ValidationError,
)

__all__ = [
    "DEFAULT_PROVIDER",
    "ENV_API_KEY",
    "ENV_APP_TITLE",
    "ENV_APP_URL",
    "ENV_ENDPOINT",
    "ENV_MODEL",
    "ENV_PROVIDER",
    "Settings",
    "check_headers",
    "resolve_settings",
]

log = logging.getLogger("moodlemate.ai")

ENV_PROVIDER = "MOODLEMATE_PROVIDER"
ENV_ENDPOINT = "MOODLEMATE_ENDPOINT"
ENV_MODEL = "MOODLEMATE_MODEL"
ENV_API_KEY = "MOODLEMATE_API_KEY"
ENV_APP_URL = "MOODLEMATE_APP_URL"
ENV_APP_TITLE = "MOODLEMATE_APP_TITLE"
ENV_REDIS = "MOODLEMATE_REDIS_URL"
ENV_PACING = "MOODLEMATE_PACING"
ENV_TRANSPORT = "MOODLEMATE_TRANSPORT"
ENV_API = "MOODLEMATE_API"

# Where a value came from; lower is more explicit.
ARGUMENT, ENVIRONMENT, FILE, DEFAULT = 0, 1, 2, 3
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved settings; None means "not configured, use the provider's default"."""

    provider: str
    endpoint: str | None = None
    model: str = DEFAULT_MODEL
    model_is_explicit: bool = False
    """A model was configured (argument, environment, file); else ``model`` is the fallback
    and the provider's own ``default_model`` comes first."""
    provider_is_explicit: bool = False
    """The provider was chosen at least as explicitly as the endpoint; else an endpoint that
    a provider recognises (openrouter.ai) selects that provider."""
    api_key: str | None = field(default=None, repr=False)
    """A key from the config file, kept only when it goes where that file's profile points."""
    api_key_is_literal: bool = False
    """The key is written in the file (file level), not read from the variable the profile
    names with ``api_key_env`` (environment level): the provider's own variable beats it."""
    api_key_source: str = ""
    """Where the file's key came from, for messages: ``$WORK_KEY`` or the file's name."""
    env_api_key: str | None = field(default=None, repr=False)
    """``MOODLEMATE_API_KEY``, kept only when no argument or file chose the endpoint: it goes
    with ``MOODLEMATE_ENDPOINT`` (or the provider's own service), as environment settings do."""
    endpoint_in_file: bool = False
    """The endpoint came from the config file (ranks below ``OPENAI_BASE_URL``); the file's
    key and headers go only there."""
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY, repr=False)
    """Extra request headers; hidden from the repr like the key, since they may hold one."""
    headers_in_file: bool = False
    """The headers came from the config file (they stay with its endpoint); else from code."""
    app_url: str | None = None
    app_title: str | None = None
    fallbacks: tuple[str, ...] = ()
    """The profile's ``fallbacks``: models tried in order when a call's model is out."""
    log: str | None = None
    """The profile's spend log path (``log``), see :mod:`moodlemate.ai._spend_log`."""
    redis: str | None = field(default=None, repr=False)
    """The Redis URL shared budgets and pacing use (``MOODLEMATE_REDIS_URL``, ``redis``); out
    of the repr, since a URL may hold a password."""
    pacing: object = None
    """``pacing`` as configured (``MOODLEMATE_PACING``, the file): True, False, a table of
    models, or None (not configured: on when Redis is set)."""
    untrusted: str | None = None
    """The untrusted project file that chose where calls go (its endpoint, else its
    provider): no key or headers given in code go there either."""
    withheld: str | None = None
    """Credentials the configuration named but that are not sent, and why: a call left with
    no key raises this instead of going out without one."""
    transport: str | None = None
    """The HTTP transport by the provider's name for it (``"openai-sdk"``); None: its default."""
    api: str | None = None
    """The vendor API calls go through (``"chat"``, ``"responses"``); None: the provider's
    model rules choose."""


def resolve_settings(
    *,
    provider: str | None = None,
    endpoint: str | None = None,
    model: str | None = None,
    profile: str | None = None,
    headers: Mapping[str, str] | None = None,
    app_url: str | None = None,
    app_title: str | None = None,
    transport: str | None = None,
    api: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Each setting from the first of: explicit argument, environment, config file, default."""
    env = os.environ if environ is None else environ
    profile_name = _text(profile, "profile") or env.get(PROFILE_ENV) or None
    found, untrusted = _file_section(env, profile_name)
    section, where, origins = found.settings, found.where, found.origins

    chosen, provider_level = _pick(
        _text(provider, "provider"), env.get(ENV_PROVIDER), section.get("provider")
    )
    raw_endpoint, endpoint_level = _pick(endpoint, env.get(ENV_ENDPOINT), section.get("endpoint"))
    resolved_endpoint = None
    if raw_endpoint is not None:
        try:
            resolved_endpoint = normalize_endpoint(raw_endpoint)
        except InvalidEndpointError as exc:
            if endpoint_level == ENVIRONMENT:
                raise InvalidEndpointError(f"{ENV_ENDPOINT}: {exc.message}") from None
            raise
    chosen_model, _ = _pick(_text(model, "model"), env.get(ENV_MODEL), section.get("model"))
    url, url_level = _pick(
        _attribution(app_url, "app_url"), env.get(ENV_APP_URL), section.get("app_url")
    )
    title, title_level = _pick(
        _attribution(app_title, "app_title"), env.get(ENV_APP_TITLE), section.get("app_title")
    )
    if url_level == ENVIRONMENT:
        _attribution(url, ENV_APP_URL)
    if title_level == ENVIRONMENT:
        _attribution(title, ENV_APP_TITLE)
    # A file's key and headers were written for where the file points, and go nowhere else.
    file_target = endpoint_level == FILE or (
        resolved_endpoint is None and provider_level in (FILE, DEFAULT)
    )
    env_key = env.get(ENV_API_KEY) or None
    register_secret(env_key)
    if env_key is not None and endpoint_level in (ARGUMENT, FILE):
        log.info("not using %s: the endpoint was not set by the environment", ENV_API_KEY)
        env_key = None
    withheld = [found.ignored] if found.ignored else []
    # Where calls go came from the untrusted project file (its endpoint; else its provider,
    # when it moves calls away from the default provider's service): it is not trusted with
    # credentials.
    place = (
        origins.get("endpoint")
        if endpoint_level == FILE
        else origins.get("provider")
        if resolved_endpoint is None and provider_level == FILE and chosen != DEFAULT_PROVIDER
        else None
    )
    untrusted_place = untrusted if untrusted is not None and place == untrusted else None
    if untrusted_place is not None:
        destination = resolved_endpoint or f"the {chosen} service"
        section, notes = _guard_untrusted(section, origins, untrusted_place, destination)
        if env_key is not None:
            notes.append(f"not sending {ENV_API_KEY} to {destination}, which it chose")
            env_key = None
        for note in notes:
            warn_untrusted(untrusted_place, note)
            withheld.append(f"{untrusted_place.resolve()}: {note}; {trust_hint(untrusted_place)}")
    file_headers = (section.get("headers") or {}) if file_target else {}
    chosen_headers = check_headers(headers) if headers is not None else file_headers
    return Settings(
        provider=chosen or DEFAULT_PROVIDER,
        endpoint=resolved_endpoint,
        model=chosen_model or DEFAULT_MODEL,
        model_is_explicit=chosen_model is not None,
        provider_is_explicit=chosen is not None
        and (resolved_endpoint is None or provider_level <= endpoint_level),
        api_key=_file_key(section, where, env, file_target),
        api_key_is_literal="api_key" in section,
        api_key_source=(
            f"${section['api_key_env']}" if "api_key_env" in section else f"the api_key of {where}"
        ),
        env_api_key=env_key,
        endpoint_in_file=endpoint_level == FILE,
        headers=MappingProxyType(dict(chosen_headers)),
        headers_in_file=headers is None and bool(file_headers),
        app_url=url,
        app_title=title,
        fallbacks=tuple(section.get("fallbacks") or ()),
        log=section.get("log"),
        redis=_redis_url(env.get(ENV_REDIS), section.get("redis")),
        pacing=_pacing(env.get(ENV_PACING), section.get("pacing")),
        untrusted=None if untrusted_place is None else str(untrusted_place.resolve()),
        withheld="\n".join(withheld) or None,
        transport=_pick(
            _text(transport, "transport"), env.get(ENV_TRANSPORT), section.get("transport")
        )[0],
        api=_api(api, env.get(ENV_API), section.get("api"), where),
    )


_CREDENTIALS = ("api_key", "api_key_env", "headers")


def _guard_untrusted(
    section: Mapping[str, Any], origins: Mapping[str, Path | None], untrusted: Path, place: str
) -> tuple[dict[str, Any], list[str]]:
    """``section`` without the credentials that may not go to ``place``, which the untrusted
    file ``untrusted`` chose: any it does not hold itself, and its own over plain http to
    another machine. Also what was left out, as sentences."""
    from moodlemate.ai._urls import origin, sent_in_clear

    clear = place.startswith("http") and sent_in_clear(place)
    kept = dict(section)
    notes = []
    for setting in _CREDENTIALS:
        if setting not in kept:
            continue
        source = origins.get(setting)
        if source == untrusted and not clear:
            continue
        del kept[setting]
        if source == untrusted:
            notes.append(
                f"not sending its {setting} over plain http to {origin(place)}, which is not "
                "this machine"
            )
        else:
            held_in = source.resolve() if source is not None else "the user's config file"
            notes.append(
                f"not sending the {setting} of {held_in} to {place}, which this untrusted file "
                "chose: it may not redirect credentials it does not hold"
            )
    return kept, notes


def _redis_url(environment: str | None, file: str | None) -> str | None:
    if environment:
        from moodlemate.ai._redis import check_redis_url

        try:
            return check_redis_url(environment)
        except ValidationError as exc:
            raise ValidationError(f"{ENV_REDIS}: {exc.message}") from None
    return file


def _pacing(environment: str | None, file: object) -> object:
    if environment is None or not environment.strip():
        return file
    from moodlemate.ai._flags import parse_flag

    return parse_flag(environment, ENV_PACING)


def _pick(argument: str | None, environment: str | None, file: Any) -> tuple[str | None, int]:
    for value, level in ((argument, ARGUMENT), (environment, ENVIRONMENT), (file, FILE)):
        if value:
            return value, level
    return None, DEFAULT


def _file_section(env: Mapping[str, str], profile: str | None) -> tuple[Section, Path | None]:
    """The profile's settings, and the untrusted project file among the files, if any."""
    config = load_config(env)
    if config is None:
        if profile:
            raise ConfigurationError(
                f"profile {profile!r} requested but no config file found "
                f"(looked for ./{PROJECT_FILE} and $XDG_CONFIG_HOME/{USER_FILE}; "
                f"or set {CONFIG_ENV})"
            )
        return Section({}, "", {}), None
    return config.section(profile), config.untrusted


def _file_key(
    section: Mapping[str, Any], where: str, env: Mapping[str, str], file_target: bool
) -> str | None:
    """The profile's key, only if calls go where the profile points: a key configured for
    the profile's endpoint (or provider) must not follow an endpoint or provider that the
    environment or an argument substituted."""
    key = section.get("api_key")
    variable = section.get("api_key_env")
    if key is None and variable is None:
        return None
    if not file_target:
        log.info("not using the api_key of %s: the endpoint or provider was set elsewhere", where)
        return None
    if variable is not None:
        key = env.get(variable) or None
        if key is None:
            raise MissingAPIKeyError(
                f"{where} reads its API key from ${variable}, which is not set"
            )
        register_secret(key)
    return str(key)


def _text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, not {type(value).__name__}")
    return value.strip() or None


def _api(given: object, env_value: str | None, file_value: object, where: object) -> str | None:
    """The first API choice set (argument, ``MOODLEMATE_API``, the file), checked where it was
    written."""
    from moodlemate.ai._options import check_api

    if given is not None:
        return check_api(given)
    if env_value:
        return check_api(env_value, ENV_API)
    return check_api(file_value, f"the api of {where}")


def _attribution(value: object, name: str) -> str | None:
    text = _text(value, name)
    if text is not None and not (text.isascii() and text.isprintable()):
        raise ValidationError(f"{name} must be printable ASCII (it is sent as an HTTP header)")
    return text


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP header name (RFC 9110's token): no space, colon or separator."""


def check_headers(headers: object) -> Mapping[str, str]:
    """Headers given in code: printable ASCII names and values (credential-like ones are
    registered for redaction)."""
    if not isinstance(headers, Mapping):
        raise ValidationError(f"headers must be a mapping, not {type(headers).__name__}")
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValidationError(f"header name {name!r} is not a valid HTTP header name")
        if not isinstance(value, str) or not value.isascii() or not value.isprintable():
            raise ValidationError(f"header {name!r} must be a printable ASCII string")
        register_header_secret(name, value)
    return headers
