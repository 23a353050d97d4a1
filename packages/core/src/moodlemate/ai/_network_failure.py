"""Say why a server could not be reached: host, port and cause, in words a person can act on.

An HTTP stack reports "could not reach the server (ConnectError)"; the cause is buried in the
exception chain (a resolver error, a refused connection, a failed TLS handshake, a connect
timeout). This module reads that chain by the standard library's exception types and their
messages, so it needs no vendor import, and rewrites the error's message once, before the
first retry warning is logged, so the log line and the final error say the same thing.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from moodlemate.ai.errors import APIConnectionError

__all__ = ["CAUSES", "cause_of", "name_the_failure"]

CAUSES: dict[str, str] = {
    "DNS": "the name does not resolve (offline, or a typo in the endpoint?)",
    "refused": "nothing listens on that port (is the server running?)",
    "unreachable": "no route to the host (offline?)",
    "TLS": "the TLS handshake failed (https to a plain-http port, or an untrusted certificate?)",
    "timeout": "no connection within the time allowed",
}
"""The causes told apart, and what each suggests."""

_DNS_WORDS = (
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
    "getaddrinfo failed",
    "no address associated",
    "name resolution",
)
_MARK = "cannot reach "


def cause_of(error: BaseException) -> str | None:
    """The key of :data:`CAUSES` the exception chain shows, or None when it shows none."""
    seen: set[int] = set()
    current: BaseException | None = error
    found: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _classify(current) or found
        if found in ("DNS", "refused", "TLS", "unreachable"):
            return found
        current = current.__cause__ or current.__context__
    return found


def _classify(exc: BaseException) -> str | None:
    kind = type(exc).__name__
    text = str(exc).lower()
    if kind == "gaierror" or any(words in text for words in _DNS_WORDS):
        return "DNS"
    if isinstance(exc, ConnectionRefusedError) or "connection refused" in text:
        return "refused"
    if "unreachable" in text or getattr(exc, "errno", None) in (101, 113):
        return "unreachable"
    if kind.startswith(("SSL", "TLS")) or "certificate verify failed" in text:
        return "TLS"
    if kind in ("ConnectTimeout", "ConnectTimeoutError"):
        return "timeout"
    return None


def name_the_failure(error: APIConnectionError, endpoint: str) -> None:
    """Rewrite ``error``'s message as ``cannot reach HOST:PORT (CAUSE): what it suggests``
    when its chain shows why; leave it alone otherwise (a read timeout, a reset mid-reply)."""
    if error.message.startswith(_MARK):
        return
    cause = cause_of(error)
    if cause is None:
        return
    error.args = (f"{_MARK}{host_port(endpoint)} ({cause}): {CAUSES[cause]}",)


def host_port(endpoint: str) -> str:
    """``host:port`` of an endpoint URL, the scheme's port when it names none."""
    parts = urlsplit(endpoint)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}"
