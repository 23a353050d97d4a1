"""Asking again, live, the lines of a remote batch whose reply did not match their schema.

A batch cannot converse: a reply that does not parse or validate stays as it is. With
``reask`` the remote runner hands each such line here once its batch is collected: the line
goes on as a live typed call would after that reply (the reply and what was wrong with it are
sent back, and the model is asked again), so the batch's reply counts as the first of the
line's 3 replies and is not paid for twice. Every live attempt is a normal call: reserved
against the budget, retried, logged and in the ledger. Its record replaces the failed one
(``"ok": true`` with ``answer``, ``replies`` and the summed cost of every reply, the batch's
at batch prices and the others at standard prices), or is a failed record with each reply's
problems.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from moodlemate.ai._answer_schema import answer_schema
from moodlemate.ai._structured import run_typed
from moodlemate.ai.batch.results import failure_record, typed_record
from moodlemate.ai.batch.runner import TYPED_ATTEMPTS, BatchSummary
from moodlemate.ai.errors import (
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    InvalidAPIKeyError,
    QuotaExceededError,
    ReplyError,
)

if TYPE_CHECKING:
    from moodlemate.ai._call_types import Completion
    from moodlemate.ai._gpt import GPT
    from moodlemate.ai.batch.items import BatchItem
    from moodlemate.ai.batch.results import ResultLog

__all__ = ["Wrong", "reask"]

Wrong = tuple["BatchItem", "Completion", tuple[str, ...]]
"""A line, its batch reply, and what was wrong with that reply."""

_STOPS = (
    ConfigurationError,
    InvalidAPIKeyError,
    AuthenticationError,
    QuotaExceededError,
    BudgetExceededError,
)


def reask(gpt: GPT, lines: Sequence[Wrong], log: ResultLog, concurrency: int) -> BatchSummary:
    """Ask each line again from its batch reply on; write each result to ``log``. The
    summary counts the live attempts only (the batch replies are in the remote summary);
    an error no other line escapes (no budget left, a bad key) stops taking lines."""
    run = _Reask(gpt, log, len(lines))
    if not lines:
        return run.summary
    with ThreadPoolExecutor(min(concurrency, len(lines)), "moodlemate-reask") as pool:
        futures = [pool.submit(run.ask, *line) for line in lines]
        try:
            for future in futures:
                future.result()
        except BaseException:
            run.stop.set()  # Ctrl-C or a failed write: the lines not begun are not asked
            raise
    run.summary.elapsed = time.monotonic() - run.started
    return run.summary


class _Reask:
    def __init__(self, gpt: GPT, log: ResultLog, total: int) -> None:
        self.gpt = gpt
        self.log = log
        self.summary = BatchSummary(total=total, skipped=0)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def ask(self, item: BatchItem, reply: Completion, problems: tuple[str, ...]) -> None:
        if self.stop.is_set():
            return
        assert item.schema is not None
        started = time.monotonic()
        try:
            typed = run_typed(
                self.gpt,
                item.request(),
                answer_schema(item.schema),
                TYPED_ATTEMPTS,
                earlier=(reply, problems),
            )
        except Exception as exc:  # recorded in the output, never dropped
            seconds = round(time.monotonic() - started, 3)
            self.log.write(failure_record(item, exc, seconds))
            self._count(False, _live_replies(exc, reply), exc)
            return
        seconds = round(time.monotonic() - started, 3)
        self.log.write(typed_record(item, typed, seconds))
        self._count(True, typed.completions[1:], None)

    def _count(self, ok: bool, live: Sequence[Completion], error: Exception | None) -> None:
        with self.lock:
            summary = self.summary
            if ok:
                summary.succeeded += 1
            else:
                summary.failed += 1
            for completion in live:
                summary.usage = summary.usage + completion.usage
                if completion.cost is None:
                    summary.unpriced += 1
                else:
                    summary.cost += completion.cost
            if isinstance(error, _STOPS) and summary.stopped_by is None:
                summary.stopped_by = error
                self.stop.set()


def _live_replies(error: Exception, reply: Completion) -> list[Completion]:
    """The replies a failed re-ask was billed for live (not the batch's)."""
    if not isinstance(error, ReplyError):
        return []
    paid: Any = getattr(error, "completions", None) or (error.completion,)
    return [c for c in paid if c is not reply]
