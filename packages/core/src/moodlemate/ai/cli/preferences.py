"""The command line's own preferences, kept between runs in one private JSON file of the user's
(``$XDG_CONFIG_HOME/moodlemate-ai/cli.json``): the default model, model aliases, saved
templates, and whether calls are logged. The library never reads it; keys live apart
(:mod:`moodlemate.ai._key_store`)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from moodlemate.ai.cli.exits import CommandError

__all__ = ["config_dir", "load", "preferences_path", "save"]


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "moodlemate-ai"


def preferences_path() -> Path:
    return config_dir() / "cli.json"


def load() -> dict[str, Any]:
    """The stored preferences; empty when there are none yet."""
    path = preferences_path()
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError(f"cannot read {path}: not a JSON object")
    return data


def save(data: dict[str, Any]) -> Path:
    """Replace the stored preferences atomically (0600 in a 0700 directory)."""
    path = preferences_path()
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2, sort_keys=True)
            file.write("\n")
        os.replace(temporary, path)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def section(name: str) -> dict[str, Any]:
    """One table of the preferences (``aliases``, ``templates``), empty when absent."""
    value = load().get(name)
    return dict(value) if isinstance(value, dict) else {}


def update(name: str, value: Any) -> Path:
    """Set one top-level preference (None removes it)."""
    data = load()
    if value is None:
        data.pop(name, None)
    else:
        data[name] = value
    return save(data)


def logging_off() -> bool:
    """``moodlemate-ai logs off`` was run (and ``logs on`` not since)."""
    return load().get("log") is False
