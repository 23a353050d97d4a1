"""Keep API keys out of reprs, log records and exception messages.

Keys are registered when they enter the library (setter, config, environment); every message
we build is passed through :func:`redact`. A logging filter on the ``moodlemate.ai`` logger
applies the same rule to records formatted with arguments, and :func:`redact_exception`
scrubs the foreign exceptions (a vendor SDK's, quoting a server that echoed the key) that
ours chain as ``__cause__``, since tracebacks print them.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["RedactingFilter", "mask", "redact", "redact_exception", "register_secret"]

_lock = threading.Lock()
# Registering adds to a set (a service with a key per user registers thousands); redacting
# iterates a snapshot of it, rebuilt when the set has grown, so another thread registering
# meanwhile cannot break the iteration. (Copying the whole set on every registration made
# the n-th key cost O(n).)
_registered: set[str] = set()
_secrets: tuple[str, ...] = ()
_MIN_SECRET_LENGTH = 8


def register_secret(value: str | None) -> None:
    """Remember a key so any later message that contains it is redacted."""
    if not value or len(value) < _MIN_SECRET_LENGTH or value in _registered:
        return
    with _lock:
        _registered.add(value)


def _current() -> tuple[str, ...]:
    global _secrets
    secrets = _secrets
    if len(secrets) != len(_registered):
        with _lock:
            secrets = _secrets = tuple(_registered)
    return secrets


def mask(value: str | None) -> str:
    """A recognisable but useless form of a key, for reprs: ``sk-...a1b2``."""
    if not value:
        return "None"
    if len(value) < 12:
        return "'***'"
    return f"'{value[:3]}...{value[-4:]}'"


def redact(text: str) -> str:
    """Replace every registered key in ``text`` with its masked form."""
    secrets = _current()
    if not secrets:
        return text
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, mask(secret).strip("'"))
    return text


def redact_exception(exc: BaseException) -> None:
    """Redact keys, in place, from the text of ``exc`` and every exception chained to it.

    Covers what a traceback or a log line shows (``args``) and the string attributes that
    SDK exceptions carry their message and parsed error body in.
    """
    if not _registered:
        return
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.args = tuple(_redacted(arg) for arg in current.args)
        attributes = current.__dict__
        for name, value in list(attributes.items()):
            cleaned = _redacted(value)
            if cleaned is not value:
                attributes[name] = cleaned
        pending += (current.__cause__, current.__context__)


def _redacted(value: object, depth: int = 0) -> object:
    """``value`` with keys redacted from its strings (JSON-like containers included); the
    same object when nothing changed."""
    if isinstance(value, str):
        cleaned = redact(value)
        return value if cleaned == value else cleaned
    if depth > 8:
        return value
    if isinstance(value, dict):
        items = {k: _redacted(v, depth + 1) for k, v in value.items()}
        changed = any(items[k] is not v for k, v in value.items())
        return items if changed else value
    if isinstance(value, list | tuple):
        seq = [_redacted(v, depth + 1) for v in value]
        if all(a is b for a, b in zip(seq, value, strict=True)):
            return value
        return seq if isinstance(value, list) else tuple(seq)
    return value


class RedactingFilter(logging.Filter):
    """Redacts keys from a record's final message, whatever logger or level produced it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _registered:
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg = cleaned
                record.args = None
        return True
