"""The batch output file: an append-only JSONL log of results that a rerun resumes from.

Durability rules, because the point of the file is that nothing answered is ever paid for
twice:

- every result is one ``write()`` of a whole line, then ``fsync``, under a lock, before the
  next result is taken: after a crash the file holds every result that was reported done;
- a line cut short (the process was killed or the machine lost power mid-write) can only be
  the last one; opening the log detects it and truncates it, so appends never glue a new
  record onto a torn one. Damage anywhere else is refused, not silently skipped;
- a write that fails part-way (a full disk: ENOSPC) is cut back to the last complete line
  before anything else is written, so later results never land after a fragment;
- the output must be a regular file: a device (``/dev/full``, ``/dev/zero``) or a pipe cannot
  be resumed from, and reading ``/dev/zero`` for its lines would never end;
- the file is locked (``flock``) while a run has it open, so two runs cannot answer the same
  ids into it at once.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from moodlemate.ai._completion_json import completion_fields, usage_fields
from moodlemate.ai._secrets import redact
from moodlemate.ai._usage import Usage
from moodlemate.ai.errors import (
    MoodlemateError,
    ProviderError,
    ReplyError,
    StructuredOutputError,
    ValidationError,
)

if TYPE_CHECKING:
    from moodlemate.ai._provider import Completion
    from moodlemate.ai._structured import TypedCompletion
    from moodlemate.ai.batch.items import BatchItem

__all__ = ["BatchOutputError", "ResultLog", "failure_record", "success_record"]


class BatchOutputError(ValidationError):
    """The output file cannot be resumed from: damaged, not a batch output, or in use."""


class ResultLog:
    """An open output file: ``answered`` holds the ids with a successful result in it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.answered: set[Any] = set()
        self.dropped_bytes = 0
        """Size of the torn last line removed on open (0 when the file was intact)."""
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._end = 0
        """Length of the file's complete lines: what a failed write is cut back to."""
        self._broken: OSError | None = None
        try:
            _require_regular_file(self._fd, self.path)
            _lock_exclusively(self._fd, self.path)
            self._recover()
            self._end = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            raise

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as a JSON line and make it durable before returning.

        If the write fails part-way (a full disk), the fragment is cut off again before the
        error is raised, so the file keeps only complete lines."""
        self.write_many((record,))

    def write_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records with one write and one fsync: for results that arrive together
        (a downloaded batch file), where an fsync per line would dominate the run."""
        if not records:
            return
        data = b"".join(
            (json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            for r in records
        )
        with self._lock:
            if self._broken is not None:
                raise self._broken
            try:
                view = memoryview(data)
                while view:
                    view = view[self._write_some(view) :]
                os.fsync(self._fd)
            except OSError:
                self._cut_back()
                raise
            self._end += len(data)
            for record in records:
                self._note(record)

    def _write_some(self, data: memoryview) -> int:
        """One ``write(2)`` of ``data``: the bytes written (a full disk may take only some)."""
        return os.write(self._fd, data)

    def _cut_back(self) -> None:
        """Remove whatever a failed write left after the last complete line; if even that
        fails, refuse every later write rather than append after a fragment."""
        try:
            os.ftruncate(self._fd, self._end)
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = exc

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # also releases the flock
                self._fd = -1

    def __enter__(self) -> ResultLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _recover(self) -> None:
        """Read the existing results; truncate a torn last line; refuse damage elsewhere."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        keep = 0  # bytes of intact lines from the start: what survives
        damaged = 0  # number of the first line that is not a result, if any
        missing_newline = False
        with os.fdopen(os.dup(self._fd), "rb") as file:  # streamed: outputs can be large
            for number, line in enumerate(file, 1):
                if damaged:
                    if line.strip():
                        raise BatchOutputError(
                            f"{self.path}:{damaged}: not a batch result line; the file is "
                            "damaged or is not a batch output (repair it, or choose another "
                            "output file)"
                        )
                    continue
                record = _parse(line) if line.strip() else {}
                if record is None:
                    damaged = number  # a torn write if nothing follows it
                    continue
                self._note(record)
                keep += len(line)
                missing_newline = not line.endswith(b"\n")
            size = file.tell()
        if keep < size:
            self.dropped_bytes = size - keep
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
        elif missing_newline:  # an intact last record that only lacks its newline
            os.write(self._fd, b"\n")

    def _note(self, record: Mapping[str, Any]) -> None:
        if record.get("ok") is True:
            self.answered.add(record["id"])


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or "ok" not in record:
        return None
    item_id = record.get("id")
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        return None
    return record


def _require_regular_file(fd: int, path: str) -> None:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        kind = (
            "a character device"
            if stat.S_ISCHR(mode)
            else "a pipe"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise BatchOutputError(
            f"{path} is {kind}; the output must be a regular file (results are appended to it"
            " and a rerun resumes from it)"
        )


if sys.platform == "win32":  # pragma: no cover - no flock; concurrent runs are not detected

    def _lock_exclusively(fd: int, path: str) -> None:
        pass

else:
    import fcntl

    def _lock_exclusively(fd: int, path: str) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchOutputError(
                f"{path} is in use by another batch run; wait for it or choose another output"
            ) from None


def success_record(
    item: BatchItem, completion: Completion, seconds: float | None
) -> dict[str, Any]:
    """The output line of an answered item: the same for local and remote batches."""
    fields = completion_fields(completion)
    request_id = fields.pop("request_id")
    return {
        "id": item.id,
        "ok": True,
        **fields,
        "seconds": seconds,
        "request_id": request_id,
        "error": None,
    }


def typed_record(
    item: BatchItem, typed: TypedCompletion[Any], seconds: float | None
) -> dict[str, Any]:
    """A line with a schema: its checked ``answer``, the ``replies`` it took, and their summed
    usage and cost."""
    record = success_record(item, typed.completion, seconds)
    record["usage"] = usage_fields(typed.usage)
    record["cost"] = None if typed.cost is None else format(typed.cost, "f")
    record["answer"] = typed.parsed
    record["replies"] = typed.attempts
    return record


def failure_record(
    item: BatchItem, error: Exception | None, seconds: float | None
) -> dict[str, Any]:
    """The output line of an item without an answer; ``error`` says why."""
    described: dict[str, Any] = {
        "type": type(error).__name__,
        "message": error.message if isinstance(error, MoodlemateError) else redact(str(error)),
    }
    if isinstance(error, ProviderError):
        described.update(
            status=error.status_code,
            code=error.code,
            retryable=error.retryable,
            request_id=error.request_id,
        )
    if isinstance(error, StructuredOutputError):
        described["problems"] = [list(problems) for problems in error.problems]
    paid = error.completion if isinstance(error, ReplyError) else None
    replies = getattr(error, "completions", None) or ((paid,) if paid is not None else ())
    usage = sum((reply.usage for reply in replies), Usage())
    costs = [reply.cost for reply in replies]
    known = [c for c in costs if c is not None]
    cost = sum(known, Decimal(0)) if costs and len(known) == len(costs) else None
    return {
        "id": item.id,
        "ok": False,
        "text": None,
        "model": item.model if paid is None else paid.model,
        "usage": None if paid is None else usage_fields(usage),
        "cost": None if cost is None else format(cost, "f"),
        "attempts": getattr(error, "attempts", 1),
        "seconds": seconds,
        "error": described,
    }
