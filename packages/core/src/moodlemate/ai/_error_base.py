"""The root of the error hierarchy and ValidationError, in a leaf module: the message model
(parts, options) raises ValidationError while the rest of :mod:`moodlemate.ai.errors` names
the call's values, so the two live apart and neither imports the other in a cycle. Users
import both from :mod:`moodlemate.ai.errors` (or :mod:`moodlemate.ai`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moodlemate.ai._secrets import redact

if TYPE_CHECKING:
    from moodlemate.ai._failed_entry import FailedEntry

__all__ = ["MoodlemateError", "ValidationError"]


class MoodlemateError(Exception):
    """Base of every error this library raises on purpose."""

    failed_before: tuple[FailedEntry, ...] = ()
    """With fallbacks: the entries that failed before the one that raised this."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    __module__ = "moodlemate.ai.errors"


class ValidationError(MoodlemateError, ValueError):
    """Bad input caught before anything is sent."""

    __module__ = "moodlemate.ai.errors"
