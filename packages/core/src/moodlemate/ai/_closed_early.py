"""What counts as a call or run closed early rather than failed: the user stopped reading
(``close()``, ``break``, leaving a ``with`` block: ``GeneratorExit``), the task was cancelled
(``CancelledError``) or the process interrupted (``KeyboardInterrupt``).

One definition for everything that reports an outcome, so the spend log's ``cancelled`` row,
the hooks and the OpenTelemetry spans agree on it.
"""

from __future__ import annotations

__all__ = ["closed_early"]

_CLOSED = ("GeneratorExit", "CancelledError", "KeyboardInterrupt")


def closed_early(error: BaseException | None) -> bool:
    """Whether ``error`` is an early close or a cancellation, not a failure."""
    return error is not None and type(error).__name__ in _CLOSED
