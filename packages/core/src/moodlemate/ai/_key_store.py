"""Keys a user stored with ``moodlemate-ai keys set``: one per provider, in a file of the
user's own that only they can read (``$XDG_CONFIG_HOME/moodlemate-ai/keys.json``, mode 0600).

A stored key ranks below a key given in code (or ``--key``) and below the environment, and
goes where the provider's own variable may go: the provider's own service over https, or the
endpoint its base-URL variable names (see :mod:`moodlemate.ai._credentials`). It is read when
a call needs it, at the cost of one ``stat`` while the file is unchanged.

With the ``keyring`` package installed, ``keys set --keyring`` keeps the key in the operating
system's keyring instead, and the file records only that it is there.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import uuid
from pathlib import Path
from typing import Any

from moodlemate.ai._secrets import register_secret

__all__ = [
    "KEYRING_SERVICE",
    "delete_key",
    "keys_path",
    "read_entries",
    "stored_key",
    "write_key",
]

log = logging.getLogger("moodlemate.ai._key_store")

KEYRING_SERVICE = "moodlemate-ai"
_IN_KEYRING = {"keyring": True}
_lock = threading.Lock()
_cache: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
_warned: set[Path] = set()


def keys_path(environ: Any = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "moodlemate-ai" / "keys.json"


def read_entries(path: Path | None = None) -> dict[str, Any]:
    """The file's ``{provider: key or {"keyring": true}}``; empty when there is none, when it
    is not ours alone (another user could have planted or read it) or when it is unreadable."""
    path = path or keys_path()
    try:
        st = path.stat()
    except OSError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size, st.st_mode)
    cached = _cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    entries: dict[str, Any] = {}
    if os.name == "posix" and (
        st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or st.st_uid != os.getuid()
    ):
        if path not in _warned:
            _warned.add(path)
            log.warning("ignoring %s: it must be yours and private (chmod 600)", path)
    else:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", path, type(exc).__name__)
            data = {}
        if isinstance(data, dict):
            entries = {k: v for k, v in data.items() if isinstance(k, str) and _valid(v)}
    with _lock:
        _cache[path] = (stamp, entries)
    return entries


def _valid(value: object) -> bool:
    return (isinstance(value, str) and bool(value)) or value == _IN_KEYRING


def stored_key(provider: str) -> str | None:
    """The key stored for ``provider``, or None."""
    value = read_entries().get(provider)
    if value is None:
        return None
    key = _from_keyring(provider) if value == _IN_KEYRING else value
    register_secret(key)
    return key


def _from_keyring(provider: str) -> str | None:
    try:
        import keyring  # type: ignore[import-not-found,unused-ignore]  # the [keyring] extra
    except ImportError:
        log.warning("the key for %s is in the OS keyring, but keyring is not installed", provider)
        return None
    try:
        value = keyring.get_password(KEYRING_SERVICE, provider)
    except Exception as exc:
        kind = type(exc).__name__
        log.warning("cannot read the key for %s from the keyring (%s)", provider, kind)
        return None
    return value if isinstance(value, str) and value else None


def write_key(provider: str, key: str, *, use_keyring: bool = False) -> Path:
    """Store ``key`` for ``provider`` (atomically; the file 0600 in a 0700 directory)."""
    path = keys_path()
    if use_keyring:
        import keyring  # type: ignore[import-not-found,unused-ignore]

        keyring.set_password(KEYRING_SERVICE, provider, key)
    _write_entries(path, {**_raw(path), provider: dict(_IN_KEYRING) if use_keyring else key})
    return path


def delete_key(provider: str) -> bool:
    """Forget ``provider``'s key (from the keyring too); False when none was stored."""
    path = keys_path()
    entries = _raw(path)
    value = entries.pop(provider, None)
    if value is None:
        return False
    if value == _IN_KEYRING:
        try:
            import keyring  # type: ignore[import-not-found,unused-ignore]

            keyring.delete_password(KEYRING_SERVICE, provider)
        except Exception as exc:
            log.warning("could not remove %s's key from the keyring (%s)", provider, exc)
    _write_entries(path, entries)
    return True


def _raw(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def _write_entries(path: Path, entries: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(entries, file, indent=2, sort_keys=True)
            file.write("\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
