"""Keep API keys out of reprs, log records and exception messages.

Keys are registered when they enter the library (setter, config, environment); every message
we build is passed through :func:`redact`. :func:`redact_exception` scrubs the foreign
exceptions (a vendor SDK's, quoting a server that echoed the key) that ours chain as
``__cause__``, since tracebacks print them.

Log records are guarded where every record is made: once the first key is registered, the
process's log-record factory is wrapped (:func:`guard_records`) so a record from any logger,
including one created later (``httpcore2.http11`` appears on the first connection) or one of
an HTTP stack renamed tomorrow, has its message redacted before any filter, handler or
``logging.lastResort`` sees it. A record is made only for a level that is enabled, so with
DEBUG off the HTTP stack costs nothing more. Per-logger filters (:class:`RedactingFilter`,
:func:`guard_loggers`) stay for applications that install their own factory afterwards.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import unquote

__all__ = [
    "RedactingFilter",
    "guard_loggers",
    "guard_records",
    "mask",
    "redact",
    "redact_cut",
    "redact_exception",
    "register_secret",
]

_lock = threading.Lock()
# Registering adds to a set (a service with a key per user registers thousands); redacting
# iterates a snapshot of it, rebuilt when the set has grown, so another thread registering
# meanwhile cannot break the iteration. (Copying the whole set on every registration made
# the n-th key cost O(n).)
_registered: set[str] = set()
_secrets: tuple[int, tuple[str, ...], re.Pattern[str] | None] = (0, (), None)
_SHORT = 8
"""Keys shorter than this (``abc123``) are redacted where they stand as a whole token, so a
short key does not shred every word it happens to occur in."""
_MIN = 4
"""Shorter strings are no secret (guessed in a moment) and would mask ordinary words."""
# A run of URL characters holding a percent escape: a key a server echoed percent-encoded
# (``sk%2Dproj%2D...``) is found by decoding such runs.
_ENCODED_RUN = re.compile(r"[A-Za-z0-9._~+%-]*%[0-9A-Fa-f]{2}[A-Za-z0-9._~+%-]*")


# Keys that servers' own documentation publishes for "any key will do": not secrets, and
# masking them would mask the provider's name in every message ("ollama").
_PLACEHOLDERS = frozenset({"ollama", "lm-studio", "EMPTY", "no-key", "none", "None"})


def register_secret(value: str | None) -> None:
    """Remember a key so any later message that contains it is redacted."""
    if not value or len(value) < _MIN or value in _registered or value in _PLACEHOLDERS:
        return
    with _lock:
        _registered.add(value)
    if not _guarding:
        guard_records()


def _current() -> tuple[int, tuple[str, ...], re.Pattern[str] | None]:
    """(how many keys, the long ones, a pattern for the short ones), rebuilt when more keys
    were registered since."""
    global _secrets
    secrets = _secrets
    if secrets[0] != len(_registered):
        with _lock:
            keys = tuple(_registered)
            long = tuple(k for k in keys if len(k) >= _SHORT)
            short = sorted((k for k in keys if len(k) < _SHORT), key=len, reverse=True)
            pattern = None
            if short:
                alternatives = "|".join(re.escape(k) for k in short)
                pattern = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")
            secrets = _secrets = (len(keys), long, pattern)
    return secrets


def mask(value: str | None) -> str:
    """A recognisable but useless form of a key, for reprs: ``sk-...a1b2``."""
    if not value:
        return "None"
    if len(value) < 12:
        return "'***'"
    return f"'{value[:3]}...{value[-4:]}'"


def redact(text: str) -> str:
    """Replace every registered key in ``text`` with its masked form, also where it appears
    percent-encoded."""
    if not _registered:
        return text
    _, long, short = _current()
    for secret in long:
        if secret in text:
            text = text.replace(secret, mask(secret).strip("'"))
    if short is not None:
        text = short.sub("***", text)
    if "%" in text:
        text = _ENCODED_RUN.sub(_redact_encoded, text)
    return text


_KEY_MARGIN = 1024
"""Characters kept past a cut until redaction: longer than any key."""


def redact_cut(text: str, limit: int) -> str:
    """``text`` redacted, then cut to ``limit`` characters: a key that straddles the cut is
    still recognised (cut first, its prefix would be kept). Reads at most ``limit`` plus a
    margin longer than any key, however long ``text`` is."""
    return redact(text[: limit + _KEY_MARGIN])[:limit]


def _redact_encoded(match: re.Match[str]) -> str:
    run = match.group()
    decoded = unquote(run)
    if decoded == run:
        return run
    cleaned = redact(decoded)
    return run if cleaned == decoded else cleaned


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


def guard_loggers(*prefixes: str) -> None:
    """Add a :class:`RedactingFilter` to every existing logger named ``prefix`` or below it.

    A logger's filters do not apply to its children, and the HTTP stack logs from module
    loggers (``httpcore.http11``, ``httpx``) that print response headers a server may have
    echoed a key into; so a provider calls this once its SDK is imported.
    """
    wanted = tuple(p + "." for p in prefixes)
    names = [
        name
        for name in list(logging.Logger.manager.loggerDict)
        if name in prefixes or name.startswith(wanted)
    ]
    for name in [*prefixes, *names]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(_FILTER)


class RedactingFilter(logging.Filter):
    """Redacts keys from a record's final message, whatever logger or level produced it."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    """Replace the record's message by its redacted text when it quotes a key (its args go:
    a handler dumping them would show the key)."""
    if not _registered:
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: the handler reports it, as logging does
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg = cleaned
        record.args = None


_guarding = False


def guard_records() -> None:
    """Wrap the process's log-record factory (once) so every record is redacted as it is
    made, whatever logger makes it. Called when the first key is registered."""
    global _guarding
    with _lock:
        if _guarding:
            return
        _guarding = True
        made = logging.getLogRecordFactory()

        def redacting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = made(*args, **kwargs)
            if _registered:
                _redact_record(record)
            return record

        logging.setLogRecordFactory(redacting_factory)


_FILTER = RedactingFilter()
