"""``dataclasses.replace`` for the values every call copies (its request, connection, call and
completion).

``replace`` reads the class's fields and runs ``__init__`` on each copy: a few microseconds
that the call path pays several times per call. A class marked :func:`plain` (a dataclass
whose ``__init__`` only stores its fields) is copied by :func:`evolved` field for field,
from its field names read once; anything else, a subclass of such a class included (its
``__init__`` may do more), and a change naming no field, goes through ``replace`` itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["evolved", "plain"]

D = TypeVar("D")
C = TypeVar("C", bound=type)

_plain: dict[type, frozenset[str]] = {}
"""The classes marked :func:`plain`, with their field names."""
_new = object.__new__
_set = object.__setattr__  # as a frozen dataclass's own __init__ stores its fields


def plain(cls: C) -> C:
    """Mark the dataclass ``cls`` as copied field for field by :func:`evolved` (outermost
    decorator). Refused, when the module is imported, where ``__init__`` does more than
    store what it is given: a ``__post_init__``, a field it does not take, an ``InitVar``."""
    own = vars(cls).get("__dataclass_fields__")
    fields = dataclasses.fields(cls) if own is not None else ()
    if (
        own is None
        or hasattr(cls, "__post_init__")
        or not all(field.init for field in fields)
        or len(fields) != len(own)
    ):
        raise TypeError(f"{cls.__qualname__} is not a plain dataclass: copy it with replace")
    _plain[cls] = frozenset(field.name for field in fields)
    return cls


def evolved(value: D, **changes: Any) -> D:
    """``dataclasses.replace(value, **changes)``, for a dataclass instance ``value``."""
    cls = type(value)
    names = _plain.get(cls)
    if names is None or not changes.keys() <= names:
        return dataclasses.replace(value, **changes)  # type: ignore[type-var]
    copy: D = _new(cls)
    for name in names:
        _set(copy, name, changes[name] if name in changes else getattr(value, name))
    return copy
