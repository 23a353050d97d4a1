"""Keep API keys out of reprs, log records and exception messages.

Keys are registered when they enter the library (setter, config, environment); every message
we build is passed through :func:`redact`. A logging filter on the ``moodlemate.ai`` logger
applies the same rule to records formatted with arguments.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["RedactingFilter", "mask", "redact", "register_secret"]

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_MIN_SECRET_LENGTH = 8


def register_secret(value: str | None) -> None:
    """Remember a key so any later message that contains it is redacted."""
    global _secrets
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        if value not in _secrets:
            _secrets = _secrets | {value}


def mask(value: str | None) -> str:
    """A recognisable but useless form of a key, for reprs: ``sk-...a1b2``."""
    if not value:
        return "None"
    if len(value) < 12:
        return "'***'"
    return f"'{value[:3]}...{value[-4:]}'"


def redact(text: str) -> str:
    """Replace every registered key in ``text`` with its masked form."""
    secrets = _secrets
    if not secrets:
        return text
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, mask(secret).strip("'"))
    return text


class RedactingFilter(logging.Filter):
    """Redacts keys from a record's final message, whatever logger or level produced it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg = cleaned
                record.args = None
        return True
