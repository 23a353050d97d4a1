"""JSON that servers send, parsed by orjson when the ``fast`` extra installed it.

Why: a reply is one document, but a stream is one per chunk, and the standard library took
about 5 us per chunk where orjson takes 1 us: on a 100-delta stream that was two fifths of
our time (see bench/RESULTS.md). It is optional, so a plain install keeps its footprint.

The two parsers must not disagree on what a server sent. orjson refuses documents the
standard library reads (``NaN``, lone surrogates, bytes in UTF-16), so a document orjson
refuses is parsed again by ``json``. One reading differs and is left so: an integer beyond
64 bits comes out of orjson as a float (``json`` keeps it exact). Every number the library
reads from a reply is a count, an index or a timestamp, taken through ``int()`` and bounded
(a count beyond 2**64 is implausible either way, and judged so); screening every document
for such a run of digits cost more than orjson saves on a stream chunk. What ``json``
refuses raises as it always did (``ValueError``, or ``RecursionError`` when nested too deep).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["json_loads", "parser"]


def json_loads(data: str | bytes) -> Any:
    """What ``json.loads(data)`` returns (text or UTF-8 bytes), faster with orjson."""
    return (_loads or _pick())(data)


def parser() -> str:
    """The parser in use: "orjson" (the ``fast`` extra) or "json"."""
    if _loads is None:
        _pick()
    return _name


_loads: Callable[[str | bytes], Any] | None = None
_name = "json"


def _pick() -> Callable[[str | bytes], Any]:
    """Chosen at the first parse, not at import: importing orjson is not free."""
    global _loads, _name
    try:
        import orjson  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        _loads = json.loads
        return _loads
    fast, refused, standard = orjson.loads, orjson.JSONDecodeError, json.loads

    def loads(data: str | bytes) -> Any:
        try:
            return fast(data)
        except refused:
            return standard(data)

    _loads, _name = loads, "orjson"
    return loads
