"""Where settings come from. One order for every setting:
explicit argument > environment > config file > built-in default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from moodlemate.ai.errors import InvalidEndpointError

__all__ = [
    "DEFAULT_PROVIDER",
    "ENV_ENDPOINT",
    "ENV_MODEL",
    "ENV_PROVIDER",
    "Settings",
    "normalize_endpoint",
    "origin",
    "resolve_settings",
]

ENV_PROVIDER = "MOODLEMATE_PROVIDER"
ENV_ENDPOINT = "MOODLEMATE_ENDPOINT"
ENV_MODEL = "MOODLEMATE_MODEL"
DEFAULT_PROVIDER = "openai"
DEFAULT_MODEL = "gpt-4o-mini"


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved settings; None means "not configured, use the provider's default"."""

    provider: str
    endpoint: str | None = None
    model: str = DEFAULT_MODEL
    provider_is_explicit: bool = False


def resolve_settings(
    *,
    provider: str | None = None,
    endpoint: str | None = None,
    model: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    chosen = provider or env.get(ENV_PROVIDER) or None
    raw_endpoint = endpoint or env.get(ENV_ENDPOINT) or None
    return Settings(
        provider=chosen or DEFAULT_PROVIDER,
        endpoint=normalize_endpoint(raw_endpoint) if raw_endpoint else None,
        model=model or env.get(ENV_MODEL) or DEFAULT_MODEL,
        provider_is_explicit=chosen is not None,
    )


def normalize_endpoint(url: object) -> str:
    """Validate an endpoint URL and drop a trailing slash, so both spellings are one endpoint."""
    if not isinstance(url, str):
        raise InvalidEndpointError(f"endpoint must be a string URL, not {type(url).__name__}")
    text = url.strip()
    if not text or any(c.isspace() for c in text):
        raise InvalidEndpointError("endpoint must be an http(s) URL without spaces")
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidEndpointError(f"endpoint {text!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidEndpointError(
            f"endpoint {text!r} must use http or https (got {parts.scheme or 'no scheme'!r})"
        )
    if not parts.hostname:
        raise InvalidEndpointError(f"endpoint {text!r} has no host")
    if parts.username or parts.password:
        raise InvalidEndpointError("endpoint must not carry credentials; set api_key instead")
    if parts.query or parts.fragment:
        raise InvalidEndpointError(f"endpoint {text!r} must not have a query or fragment")
    del port
    return text.rstrip("/")


def origin(url: str) -> str:
    """scheme://host:port, the unit a key is scoped to."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"
