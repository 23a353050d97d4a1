"""On/off settings written as text: one set of spellings for every environment variable,
config file and argument, so ``"no"`` never counts as true because it is a non-empty string.

Accepted (case-insensitive, surrounding spaces ignored): ``true/false``, ``yes/no``,
``on/off``, ``1/0``; also a real bool (TOML's ``true``, Python's ``True``) and the ints 1/0.
Anything else is a :class:`~moodlemate.ai.errors.ValidationError` naming the setting and
where it came from.
"""

from __future__ import annotations

from moodlemate.ai.errors import ValidationError

__all__ = ["FALSE_WORDS", "SPELLINGS", "TRUE_WORDS", "is_flag", "parse_flag"]

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
SPELLINGS = "true/false, yes/no, on/off or 1/0"


def is_flag(value: object) -> bool:
    """Whether :func:`parse_flag` would accept ``value``."""
    try:
        parse_flag(value, "")
    except ValidationError:
        return False
    return True


def parse_flag(value: object, name: str) -> bool:
    """``value`` as a bool, or ValidationError naming ``name`` (a setting, a variable, or
    ``file:line: key``)."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
    raise ValidationError(f"{name} must be {SPELLINGS} (any case), not {shown}")
