"""Batch progress on stderr: a bar redrawn in place on a terminal, plain lines in a log."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import Protocol, TextIO

from moodlemate.ai.batch import BatchSummary
from moodlemate.ai.cli.common import money

_REDRAW_EVERY = 0.1  # seconds: a fast batch must not spend its time drawing
_BAR_WIDTH = 24


class Writable(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class QuietStream:
    """A text stream (standard error) that a reader who left cannot break.

    A write to a closed pipe (``2>&1 >/dev/null | head -1``) raises BrokenPipeError; in a
    batch worker's progress callback that stopped the whole batch. Here the first failure
    points the stream's file descriptor at /dev/null, so this and every later write (the
    logging module's, the interpreter's final flush) are quietly dropped.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str, /) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self._detach()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._detach()

    def _detach(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._stream.fileno())
            finally:
                os.close(null)
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()  # what was buffered now goes to /dev/null


class ProgressReporter:
    """The ``progress`` callback of :func:`moodlemate.ai.batch.run_batch`."""

    def __init__(self, stream: Writable, *, interactive: bool) -> None:
        self.stream = stream
        self.interactive = interactive
        self._drawn = False
        self._last_draw = 0.0
        self._next_line = 0
        self._noted_interrupt = False

    def __call__(self, summary: BatchSummary) -> None:
        if summary.interrupted and not self._noted_interrupt:
            self._noted_interrupt = True
            self._clear()
            self._print(
                f"interrupted: waiting for {summary.in_flight} request(s) in flight to finish "
                "(Ctrl-C again to abandon them; a rerun sends them again)"
            )
            return
        todo = summary.total - summary.skipped
        if self.interactive:
            now = time.monotonic()
            if summary.calls >= todo or now - self._last_draw >= _REDRAW_EVERY:
                self._last_draw = now
                self._draw(_bar(summary, todo))
        elif summary.calls >= self._next_line or summary.calls >= todo:
            step = max(1, todo // 10)
            self._next_line = (summary.calls // step + 1) * step
            self._print(f"batch: {_counts(summary, todo)}")

    def finish(self) -> None:
        """Remove the bar, so the summary that follows starts on a clean line."""
        self._clear()

    def _draw(self, line: str) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        self.stream.write("\r\x1b[K" + line[: max(width - 1, 10)])
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def _counts(summary: BatchSummary, todo: int) -> str:
    percent = 100 * summary.calls // todo if todo else 100
    failed = f", {summary.failed} failed" if summary.failed else ""
    return (
        f"{summary.calls}/{todo} done ({percent}%){failed} · "
        f"{summary.usage.total_tokens} tokens · {money(summary.known_cost)} · "
        f"{summary.elapsed:.1f}s"
    )


def _bar(summary: BatchSummary, todo: int) -> str:
    fraction = summary.calls / todo if todo else 1.0
    filled = round(fraction * _BAR_WIDTH)
    bar = "#" * filled + "." * (_BAR_WIDTH - filled)
    rate = summary.calls / summary.elapsed if summary.elapsed > 0 else 0.0
    eta = f" · eta {round((todo - summary.calls) / rate)}s" if rate and summary.calls < todo else ""
    return f"[{bar}] {_counts(summary, todo)} · {rate:.1f}/s{eta}"
