"""Data files shipped inside this package (prices, BPE files), read without
``importlib.resources`` when the package lies on disk as plain files.

``importlib.resources`` imports ``tempfile``, ``shutil`` and ``zipfile`` (5 to 10 ms of a
process's start) to cover packages inside zip archives; those still take that path.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["read_package_bytes"]

_HERE = Path(__file__).parent


def read_package_bytes(*parts: str) -> bytes:
    """The bytes of the shipped file at ``parts`` below this package (OSError if unreadable)."""
    path = _HERE.joinpath(*parts)
    if _HERE.is_dir():
        return path.read_bytes()
    from importlib.resources import files  # a zipped install

    return files(__package__).joinpath(*parts).read_bytes()
