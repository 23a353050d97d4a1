"""The command line's conversations, kept between runs so a shell session can go on.

Each is a :meth:`Conversation.to_json` document in ``$XDG_DATA_HOME/moodlemate-ai/
conversations/NAME.json`` (``~/.local/share`` when XDG_DATA_HOME is unset). A plain ``chat``
starts the conversation ``last`` afresh; ``--conversation NAME`` goes on with NAME (creating
it); ``-c`` goes on with whichever was used most recently, whose name ``CURRENT`` holds.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.exits import EXIT_USAGE

if TYPE_CHECKING:
    from moodlemate.ai._gpt import GPT

__all__ = [
    "LAST",
    "conversation_dir",
    "current",
    "link_to_log",
    "load_text",
    "name_type",
    "save",
]

LAST = "last"
"""The conversation a plain ``chat`` (no -c, no --conversation) starts afresh."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CURRENT = "CURRENT"


def name_type(text: str) -> str:
    """argparse type: a name that is also a safe file name."""
    import argparse

    if not _NAME.fullmatch(text) or text.endswith(".json"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return text


def conversation_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "moodlemate-ai" / "conversations"


def current() -> str:
    """The most recently used conversation; a usage error when there is none yet."""
    try:
        name = (conversation_dir() / _CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        name = ""
    except OSError as exc:
        raise CommandError(f"cannot read {conversation_dir()}: {exc.strerror or exc}") from None
    if not _NAME.fullmatch(name) or not (conversation_dir() / f"{name}.json").is_file():
        raise CommandError(
            "no conversation to continue: start one with `moodlemate-ai chat PROMPT`", EXIT_USAGE
        )
    return name


def load_text(name: str) -> str | None:
    """The stored document of ``name``; None when it does not exist yet."""
    path = conversation_dir() / f"{name}.json"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None


def save(name: str, document: str) -> Path:
    """Store ``document`` as ``name`` (atomically) and make it the current conversation."""
    directory = conversation_dir()
    path = directory / f"{name}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(path, document + "\n")
        _write(directory / _CURRENT, name + "\n")
    except OSError as exc:
        raise CommandError(f"cannot save the conversation in {directory}: {exc}") from None
    return path


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def link_to_log(gpt: GPT, name: str) -> None:
    """Mark the call just made as a turn of ``name`` in the spend log (``logs --cid``); a
    log that cannot be written loses only the mark, never the turn."""
    import logging
    import sqlite3

    completion = gpt.last_result
    if gpt.log is None or completion is None:
        return
    from moodlemate.ai._spend_search import link_conversation

    try:
        link_conversation(gpt.log.path, name, completion.request_id, completion.text)
    except (sqlite3.Error, OSError) as exc:
        logging.getLogger(__name__).warning("could not mark the call in the log: %s", exc)
