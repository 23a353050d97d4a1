"""Endpoint URLs: one spelling per endpoint, and the origin a key is scoped to.

A leaf module (it needs only the errors and the host check), so settings, credentials,
providers and plugins can all use it without importing each other.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from moodlemate.ai.errors import InvalidEndpointError

__all__ = ["host_of", "normalize_endpoint", "origin", "sent_in_clear"]


def normalize_endpoint(url: object) -> str:
    """Validate an endpoint URL and drop a trailing slash, so both spellings are one endpoint."""
    if not isinstance(url, str):
        raise InvalidEndpointError(f"endpoint must be a string URL, not {type(url).__name__}")
    text = url.strip()
    if not text or any(c.isspace() for c in text):
        raise InvalidEndpointError("endpoint must be an http(s) URL without spaces")
    if not text.isprintable():  # NUL and other control or invisible characters
        raise InvalidEndpointError("endpoint must not contain control or invisible characters")
    shown = _without_credentials(text)
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidEndpointError(f"endpoint {shown!r} is not a valid URL: {exc}") from None
    if "://" not in text:  # 'localhost:11434/v1' parses as scheme 'localhost'
        raise InvalidEndpointError(
            f"endpoint {shown!r} must start with http:// or https://, e.g. 'http://{shown}'"
        )
    if parts.scheme not in ("http", "https"):
        raise InvalidEndpointError(
            f"endpoint {shown!r} must use http or https (got {parts.scheme or 'no scheme'!r})"
        )
    if not parts.hostname:
        raise InvalidEndpointError(f"endpoint {shown!r} has no host")
    if parts.username or parts.password:
        raise InvalidEndpointError("endpoint must not carry credentials; set api_key instead")
    if parts.query or parts.fragment:
        raise InvalidEndpointError(f"endpoint {shown!r} must not have a query or fragment")
    from moodlemate.ai._endpoint_host import check_host

    check_host(parts.hostname, port, shown)
    return text.rstrip("/")


def _without_credentials(url: str) -> str:
    """``url`` for an error message: a rejected URL may carry a key in its user info or its
    query (``?key=...``), and messages must not."""
    head, cut, _ = url.partition("?")
    head, hashed, _ = head.partition("#")
    scheme, slashes, rest = head.partition("://")
    if slashes:
        netloc, slash, path = rest.partition("/")
        if "@" in netloc:
            netloc = "***@" + netloc.rpartition("@")[2]
        head = f"{scheme}://{netloc}{slash}{path}"
    return head + ("?..." if cut else "#..." if hashed else "")


@lru_cache(maxsize=256)
def host_of(url: str) -> str:
    """The host of ``url``, in lower case ("" for none). Cached: every call asks it of its
    endpoint, and an instance has one or a few."""
    return (urlsplit(url).hostname or "").lower()


def origin(url: str) -> str:
    """scheme://host:port, the unit a key is scoped to."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def sent_in_clear(url: str) -> bool:
    """Plain http to a host other than this machine: whatever is sent crosses the network
    readable by anyone on the way."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    from moodlemate.ai._endpoint_host import is_loopback

    return not is_loopback(parts.hostname or "")
