"""Remote batches: the same input and output files as :func:`run_batch`, answered by the
vendor's own batch service (OpenAI's Batch API: half the price, within 24 hours).

    from moodlemate.ai.batch import read_items
    from moodlemate.ai.batch.remote import run_remote_batch

    items = read_items("questions.jsonl", default_model=gpt.model)
    summary = run_remote_batch(gpt, items, "answers.jsonl", poll_interval=60)

The items are split into input files within the vendor's limits (requests and bytes per
file, one model per file), uploaded, submitted, polled and collected; every result lands in
the output as the record the local runner writes. The state file beside the output
(:mod:`moodlemate.ai.batch.remote_state`) is written before anything is sent and after
every step, so a rerun, after Ctrl-C, a kill or a reboot, resumes polling and never submits
a part twice; items already answered are not sent at all.

With a budget (``GPT(budget=...)``, shared with ``budget_scope``), each part's worst case at
batch prices is reserved before it is sent, and a part that cannot fit raises
BudgetExceededError unsent; its real cost is settled, exactly once per batch, when its
results are collected (:mod:`moodlemate.ai.batch.remote_budget`).

What a batch leaves unanswered (it failed validation, expired, was cancelled, or a request
in it failed) is recorded per item with ``"ok": false``; a rerun submits those items again,
or with ``retry_failed_locally`` runs them through the local runner in the same run.

A line with a schema is sent as a live typed call's first attempt is (the same format:
strict ``json_schema``, or ``json_object`` / instructions where the model takes no schema),
and its reply is checked by the same validator. A batch cannot converse, so an answer that
does not validate is not asked again inside it: its record has ``"ok": false``, the
``problems`` found and the reply's cost, and the summary counts it in ``invalid``. With
``reask`` each such line goes on live from that reply (:mod:`.remote_reask`), within the
budget; else a rerun submits it again, or ``retry_failed_locally`` asks it live afresh.

Requests go to the endpoint a live call would use (OpenAI: ``/v1/responses`` for
Responses-only models and ``api="responses"``, else ``/v1/chat/completions``); a batch takes
one endpoint, so each part holds one model and one endpoint, and a file mixing both becomes
several parts, tracked and collected together.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from moodlemate.ai._answer_format import AnswerFormat
from moodlemate.ai._answer_schema import AnswerProblems, AnswerSchema, answer_schema
from moodlemate.ai._call_types import with_api
from moodlemate.ai._plausible import (
    bounded,
    ceiling,
    cost_of,
    scrubbed,
    unknown_cost_charge,
)
from moodlemate.ai._remote_batches import TERMINAL_STATUSES
from moodlemate.ai._replies import reply_text
from moodlemate.ai._structured import (
    TypedCompletion,
    checked_answer,
    typed_format,
    with_format,
)
from moodlemate.ai.batch.items import BatchItem, ItemId
from moodlemate.ai.batch.remote_budget import PartBudget
from moodlemate.ai.batch.remote_reask import Wrong
from moodlemate.ai.batch.remote_reask import reask as reask_lines
from moodlemate.ai.batch.remote_state import Part, RemoteState, state_path
from moodlemate.ai.batch.results import ResultLog, failure_record, success_record, typed_record
from moodlemate.ai.batch.runner import MAX_CONCURRENCY, BatchInterrupted, BatchSummary, run_batch
from moodlemate.ai.errors import (
    BudgetExceededError,
    MoodlemateError,
    ProviderError,
    ReplyError,
    StructuredOutputError,
    ValidationError,
)

if TYPE_CHECKING:
    from moodlemate.ai._bounds import ResponseLimits
    from moodlemate.ai._call_types import ChatRequest
    from moodlemate.ai._gpt import GPT
    from moodlemate.ai._provider import Completion, Connection, Provider
    from moodlemate.ai._remote_batches import RemoteBatch, RemoteBatches

__all__ = [
    "DEFAULT_MAX_WAIT",
    "DEFAULT_POLL_INTERVAL",
    "METADATA_KEY",
    "RemoteBatchError",
    "RemoteBatchSummary",
    "cancel_remote_batch",
    "run_remote_batch",
]

log = logging.getLogger("moodlemate.ai")

DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_MAX_WAIT = 25 * 3600.0
"""The 24 h completion window, plus time to finalize and collect."""
METADATA_KEY = "moodlemate_part"
_MIN_POLL = 0.01
_WRITE_EVERY = 1000
"""Records written (and fsynced) together while collecting a batch's results."""
_WRITE_BYTES = 1024 * 1024
"""...or fewer, once their replies reach this many bytes: collecting holds at most this much."""
_LINE_SLACK = 64 * 1024
"""Bytes an output line may hold beyond one response body (its id, status and envelope)."""


class RemoteBatchError(MoodlemateError):
    """A remote batch cannot go on (for instance a part that cannot fit one input file)."""


@dataclass(slots=True)
class RemoteBatchSummary(BatchSummary):
    """A :class:`BatchSummary` (``succeeded``/``failed`` count records written by this run)
    with the remote side: the vendor's ``request_counts`` summed over live batches."""

    batches: int = 0
    """Batches (parts) of this output, all runs together."""
    submitted: int = 0
    """Batches this run created."""
    waiting: int = 0
    """Batches that have not ended (when the run stopped waiting)."""
    remote_total: int = 0
    remote_completed: int = 0
    remote_failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False
    """``max_wait`` passed with batches still running: rerun to resume polling."""
    unanswered: int = 0
    """Items without a successful result in the output when the run ended."""
    invalid: int = 0
    """Replies to lines with a schema that did not parse or validate (in ``failed`` too)."""
    reserved: Decimal = Decimal(0)
    """The worst case (at batch prices) held against the budget for parts not yet settled."""
    local: BatchSummary | None = None
    """What ``retry_failed_locally`` ran through the local runner."""
    reasked: BatchSummary | None = None
    """What ``reask`` asked live: the lines whose batch reply did not match their schema
    (its usage and cost: the live replies only)."""
    state_file: str = ""


RemoteProgress = Callable[[RemoteBatchSummary], None]


def run_remote_batch(
    gpt: GPT,
    items: Sequence[BatchItem],
    output: str | os.PathLike[str] | ResultLog,
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_wait: float = DEFAULT_MAX_WAIT,
    max_requests_per_file: int | None = None,
    max_bytes_per_file: int | None = None,
    retry_failed_locally: bool = False,
    reask: bool = False,
    concurrency: int = 8,
    progress: RemoteProgress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RemoteBatchSummary:
    """Answer ``items`` into ``output`` through the provider's remote batch service.

    Raises UnsupportedFeatureError (for a provider without one), MissingAPIKeyError and the
    like before anything is sent; :class:`BatchInterrupted` on Ctrl-C with the state saved
    (rerun to resume). ``max_wait`` bounds the wall-clock time spent waiting for batches;
    when it passes, the summary says ``timed_out`` and a rerun resumes polling. ``reask``:
    a line whose batch reply does not match its schema is asked again live, from that reply
    on (``concurrency`` at a time), as :meth:`GPT.parse` would have.
    """
    _check_bounds(poll_interval, max_wait)
    if isinstance(output, ResultLog):
        run = _RemoteRun(gpt, items, output, poll_interval, max_wait, progress, sleep)
        return run.run(
            max_requests_per_file, max_bytes_per_file, retry_failed_locally, reask, concurrency
        )
    with ResultLog(output) as log:
        run = _RemoteRun(gpt, items, log, poll_interval, max_wait, progress, sleep)
        return run.run(
            max_requests_per_file, max_bytes_per_file, retry_failed_locally, reask, concurrency
        )


def cancel_remote_batch(gpt: GPT, output: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Ask the vendor to cancel every batch of ``output`` that has not ended; returns
    ``(batch id, status)`` per batch. A rerun then collects what they answered."""
    state = RemoteState.load(state_path(output))
    done: list[tuple[str, str]] = []
    for part in state.parts:
        if part.collected:
            continue
        provider, connection, _ = gpt.provider_connection(part.model)
        api = provider.remote_batches()
        if part.batch_id is None and part.creating:
            found = api.find(connection, METADATA_KEY, part.token)
            if found is not None:
                part.batch_id = found.id
        if part.batch_id is None:
            continue
        batch = api.retrieve(connection, part.batch_id)
        if not batch.terminal and batch.status not in ("cancelling", "finalizing"):
            batch = api.cancel(connection, part.batch_id)
        _update(part, batch)
        state.save()
        done.append((batch.id, batch.status))
    return done


def _check_bounds(poll_interval: float, max_wait: float) -> None:
    for name, value in (("poll_interval", poll_interval), ("max_wait", max_wait)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ValidationError(f"{name} must be a number of seconds")
    if poll_interval < _MIN_POLL:
        raise ValidationError(f"poll_interval must be at least {_MIN_POLL} seconds")
    if max_wait < 0:
        raise ValidationError("max_wait must not be negative")


@dataclass(frozen=True, slots=True)
class _Route:
    provider: Provider
    connection: Connection
    api: RemoteBatches
    model: str
    """The model name the provider receives (``provider:`` prefix removed)."""


class _RemoteRun:
    def __init__(
        self,
        gpt: GPT,
        items: Sequence[BatchItem],
        log: ResultLog,
        poll_interval: float,
        max_wait: float,
        progress: RemoteProgress | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.gpt = gpt
        self.items = {item.id: item for item in items}
        self.log = log
        self.poll_interval = poll_interval
        self.max_wait = max_wait
        self.progress = progress
        self.sleep = sleep
        self.state = RemoteState.load(state_path(log.path))
        self.routes: dict[str, _Route] = {}
        self._answers: dict[int, tuple[Any, AnswerSchema[Any]]] = {}
        self._formats: dict[tuple[int, str], AnswerFormat] = {}
        self._wrong: list[Wrong] = []
        """Lines whose batch reply, collected by this run, did not match their schema."""
        self._pending: list[dict[str, Any]] = []
        self._queued: set[ItemId] = set()
        self._log_rows: list[dict[str, Any]] = []
        self._pending_bytes = 0
        self._log_ok = True
        self.budget = PartBudget(gpt)
        self.started = time.monotonic()
        answered = sum(1 for item in items if item.id in log.answered)
        self.summary = RemoteBatchSummary(
            total=len(items), skipped=answered, state_file=self.state.path
        )

    # -- the run ---------------------------------------------------------------------------

    def run(
        self,
        max_requests: int | None,
        max_bytes: int | None,
        retry_locally: bool,
        reask: bool,
        concurrency: int,
    ) -> RemoteBatchSummary:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise ValidationError("concurrency must be an int")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValidationError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        for part in self.state.parts:
            if part.live:
                self._route(part.model)  # an unusable key or provider raises before anything
                self.budget.resume(part)
            elif not part.settled and part.cost is not None:
                self.budget.settle(part, Decimal(part.cost))  # its store was down last time
                self.state.save()
        planned = self._plan(max_requests, max_bytes, exclude_failed=retry_locally)
        try:
            if planned:
                self.state.parts.extend(planned)
                self.state.save()  # before anything is sent
            for part in self.state.parts:
                if part.live and part.batch_id is None:
                    self._submit(part)
            self._wait_and_collect()
            if reask and self._wrong:
                self.summary.reasked = reask_lines(self.gpt, self._wrong, self.log, concurrency)
        except KeyboardInterrupt:
            self.summary.interrupted = True
            raise BatchInterrupted(self._final()) from None
        if retry_locally and not self.summary.timed_out:
            self._run_locally(concurrency)
        self.summary.unanswered = sum(1 for i in self.items if i not in self.log.answered)
        return self._final()

    def _final(self) -> RemoteBatchSummary:
        self.summary.elapsed = time.monotonic() - self.started
        self.summary.batches = len(self.state.parts)
        self.summary.reserved = sum(
            (Decimal(p.reserved) for p in self.state.parts if p.reserved and not p.settled),
            Decimal(0),
        )
        return self.summary

    # -- planning --------------------------------------------------------------------------

    def _route(self, model: str) -> _Route:
        route = self.routes.get(model)
        if route is None:
            provider, connection, bare = self.gpt.provider_connection(model)
            api = provider.remote_batches()  # UnsupportedFeatureError, before anything is sent
            route = self.routes[model] = _Route(provider, connection, api, bare)
        return route

    def _plan(
        self, max_requests: int | None, max_bytes: int | None, *, exclude_failed: bool
    ) -> list[Part]:
        """Parts for the items neither answered nor in a live part: one model per part,
        within the per-file request and byte limits."""
        busy = self.state.submitted_ids()
        tried = self.state.ever_submitted() if exclude_failed else set()
        todo = [
            item
            for item in self.items.values()
            if item.id not in self.log.answered and item.id not in busy and item.id not in tried
        ]
        by_batch: dict[tuple[str, str | None], list[BatchItem]] = {}
        for item in todo:
            route = self._route(item.model)
            endpoint = route.api.endpoint_for(self._request(route, item))
            by_batch.setdefault((item.model, endpoint), []).append(item)
        parts: list[Part] = []
        for (model, endpoint), group in by_batch.items():
            route = self._route(model)
            requests = _limit("max_requests_per_file", max_requests, route.api.max_requests)
            size = _limit("max_bytes_per_file", max_bytes, route.api.max_bytes)
            current: list[ItemId] = []
            custom_ids: set[str] = set()
            used = 0
            for item in group:
                length = len(self._line(route, item))
                if length > size:
                    raise RemoteBatchError(
                        f"item {item.id!r} (line {item.line}) needs {length} bytes, more than "
                        f"one batch input file may hold ({size}); nothing was sent"
                    )
                cid = _custom_id(item.id)
                if current and (
                    len(current) >= requests or used + length > size or cid in custom_ids
                ):
                    parts.append(Part(model=model, ids=current, endpoint=endpoint))
                    current, custom_ids, used = [], set(), 0
                current.append(item.id)
                custom_ids.add(cid)
                used += length
            if current:
                parts.append(Part(model=model, ids=current, endpoint=endpoint))
        return parts

    def _line(self, route: _Route, item: BatchItem) -> bytes:
        request = self._request(route, item)
        route.provider.check_input(request)
        return route.api.request_line(_custom_id(item.id), request)

    def _part_line(self, route: _Route, part: Part, item: BatchItem) -> bytes:
        """The item's line for ``part``, which must still go to the part's endpoint (an
        ``api`` setting changed between the run that planned it and this one must not put a
        line the batch would refuse into its file)."""
        endpoint = route.api.endpoint_for(self._request(route, item))
        if part.endpoint is not None and endpoint != part.endpoint:
            raise RemoteBatchError(
                f"item {item.id!r} (line {item.line}) was planned for {part.endpoint} and now "
                f"goes to {endpoint} (was the api setting changed?); nothing of its batch was "
                f"sent: restore the setting, or move {self.state.path} away to start over"
            )
        return self._line(route, item)

    def _request(self, route: _Route, item: BatchItem) -> ChatRequest:
        """The request the line stands for, to the provider's model name: with a schema,
        the request a live typed call's first attempt sends (its format and instructions)."""
        request = with_api(item.request(), self.gpt.api)  # the API a live call would take
        if item.schema is not None:
            request = with_format(request, self._format(item, request))
        return replace(request, model=route.model)

    def _answer(self, item: BatchItem) -> AnswerSchema[Any]:
        """The line's schema and validator, built once per schema (``--schema`` gives every
        line the same one)."""
        held = self._answers.get(id(item.schema))
        if held is None or held[0] is not item.schema:
            held = self._answers[id(item.schema)] = (item.schema, answer_schema(item.schema))
        return held[1]

    def _format(self, item: BatchItem, request: ChatRequest) -> AnswerFormat:
        """How the line's model is asked for its schema, worked out once per schema and
        model: 50,000 lines share one strict schema rather than hold a copy each."""
        answer = self._answer(item)
        key = (id(item.schema), item.model)
        found = self._formats.get(key)
        if found is None:
            found = self._formats[key] = typed_format(self.gpt, request, answer)
        return found

    # -- submitting ------------------------------------------------------------------------

    def _submit(self, part: Part) -> None:
        route = self._route(part.model)
        if self.budget.active and part.reserved is None and not part.creating:
            self._reserve(route, part)
        if part.file_id is None:
            data = b"".join(
                self._part_line(route, part, self.items[i]) for i in part.ids if i in self.items
            )
            name = f"moodlemate-{part.token}.jsonl"
            part.file_id = self._retrying(
                lambda c: route.api.upload(c, name, data), route, "upload"
            )
            self.state.save()
        file_id = part.file_id

        def create(connection: Connection) -> RemoteBatch:
            # Every attempt after the first, in this run or after a crash, looks first.
            if part.creating:
                found = route.api.find(connection, METADATA_KEY, part.token)
                if found is not None:
                    return found
            part.creating = True
            self.state.save()
            self.summary.submitted += 1
            return route.api.create(connection, file_id, {METADATA_KEY: part.token}, part.endpoint)

        batch = self._retrying(create, route, "create")
        part.batch_id = batch.id
        _update(part, batch)
        self.state.save()

    def _reserve(self, route: _Route, part: Part) -> None:
        """Hold the part's worst case, saved before anything of it is sent; on a refusal
        the parts not sent yet leave the plan (a rerun plans them again)."""
        requests = (
            self._request(route, item)
            for item in (self.items[i] for i in part.ids if i in self.items)
        )
        amount = self.budget.worst_case(
            route.provider, route.api, route.connection.endpoint, requests
        )
        try:
            self.budget.reserve(part, amount)
        except BudgetExceededError:
            self.state.parts = [p for p in self.state.parts if not _unsent(p)]
            if self.state.parts:
                self.state.save()
            else:  # nothing was ever sent for this output: leave no state behind
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.state.path)
            raise
        self.state.save()

    def _retrying(
        self,
        call: Callable[[Connection], Any],
        route: _Route,
        what: str,
        limits: ResponseLimits | None = None,
    ) -> Any:
        def attempt(timeout: float) -> Any:
            return call(replace(route.connection, timeout=timeout))

        label = f"{route.provider.name} batch {what}"
        result, _ = self.gpt.retry.run(attempt, label, limits or self.gpt.limits)
        return result

    # -- polling and collecting ------------------------------------------------------------

    def _wait_and_collect(self) -> None:
        deadline = self.started + self.max_wait
        while True:
            live = [p for p in self.state.parts if p.live and p.batch_id is not None]
            for part in live:
                if part.status not in TERMINAL_STATUSES:
                    self._poll(part)
            self._report()  # the vendor's request_counts, before the results are collected
            for part in live:
                if part.status in TERMINAL_STATUSES:
                    self._collect(part)
            waiting = [p for p in self.state.parts if p.live]
            self.summary.waiting = len(waiting)
            if not waiting:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                self.summary.timed_out = True
                return
            self.sleep(min(self.poll_interval, left))

    def _poll(self, part: Part) -> None:
        route = self._route(part.model)
        assert part.batch_id is not None
        try:
            batch = route.api.retrieve(route.connection, part.batch_id)
        except ProviderError as exc:
            if not exc.retryable:
                raise
            log.warning("checking batch %s failed (%s); asking again later", part.batch_id, exc)
            return  # a transient failure: the next poll asks again
        if (batch.status, batch.completed, batch.failed) != (
            part.status,
            part.completed,
            part.failed,
        ):
            _update(part, batch)
            self.state.save()

    def _collect(self, part: Part) -> None:
        route = self._route(part.model)
        batch_id = part.batch_id
        assert batch_id is not None
        batch = self._retrying(lambda c: route.api.retrieve(c, batch_id), route, "retrieve")
        files = (("output", batch.output_file_id), ("error", batch.error_file_id))
        for kind, file_id in files:
            if file_id is not None and kind not in part.downloaded:
                path = self.state.download_path(part, kind)
                self._download(route, file_id, path, len(part.ids))
                part.downloaded.append(kind)
                self.state.save()
        by_custom_id = {_custom_id(i): i for i in part.ids}
        seen: set[ItemId] = set()
        # Rows a run killed while collecting this part already wrote to the spend log: the
        # results come in the same order from the same files, so the first ones are skipped.
        logged = 0 if self.gpt.log is None else self.gpt.log.batch_calls(batch_id)
        self._log_ok = True
        cost = Decimal(0)
        for kind, file_id in files:
            if file_id is None:
                continue
            path = self.state.download_path(part, kind)
            for line in _lines(path, self.gpt.limits.max_body_bytes + _LINE_SLACK):
                result = route.api.parse_line(line, route.model, part.endpoint)
                item_id = by_custom_id.get(result.custom_id)
                if item_id is None or item_id in seen or item_id not in self.items:
                    continue
                completion, charge = result.completion, None
                item = self.items[item_id]
                if completion is not None:
                    completion = self._priced(route, item, completion)
                    charge = self._charge(route, item, completion)
                    cost += completion.cost if completion.cost is not None else charge or 0
                self._record(
                    route,
                    item,
                    completion,
                    result.error,
                    batch_id,
                    log=len(seen) >= logged,
                    charge=charge,
                )
                seen.add(item_id)
        missing = ProviderError(
            _missing_message(part),
            provider=route.provider.name,
            model=route.model,
            code=f"batch_{part.status}",
            retryable=True,
        )
        for item_id in part.ids:
            if item_id not in seen and item_id in self.items:
                self._record(route, self.items[item_id], None, missing)
        self._flush()  # every record is durable before the part counts as collected
        part.cost = str(cost)
        self.budget.settle(part, cost)  # once per batch id, however often this runs
        part.collected = True
        self.state.save()
        for kind in ("output", "error"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.state.download_path(part, kind))

    def _download(self, route: _Route, file_id: str, path: str, requests: int) -> None:
        """Stream a result file to disk, as received (memory holds one chunk). Its size is
        bounded by what the part can honestly produce, one response body per request (so
        no real batch is cut), not by the limit of one response body."""
        body = self.gpt.limits.max_body_bytes
        limits = replace(self.gpt.limits, max_body_bytes=(requests + 1) * (body + _LINE_SLACK))
        self._retrying(lambda c: route.api.download(c, file_id, path), route, "download", limits)

    def _record(
        self,
        route: _Route,
        item: BatchItem,
        completion: Completion | None,
        error: ProviderError | None,
        batch_id: str | None = None,
        *,
        log: bool = False,
        charge: Decimal | None = None,
    ) -> None:
        """Queue the item's record (:meth:`_flush` writes them); count it in the summary and
        the ledger (``charge``: what an answer of unknown cost counts against the budget).
        With ``log``, a result of batch ``batch_id`` also goes into the GPT's spend log
        (whether or not an earlier run already wrote its record)."""
        if (
            len(self._pending) >= _WRITE_EVERY
            or len(self._log_rows) >= _WRITE_EVERY
            or self._pending_bytes >= _WRITE_BYTES
        ):
            self._flush()
        if completion is not None:
            self._pending_bytes += len(completion.text or "")
        if log and batch_id is not None and self.gpt.log is not None:
            self._log_rows.append(
                {
                    "provider": route.provider.name,
                    "endpoint": route.connection.endpoint,
                    "request": self._request(route, item),
                    "completion": completion,
                    "error": error if completion is None else None,
                    "batch_id": batch_id,
                    "charge": charge,
                }
            )
        if item.id in self.log.answered or item.id in self._queued:
            return  # collected before a crash, or listed twice: written once
        self._queued.add(item.id)
        if completion is None:
            self._pending.append(failure_record(item, error, None))
            self.summary.failed += 1
            return
        # A reply was billed, whether or not it holds an answer: ledger and summary count it.
        self.gpt.ledger.record(route.model, completion.usage, completion.cost, charge)
        self.summary.usage = self.summary.usage + completion.usage
        if completion.cost is None:
            self.summary.unpriced += 1
        else:
            self.summary.cost += completion.cost
        try:
            record = self._answered(item, completion)
        except ReplyError as exc:
            self._pending.append(failure_record(item, exc, None))
            self.summary.failed += 1
            if isinstance(exc, StructuredOutputError):
                self.summary.invalid += 1
                self._wrong.append((item, completion, exc.problems[0]))
            return
        self._pending.append(record)
        self.summary.succeeded += 1

    def _answered(self, item: BatchItem, completion: Completion) -> dict[str, Any]:
        """The record of an answered line; raises ReplyError for a reply without an answer,
        StructuredOutputError for one that does not match the line's schema."""
        if item.schema is None:
            reply_text(completion, item.max_tokens)  # a refusal or an empty reply fails
            return success_record(item, completion, None)
        answer = self._answer(item)
        try:
            parsed = checked_answer(answer, completion)
        except AnswerProblems as found:
            listed = "; ".join(found.problems)
            raise StructuredOutputError(
                f"the reply does not match the schema {answer.name!r} (a batch cannot ask "
                f"again): {listed[:500]}",
                (completion,),
                (found.problems,),
            ) from None
        return typed_record(item, TypedCompletion(parsed, (completion,)), None)

    def _flush(self) -> None:
        if self._log_rows and self.gpt.log is not None and self._log_ok:
            # One transaction per flush: the log holds a prefix of the part's rows, never a
            # gap, so a rerun knows where to go on. After a failed write, no more rows.
            self._log_ok = self.gpt.log.record_calls(self._log_rows)
        self._log_rows = []
        self.log.write_many(self._pending)
        self._pending = []
        self._pending_bytes = 0
        self._queued = set()

    def _priced(self, route: _Route, item: BatchItem, completion: Completion) -> Completion:
        """The completion with its usage bounded by what the line could produce, the strings
        its server chose redacted, and its cost at the batch price, priced by the model asked
        for (None when unknown)."""
        endpoint = route.connection.endpoint
        request = self._request(route, item)
        limit = ceiling(route.provider, request, endpoint) if completion.usage_reported else None
        completion = bounded(scrubbed(completion), limit)
        cost, priced_model, breakdown = cost_of(
            completion, route.model, route.provider.same_model, route.api.price, limit
        )
        return replace(completion, cost=cost, priced_model=priced_model, cost_breakdown=breakdown)

    def _charge(self, route: _Route, item: BatchItem, completion: Completion) -> Decimal | None:
        """What an answer of unknown cost counts against the budget, as a live call's does:
        its worst case at batch prices (its share of the part's hold), or its priced pieces
        when they come to more; None for a known cost, or when nothing about it is priced.
        Without a budget nothing was held, so only the priced pieces count (as live)."""
        if completion.cost is not None:
            return None
        worst: Decimal | None = Decimal(0)
        if self.budget.active:
            request = self._request(route, item)
            worst = self.budget.worst_case(
                route.provider, route.api, route.connection.endpoint, (request,)
            )
        if worst is None:
            return None
        return unknown_cost_charge(completion, None, completion.cost_breakdown, worst)

    def _report(self) -> None:
        summary = self.summary
        summary.remote_total = summary.remote_completed = summary.remote_failed = 0
        summary.statuses = {}
        for part in self.state.parts:
            if part.live:
                summary.remote_total += part.total or len(part.ids)
                summary.remote_completed += part.completed
                summary.remote_failed += part.failed
                summary.statuses[part.status] = summary.statuses.get(part.status, 0) + 1
        summary.elapsed = time.monotonic() - self.started
        if self.progress is not None:
            self.progress(summary)

    # -- local retries ---------------------------------------------------------------------

    def _run_locally(self, concurrency: int) -> None:
        tried = self.state.ever_submitted()
        rest = [
            item
            for item in self.items.values()
            if item.id in tried and item.id not in self.log.answered
        ]
        if rest:
            self.summary.local = run_batch(self.gpt, rest, self.log, concurrency=concurrency)


def _update(part: Part, batch: RemoteBatch) -> None:
    part.status = batch.status
    part.total, part.completed, part.failed = batch.total, batch.completed, batch.failed
    part.errors = list(batch.errors)


def _unsent(part: Part) -> bool:
    """Planned, but neither held against the budget nor possibly submitted."""
    return part.batch_id is None and not part.creating and part.reserved is None


def _missing_message(part: Part) -> str:
    if part.status == "failed":
        why = "; ".join(part.errors) or "no reason given"
        return f"the batch failed validation ({why}); nothing in it ran"
    if part.status == "expired":
        return "the batch expired (24 h window) before this request ran"
    if part.status == "cancelled":
        return "the batch was cancelled before this request ran"
    return f"the batch ended ({part.status}) without a result for this request"


def _limit(name: str, given: int | None, vendor: int) -> int:
    if given is None:
        return vendor
    if isinstance(given, bool) or not isinstance(given, int) or not 1 <= given <= vendor:
        raise ValidationError(f"{name} must be an integer between 1 and {vendor}")
    return given


def _custom_id(item_id: ItemId) -> str:
    return item_id if isinstance(item_id, str) else str(item_id)


def _lines(path: str, limit: int) -> Iterable[bytes]:
    """The file's non-blank lines, each read in at most ``limit`` bytes: a longer line (no
    honest result is) is skipped in bounded reads, and its request counts as unanswered."""
    with open(path, "rb") as file:
        while line := file.readline(limit + 1):
            if len(line) > limit:
                more = not line.endswith(b"\n")
                while more and (rest := file.readline(limit)):
                    more = not rest.endswith(b"\n")
                log.warning("%s: skipped a result line over %d bytes", path, limit)
                continue
            if line.strip():
                yield line
