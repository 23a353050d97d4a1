"""Checks on an endpoint's host and port that ``urlsplit`` does not make.

``urlsplit`` accepts hosts no HTTP client can connect to (a NUL byte, a 64-character DNS
label, a 300-character name) and port 0; the HTTP stack then fails at call time with a raw
``InvalidURL`` or ``UnicodeError``. Checking here turns each into an
:class:`~moodlemate.ai.errors.InvalidEndpointError` when the endpoint is set.
"""

from __future__ import annotations

from moodlemate.ai.errors import InvalidEndpointError

__all__ = ["check_host", "is_loopback"]

MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63


def check_host(hostname: str, port: int | None, shown: str) -> None:
    """Raise InvalidEndpointError unless ``hostname`` (as urlsplit gives it) and ``port``
    can be connected to; ``shown`` is the endpoint as error messages may quote it."""
    if port == 0:
        raise InvalidEndpointError(f"endpoint {shown!r} has port 0, which cannot be connected to")
    if ":" in hostname:  # an IPv6 literal; urlsplit has already checked its brackets
        return
    try:
        # IDNA is what the HTTP stack sends for a non-ASCII name; it rejects empty and
        # over-long labels too.
        ascii_name = hostname.encode("idna").decode("ascii") if not hostname.isascii() else hostname
    except UnicodeError:
        raise InvalidEndpointError(
            f"endpoint {shown!r} has a host name that cannot be encoded for DNS (IDNA)"
        ) from None
    name = ascii_name.removesuffix(".")  # a fully qualified name may end with a dot
    if len(name) > MAX_HOST_LENGTH:
        raise InvalidEndpointError(
            f"endpoint host is {len(name)} characters long; DNS allows {MAX_HOST_LENGTH}"
        )
    for label in name.split("."):
        if not label:
            raise InvalidEndpointError(f"endpoint {shown!r} has an empty label in its host name")
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidEndpointError(
                f"endpoint host has a {len(label)}-character label; DNS allows {MAX_LABEL_LENGTH}"
            )
        if not all(c.isalnum() or c in "-_" for c in label):
            raise InvalidEndpointError(
                f"endpoint {shown!r} has characters that are not allowed in a host name"
            )


def is_loopback(hostname: str) -> bool:
    """``localhost`` (and ``*.localhost``), 127.0.0.0/8 or ``::1``: traffic that never leaves
    the machine, so plain http there exposes nothing on the network."""
    name = hostname.lower().removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False
