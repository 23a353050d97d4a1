"""Which project-local config files (``./moodlemate.toml``) the user has trusted.

A project-local file arrives with a cloned repository, like a ``.envrc`` or a
``.git/config``: it is untrusted input until the user says otherwise. Like direnv's
``allow``, the trust is given to one file's content: the allow list holds its resolved path
and the SHA-256 of its bytes, so an edited file (a ``git pull``) is untrusted again until
trusted again. The list lives in the user's config directory, written private (0600), and is
ignored when others can write it. ``MOODLEMATE_TRUST_PROJECT_CONFIG=1`` trusts whatever
project file is present, for CI jobs that check out their own repository.

What an untrusted file may not do is decided in :mod:`moodlemate.ai._config`; this module
only answers "is it trusted" and keeps the list.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from moodlemate.ai._flags import parse_flag
from moodlemate.ai.errors import ConfigurationError

__all__ = [
    "TRUST_COMMAND",
    "TRUST_ENV",
    "allow_list_path",
    "digest",
    "is_trusted",
    "trust",
    "untrust",
]

log = logging.getLogger("moodlemate.ai")

TRUST_ENV = "MOODLEMATE_TRUST_PROJECT_CONFIG"
TRUST_COMMAND = "moodlemate-ai config trust"
_ALLOW_LIST = Path("moodlemate-ai") / "trusted-projects"
_HEADER = (
    "# Project-local moodlemate.toml files trusted with `moodlemate-ai config trust`:\n"
    "# sha256=<hash of the file's bytes> <resolved path>. An edited file is untrusted again.\n"
)


def allow_list_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/moodlemate-ai/trusted-projects`` (``~/.config/...`` by default)."""
    xdg = environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(xdg) / _ALLOW_LIST


def digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def is_trusted(resolved: Path, sha256: str, environ: Mapping[str, str]) -> bool:
    """Whether the project file at ``resolved`` (an absolute path without links) with
    content hash ``sha256`` is trusted."""
    flag = environ.get(TRUST_ENV)
    if flag is not None and flag.strip() and parse_flag(flag, TRUST_ENV):
        return True
    return (sha256, str(resolved)) in _entries(allow_list_path(environ))


def trust(path: Path, environ: Mapping[str, str]) -> tuple[Path, str]:
    """Add ``path``'s current content to the allow list (replacing an older hash of it);
    returns the resolved path and the hash."""
    resolved, sha256 = _identify(path)
    entries = [e for e in _entries(allow_list_path(environ)) if e[1] != str(resolved)]
    _write(allow_list_path(environ), [*entries, (sha256, str(resolved))])
    return resolved, sha256


def untrust(path: Path, environ: Mapping[str, str]) -> bool:
    """Remove ``path`` (any content) from the allow list; False when it was not on it."""
    resolved = path.expanduser().resolve()
    entries = _entries(allow_list_path(environ))
    kept = [e for e in entries if e[1] != str(resolved)]
    if len(kept) == len(entries):
        return False
    _write(allow_list_path(environ), kept)
    return True


def _identify(path: Path) -> tuple[Path, str]:
    resolved = path.expanduser().resolve()
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    return resolved, digest(data)


def _entries(allow_list: Path) -> list[tuple[str, str]]:
    """(hash, path) pairs; none when the list is missing or others could have written it."""
    try:
        st = allow_list.stat()
        text = allow_list.read_text("utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("ignoring the trusted-projects list %s: %s", allow_list, exc)
        return []
    if os.name == "posix" and (
        st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_uid != os.getuid()
    ):
        log.warning(
            "ignoring the trusted-projects list %s: it is writable by others or not yours "
            "(chmod 600 it, or delete it and trust again)",
            allow_list,
        )
        return []
    entries = []
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if head.startswith("sha256=") and rest:
            entries.append((head.removeprefix("sha256="), rest))
    return entries


def _write(allow_list: Path, entries: list[tuple[str, str]]) -> None:
    """Replace the list atomically, private to the user (0600 in a 0700 directory)."""
    allow_list.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = allow_list.with_name(f".{allow_list.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            if os.name == "posix":
                os.fchmod(out.fileno(), 0o600)
            out.write(_HEADER + "".join(f"sha256={h} {p}\n" for h, p in entries))
        os.replace(temporary, allow_list)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
