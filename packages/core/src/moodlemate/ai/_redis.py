"""One Redis client per URL, configured so an outage costs a bounded time, never a hang.

redis-py by default waits 5 s per socket operation and retries; a budget checked before
every call cannot afford that. Here every connect and every command gives up after
:data:`TIMEOUT` seconds and is not retried (the caller decides: the budget fails closed,
pacing falls back to local). Every credential a Redis URL can carry (``user:pass@``,
``:pass@``, a bare ``token@``, ``?password=``/``?username=`` and the like, percent-encoded or
not) is registered as a secret, so no message, traceback or log line shows it, and
:func:`shown_url` masks them all for reprs. redis-py loads on first use
(``pip install "moodlemate-ai[redis]"``).
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import unquote, urlsplit

from moodlemate.ai._secrets import register_secret
from moodlemate.ai.errors import ConfigurationError, ValidationError

__all__ = [
    "TIMEOUT",
    "check_redis_url",
    "client_options",
    "redis_client",
    "require_redis_py",
    "shown_url",
]

TIMEOUT = 1.0
"""Seconds a connect or a command to Redis may take before it counts as failed."""

_SCHEMES = ("redis", "rediss", "unix")
_clients: dict[str, Any] = {}
_lock = threading.Lock()


def check_redis_url(url: object) -> str:
    """``url`` if it names a Redis server (``redis://``, ``rediss://``, ``unix://``), else
    ValidationError; its password is registered as a secret either way."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationError("redis must be a URL such as redis://localhost:6379/0")
    parts = urlsplit(url.strip())
    for secret in _credentials(url.strip()):
        register_secret(secret)
    if parts.scheme not in _SCHEMES:
        raise ValidationError(
            f"redis URL {shown_url(url)!r} must start with redis://, rediss:// or unix://"
        )
    return url.strip()


# Query parameters that hold a credential (redis-py reads password= and username=; proxies
# and managed services add their own names). Their values are masked in shown URLs; those
# that are not user names are secrets.
_CREDENTIAL_PARAMS = ("pass", "user", "auth", "token", "key", "secret", "cred")
_USER_NAMES = ("user",)


def _credential_param(name: str) -> bool:
    return any(word in name.lower() for word in _CREDENTIAL_PARAMS)


def _credentials(url: str) -> list[str]:
    """The secrets ``url`` carries, as written and percent-decoded: the user info's password
    (a bare ``token@`` too), and credential query values other than user names (a name such
    as ``default`` is masked in shown URLs, not redacted from every message)."""
    parts = urlsplit(url)
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, has_password, password = userinfo.partition(":")
        found += [userinfo, password] if has_password else [user]
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if _credential_param(name) and not any(w in name.lower() for w in _USER_NAMES):
            found.append(value)
    return [text for value in found if value for text in dict.fromkeys((value, unquote(value)))]


def shown_url(url: str) -> str:
    """``url`` with every credential (user info, credential query values) replaced by
    ``***``: safe for messages and reprs."""
    scheme, slashes, rest = url.partition("://")
    if not slashes:
        return "(a Redis URL that cannot be shown)"
    head, question, query = rest.partition("?")
    netloc, slash, path = head.partition("/")
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if has_password else f"***@{host}"
    if query:
        query = "&".join(
            f"{name}=***" if _credential_param(name) else f"{name}{eq}{value}"
            for name, eq, value in (pair.partition("=") for pair in query.split("&"))
        )
    return f"{scheme}://{netloc}{slash}{path}{question}{query}"


_MISSING = 'a Redis URL is set but redis-py is not installed: pip install "moodlemate-ai[redis]"'


def require_redis_py() -> None:
    """Fail when the instance is made, not at its first call, without redis-py (it is not
    imported here: GPT() stays light)."""
    from importlib.util import find_spec

    if find_spec("redis") is None:
        raise ConfigurationError(_MISSING)


def client_options() -> dict[str, Any]:
    """redis-py's client options that bound an outage (see the module docstring): used by
    this module's clients and by the pacer's limiter storage alike."""
    try:
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ConfigurationError(_MISSING) from None
    return {
        "socket_timeout": TIMEOUT,
        "socket_connect_timeout": TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": 0,
    }


def redis_client(url: str) -> Any:
    """The process's client for ``url``, which every shared budget on it uses."""
    client = _clients.get(url)
    if client is not None:
        return client
    options = client_options()
    import redis

    with _lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(url, **options)
    return client
