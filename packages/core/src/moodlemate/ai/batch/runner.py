"""Running a batch: bounded concurrency over one shared GPT, every result written as it lands.

Threads, not asyncio: the facade's sync path is the one every provider implements, a GPT
instance is thread-safe (its ledger and client pool are locked), and a call spends its time
waiting on the network. ``concurrency`` worker threads take items one at a time, so at most
that many requests are in flight and a stop takes effect before the next item is sent.

Ctrl-C (KeyboardInterrupt in the calling thread) stops taking new items and waits for the
requests in flight, whose results are still written; a second Ctrl-C abandons them (they
were never written, so a rerun sends them again). Either way :class:`BatchInterrupted`
carries the summary. An error that no other item can escape (no key, a malformed or
rejected key, no credit, an unknown provider, a spent budget) stops the batch early too: no
new item is taken, and ``summary.stopped_by`` names the error.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from moodlemate.ai._replies import reply_text
from moodlemate.ai._usage import Usage
from moodlemate.ai.batch.items import BatchItem
from moodlemate.ai.batch.results import ResultLog, failure_record, success_record, typed_record
from moodlemate.ai.errors import (
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    InvalidAPIKeyError,
    QuotaExceededError,
    ReplyError,
    ValidationError,
)

if TYPE_CHECKING:
    from moodlemate.ai._gpt import GPT
    from moodlemate.ai._provider import Completion
    from moodlemate.ai._structured import TypedCompletion

__all__ = ["MAX_CONCURRENCY", "BatchInterrupted", "BatchSummary", "Progress", "run_batch"]

MAX_CONCURRENCY = 256
_STOPS_BATCH = (
    ConfigurationError,
    InvalidAPIKeyError,
    AuthenticationError,
    QuotaExceededError,
    BudgetExceededError,
)


@dataclass(slots=True)
class BatchSummary:
    """What a run did. ``calls`` counts the requests this run completed (after retries)."""

    total: int
    """Items in the input."""
    skipped: int
    """Items already answered in the output by an earlier run: not sent again."""
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    """Extra attempts made by the retry policy, over all calls."""
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    """Cost of the calls whose price is known; the others are counted in ``unpriced``."""
    unpriced: int = 0
    in_flight: int = 0
    elapsed: float = 0.0
    interrupted: bool = False
    stopped_by: BaseException | None = None
    """The error that stopped the batch before every item was tried, if one did."""

    @property
    def calls(self) -> int:
        return self.succeeded + self.failed

    @property
    def known_cost(self) -> Decimal | None:
        """``cost``, or None (unknown, not $0) when no answered call had a price."""
        if self.succeeded and self.unpriced >= self.succeeded:
            return None
        return self.cost

    @property
    def remaining(self) -> int:
        """Items neither skipped nor completed by this run (not sent, or abandoned)."""
        return self.total - self.skipped - self.calls


Progress = Callable[[BatchSummary], None]
"""Called after every result is written, and once when a stop is requested; serialised."""


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the batch; ``summary`` says what was done (and written) before it."""

    def __init__(self, summary: BatchSummary) -> None:
        super().__init__("batch interrupted")
        self.summary = summary


def run_batch(
    gpt: GPT,
    items: Sequence[BatchItem],
    output: str | os.PathLike[str] | ResultLog,
    *,
    concurrency: int = 8,
    progress: Progress | None = None,
) -> BatchSummary:
    """Send every item not yet answered in ``output`` and append each result to it.

    Returns the summary; raises :class:`BatchInterrupted` on Ctrl-C (after writing what the
    requests in flight returned), and re-raises what a worker hit outside its call (such as
    ``OSError`` when the output cannot be written) once the others have stopped. A missing or
    malformed key or an unknown provider raises before the first request, with nothing
    written (see :meth:`GPT.check_connection`).
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise ValidationError(f"concurrency must be an int, not {type(concurrency).__name__}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValidationError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
    if isinstance(output, ResultLog):
        return _Run(gpt, items, output, concurrency, progress).run()
    with ResultLog(output) as log:
        return _Run(gpt, items, log, concurrency, progress).run()


class _Run:
    """One run's state. Completion is tracked with counters, not ``Thread.join``: on Python
    3.11 a join interrupted by Ctrl-C can mark a still-running thread as finished."""

    def __init__(
        self,
        gpt: GPT,
        items: Sequence[BatchItem],
        log: ResultLog,
        concurrency: int,
        progress: Progress | None,
    ) -> None:
        todo = [item for item in items if item.id not in log.answered]
        self.gpt = gpt
        self.log = log
        self.progress = progress
        self.summary = BatchSummary(total=len(items), skipped=len(items) - len(todo))
        self.workers = min(concurrency, len(todo))
        self._pending = todo
        self._todo = iter(todo)
        self._exhausted = not todo
        self._take = threading.Lock()  # held while taking an item: orders takes against stops
        self._lock = threading.Lock()  # guards the summary and serialises progress calls
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._crash: BaseException | None = None
        self._started = time.monotonic()

    def run(self) -> BatchSummary:
        # Once, before any request: a batch without a usable key would otherwise record a
        # failure for every item in flight before it stopped.
        for model in sorted({item.model for item in self._pending}):
            self.gpt.check_connection(model)
        try:
            for n in range(self.workers):
                name = f"moodlemate-batch-{n}"
                threading.Thread(target=self._work, name=name, daemon=True).start()
            self._wait()
        except KeyboardInterrupt:
            self._request_stop()
            # The requests in flight finish and are written; a second Ctrl-C abandons them
            # (not written, so a rerun sends them again).
            with contextlib.suppress(KeyboardInterrupt):
                self._wait()
            raise BatchInterrupted(self._final()) from None
        if self._crash is not None:
            raise self._crash
        return self._final()

    def _wait(self) -> None:
        """Until no item will be taken any more and none is in flight; wakes on Ctrl-C."""
        while not self._settled():
            self._wake.wait(0.1)
            self._wake.clear()

    def _settled(self) -> bool:
        with self._take, self._lock:
            return (self._exhausted or self._stop.is_set()) and self.summary.in_flight == 0

    def _final(self) -> BatchSummary:
        with self._lock:
            self.summary.elapsed = time.monotonic() - self._started
            return self.summary

    def _request_stop(self) -> None:
        self._stop.set()
        with self._lock:
            self.summary.interrupted = True
            self._report()

    def _work(self) -> None:
        try:
            while True:
                with self._take:
                    if self._stop.is_set():
                        return
                    item = next(self._todo, None)
                    if item is None:
                        self._exhausted = True
                        return
                    with self._lock:
                        self.summary.in_flight += 1
                self._answer(item)
        except BaseException as exc:  # e.g. the output cannot be written: stop, then re-raise
            with self._lock:
                self._crash = self._crash or exc
            self._stop.set()
        finally:
            self._wake.set()

    def _answer(self, item: BatchItem) -> None:
        try:
            started = time.monotonic()
            completion: Completion | None = None
            error: Exception | None = None
            typed: TypedCompletion[Any] | None = None
            try:
                if item.schema is not None:
                    typed = _typed_answer(self.gpt, item)
                    completion = typed.completion
                else:
                    result = self.gpt.send(item.request())
                    reply_text(result, item.max_tokens)  # an empty reply or refusal fails
                    completion = result
            except Exception as exc:  # recorded in the output, never dropped
                error = exc
            seconds = round(time.monotonic() - started, 3)
            if typed is not None:
                self.log.write(typed_record(item, typed, seconds))
            elif completion is not None:
                self.log.write(success_record(item, completion, seconds))
            else:
                self.log.write(failure_record(item, error, seconds))
            self._count(completion, error, typed)
        finally:
            with self._lock:
                self.summary.in_flight -= 1
            self._wake.set()

    def _count(
        self,
        completion: Completion | None,
        error: Exception | None,
        typed: TypedCompletion[Any] | None = None,
    ) -> None:
        with self._lock:
            summary = self.summary
            if completion is not None:
                summary.succeeded += 1
                summary.retries += completion.attempts - 1
                paid = typed.completions if typed is not None else (completion,)
                for reply in paid:  # a typed answer: every reply it took was billed
                    summary.usage = summary.usage + reply.usage
                    if reply.cost is not None:
                        summary.cost += reply.cost
                if any(reply.cost is None for reply in paid):
                    summary.unpriced += 1
            else:
                summary.failed += 1
                summary.retries += getattr(error, "attempts", 1) - 1
                if isinstance(error, ReplyError):  # answered and billed, but no answer
                    for reply in getattr(error, "completions", (error.completion,)):
                        summary.usage = summary.usage + reply.usage
                        if reply.cost is not None:
                            summary.cost += reply.cost
                if isinstance(error, _STOPS_BATCH) and summary.stopped_by is None:
                    summary.stopped_by = error
                    self._stop.set()
            self._report()

    def _report(self) -> None:
        """Call the progress callback; the caller holds ``self._lock``."""
        if self.progress is not None:
            self.summary.elapsed = time.monotonic() - self._started
            self.progress(self.summary)


TYPED_ATTEMPTS = 3
"""Replies a line with a schema may take (as :meth:`GPT.parse`'s default)."""


def _typed_answer(gpt: GPT, item: BatchItem) -> TypedCompletion[Any]:
    """The line's answer checked against its schema, re-asked with what was wrong."""
    from moodlemate.ai._answer_schema import answer_schema
    from moodlemate.ai._structured import run_typed

    assert item.schema is not None
    return run_typed(gpt, item.request(), answer_schema(item.schema), TYPED_ATTEMPTS)
