"""The state file of a remote batch: what was planned, uploaded, submitted and collected.

It sits beside the output (``answers.jsonl.remote.json``) and is rewritten whole, atomically
(temporary file, fsync, rename, fsync of the directory), after every step that the vendor
would remember: a run killed at any instant leaves either the old state or the new one. The
order of steps is what makes a rerun safe:

1. a part is planned (its items, and a random ``token``) and saved before anything is sent;
2. its file is uploaded and the file id saved (a lost id costs only an orphan file);
3. ``creating`` is saved, then the batch is created with the token in its metadata, then
   its id is saved. A run that died between the two finds the batch by its token instead
   of creating another: no part is ever submitted twice;
4. once the batch has ended, its output and error files are downloaded (resumably) and
   their results appended to the output; then its cost is settled against the budget (once
   per batch id, :mod:`moodlemate.ai.batch.remote_budget`) and the part is marked
   ``settled`` and ``collected``.

With a budget, step 1 is followed by the reservation of the part's worst case, saved
(``reserved``, the store's ``reservation`` id and its ``period``) before the upload.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from moodlemate.ai.batch.items import ItemId
from moodlemate.ai.batch.results import BatchOutputError

__all__ = ["FORMAT", "Part", "RemoteState", "state_path"]

FORMAT = "moodlemate-ai/remote-batch/1"


def state_path(output: str | os.PathLike[str]) -> str:
    return os.fspath(output) + ".remote.json"


@dataclass
class Part:
    """One input file and the batch created from it."""

    model: str
    """The items' model as the input names it (``provider:model`` routes included)."""
    ids: list[ItemId]
    endpoint: str | None = None
    """The service endpoint of its requests (one per batch); None: the service's default
    (and every part planned before batches had more than one)."""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    file_id: str | None = None
    creating: bool = False
    """A create request may have been sent: look the batch up by token before another."""
    batch_id: str | None = None
    status: str = "planned"
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    """Which of the batch's files ("output", "error") are fully on disk."""
    collected: bool = False
    reserved: str | None = None
    """The worst case held against the budget (dollars), None when nothing was held."""
    reservation: int | None = None
    """The shared budget store's id of that hold."""
    period: str | None = None
    """The shared budget's period the hold and the cost belong to."""
    cost: str | None = None
    """What the part's answers count against the budget at batch prices, once collected
    (dollars): their known costs, and for answers of unknown cost what they are charged."""
    settled: bool = False
    """The cost was charged to the budget (exactly once, keyed by the batch id)."""

    @property
    def live(self) -> bool:
        return not self.collected


class RemoteState:
    """The parts of one output's remote batches, saved to ``path`` on every change."""

    def __init__(self, path: str, parts: list[Part]) -> None:
        self.path = path
        self.parts = parts

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RemoteState:
        """The saved state, or an empty one when there is none yet."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as file:
                data = json.load(file)
        except FileNotFoundError:
            return cls(path, [])
        except (ValueError, RecursionError):
            raise BatchOutputError(
                f"{path} is not a remote batch state file (not JSON); it records which "
                "batches were submitted: restore it, or move it away to start over"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BatchOutputError(f"{path} is not a remote batch state file ({FORMAT})")
        try:
            parts = [Part(**raw) for raw in data["parts"]]
        except (KeyError, TypeError) as exc:
            raise BatchOutputError(f"{path}: damaged remote batch state ({exc})") from None
        return cls(path, parts)

    def save(self) -> None:
        data: dict[str, Any] = {"format": FORMAT, "parts": [asdict(p) for p in self.parts]}
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        temporary = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        _fsync_directory(os.path.dirname(os.path.abspath(self.path)))

    def download_path(self, part: Part, kind: str) -> str:
        """Where a batch's output or error file is downloaded to (beside the state)."""
        return f"{self.path}.{part.token}.{kind}.part"

    def submitted_ids(self) -> set[ItemId]:
        """Ids in a part that has not been collected yet: not to be sent again."""
        return {item_id for part in self.parts if part.live for item_id in part.ids}

    def ever_submitted(self) -> set[ItemId]:
        return {item_id for part in self.parts for item_id in part.ids}


def _fsync_directory(path: str) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
