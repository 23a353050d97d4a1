"""One entry of a fallback chain that did not serve a call: plain data, in a leaf module so
the error hierarchy can name it without importing the call's other values."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FailedEntry"]


@dataclass(frozen=True, slots=True)
class FailedEntry:
    """One entry of a chain that did not serve the call, and why (no key, no message body)."""

    model: str
    """The entry as given: ``gpt-4o`` or ``openrouter:openai/gpt-4o``."""
    provider: str
    """The provider the entry went to (or would have)."""
    error: str
    """The error's class name, e.g. ``ServerError``."""
    message: str
    """The error's message (redacted, like every error message)."""
    status_code: int | None = None
    attempts: int = 0
    """Requests sent to this entry (0: refused before sending, e.g. a context window)."""
    elapsed: float = 0.0
    """Seconds spent on this entry, retry waits included."""
