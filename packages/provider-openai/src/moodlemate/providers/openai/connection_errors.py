"""Network failures as the core's errors, naming host, port and cause, for both transports.

A user who reads "could not reach the server" cannot tell a typo in the host from a server
that is down; the message says which (DNS, refused, TLS, timeout, closed), and
``APIConnectionError.cause_kind`` carries the same for code that decides whether waiting
can help (a name that does not resolve will not resolve in two seconds either).
"""

from __future__ import annotations

import socket
import ssl

from moodlemate.ai.plugin import APIConnectionError, APITimeoutError

__all__ = ["cause_kind", "connection_error"]


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen) and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def cause_kind(exc: BaseException) -> str:
    """What went wrong, from the exception and what it was raised from."""
    chain = _chain(exc)
    for link in chain:
        if isinstance(link, socket.gaierror):
            return "dns"
        if isinstance(link, ConnectionRefusedError):
            return "refused"
        if isinstance(link, ssl.SSLError | ssl.CertificateError):
            return "tls"
    for link in chain:
        name = type(link).__name__
        text = str(link).lower()
        if isinstance(link, TimeoutError | socket.timeout) or name.endswith("Timeout"):
            return "timeout"
        if "connection refused" in text:
            return "refused"
        if "name or service not known" in text or "nodename nor servname" in text:
            return "dns"
        if "certificate" in text or "ssl" in text or "tls" in text:
            return "tls"
        if name == "ProxyError":
            return "proxy"
        if isinstance(link, ConnectionResetError | BrokenPipeError | EOFError):
            return "closed"
        if name == "RemoteProtocolError" or "disconnected" in text:
            return "closed"
    return "network"


def _reason(exc: BaseException) -> str:
    """The innermost OS or TLS reason, short (``[Errno 111] Connection refused``)."""
    for link in reversed(_chain(exc)):
        text = str(link).strip()
        if text:
            return text[:200]
    return type(exc).__name__


def connection_error(
    exc: BaseException,
    host: str,
    port: int,
    *,
    connected: bool = False,
    provider: str | None = None,
    model: str | None = None,
) -> APIConnectionError:
    """The core error for ``exc``; ``connected`` says the request was already under way (a
    timeout then is one reading the answer, not one connecting)."""
    kind = cause_kind(exc)
    where = f"{host}:{port}"
    fields: dict[str, str | None] = {"provider": provider, "model": model}
    if kind == "timeout":
        what = "reading the response from" if connected else "connecting to"
        return APITimeoutError(f"timed out {what} {where}", **fields)
    if kind == "refused":
        message = f"nothing listens at {where} (connection refused): is the server running?"
    elif kind == "dns":
        message = f"cannot resolve {host} (DNS lookup failed for {where}): is the host right?"
    elif kind == "tls":
        message = f"TLS with {where} failed ({_reason(exc)})"
    elif kind == "closed":
        message = f"{where} closed the connection ({_reason(exc)})"
    elif kind == "proxy":
        message = f"the proxy refused the connection to {where} ({_reason(exc)})"
    else:
        message = f"could not reach {where} ({type(exc).__name__}: {_reason(exc)})"
    return APIConnectionError(message, cause_kind=kind, **fields)
