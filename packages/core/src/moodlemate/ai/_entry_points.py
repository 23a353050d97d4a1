"""The plugin entry points of one group, remembered between processes.

``importlib.metadata`` finds entry points by reading every installed distribution's metadata:
importing it and scanning cost 35 to 75 ms at each process start on a loaded machine, more
than the rest of a first call. What it finds changes only when a distribution is installed
or removed, and that changes the modification time of the folder on ``sys.path`` it lands in
(its ``.dist-info`` folder comes or goes). So the result is kept in the user's cache folder
under the ``sys.path`` folders and their modification times, and scanned again when any of
them differs. The file keeps the last scans of a few interpreters and ``sys.path`` layouts
(several virtualenvs, a script's folder first on the path), so processes of different ones
taking turns do not each scan again. A cache that cannot be read or written is no cache: the
scan runs as before.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Found", "discover", "load"]

_VERSION = 2
_KEPT = 16
"""Scans kept, the newest last: one per interpreter, ``sys.path`` and group in use."""


@dataclass(frozen=True, slots=True)
class Found:
    """One entry point: its name, ``module:attr`` value, and the distribution that has it."""

    name: str
    value: str
    package: str | None
    version: str | None


def load(found: Found) -> Any:
    """What the entry point names (as ``EntryPoint.load``: ``module`` or ``module:attr.sub``)."""
    module_name, _, attrs = found.value.partition(":")
    target: Any = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.strip().split(".")):
        target = getattr(target, attr)
    return target


def discover(group: str, *, fresh: bool = False) -> list[Found]:
    """The group's entry points, from the cache when the installed set has not changed."""
    key = _key(group)
    path = _cache_file()
    if not fresh and path is not None:
        cached = _read(path, key)
        if cached is not None:
            return cached
    found = _scan(group)
    if path is not None:
        _write(path, key, found)
    return found


def _scans(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    scans = data.get("scans") if isinstance(data, dict) else None
    return scans if isinstance(scans, dict) else {}


def _scan(group: str) -> list[Found]:
    from importlib.metadata import entry_points

    return [
        Found(
            ep.name,
            ep.value,
            ep.dist.name if ep.dist else None,
            ep.dist.version if ep.dist else None,
        )
        for ep in entry_points(group=group)
    ]


def _key(group: str) -> str:
    """The group, the interpreter, and each ``sys.path`` entry with its modification time.

    The current folder (``""``, ``python -c`` and the REPL) is left out: files come and go
    there all day, and nobody installs a distribution into it."""
    parts = [str(_VERSION), group, sys.executable, sys.version]
    here = os.getcwd()
    for folder in sys.path:
        if not folder or folder == here:
            continue
        try:
            parts.append(f"{folder}\0{os.stat(folder).st_mtime_ns}")
        except OSError:
            parts.append(f"{folder}\0-")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def _cache_file() -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None
    return Path(base) / "moodlemate-ai" / "entry-points.json"


def _read(path: Path, key: str) -> list[Found] | None:
    rows = _scans(path).get(key)
    if rows is None:
        return None
    try:
        return [
            Found(str(name), str(value), _text(package), _text(version))
            for name, value, package, version in rows
        ]
    except (ValueError, TypeError):  # ValueError: also a short row
        return None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _write(path: Path, key: str, found: list[Found]) -> None:
    scans = _scans(path)
    scans.pop(key, None)
    scans[key] = [[f.name, f.value, f.package, f.version] for f in found]
    kept = dict(list(scans.items())[-_KEPT:])  # another process's write may be lost: a rescan
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps({"scans": kept}), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        pass
