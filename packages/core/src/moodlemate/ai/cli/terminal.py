"""What the command prints from strings a server or a model chose (reply text, model names,
error messages, logged prompts) passes :func:`safe` first: an ESC or another control byte
could otherwise drive the terminal (move the cursor, retitle the window, write the
clipboard through OSC 52, hide text). Each one is shown as a visible escape instead."""

from __future__ import annotations

import logging
import re
from typing import TextIO

__all__ = ["SafeFormatter", "is_terminal", "safe", "safe_for"]

# C0 controls except tab and newline, DEL, and the C1 controls (U+0080-U+009F: 8-bit CSI and
# OSC among them). Also the bidirectional overrides and isolates, which reorder what is shown.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str) -> str:
    """``text`` with every control character but tab and newline made visible (``\\x1b``)."""
    return _CONTROL.sub(_visible, text)


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def safe_for(stream: TextIO, text: str) -> str:
    """``text`` as it may be written to ``stream``: made safe on a terminal, left whole for a
    pipe or a file (where it is data, not a display)."""
    return safe(text) if is_terminal(stream) else text


class SafeFormatter(logging.Formatter):
    """The command's log lines (a retry warning quotes the server's error message, a
    traceback its reply) with control characters made visible, as every other line."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self._inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return safe(self._inner.format(record))
