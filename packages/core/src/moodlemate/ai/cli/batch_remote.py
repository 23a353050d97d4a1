"""``moodlemate-ai batch --remote`` and ``--cancel``: the vendor's batch service (OpenAI's
Batch API) behind the same INPUT and OUTPUT files as the local batch."""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING, Any

from moodlemate.ai.cli.common import CommandError, money, positive_int
from moodlemate.ai.cli.exits import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from moodlemate.ai.cli.progress import Writable
from moodlemate.ai.cli.terminal import safe

if TYPE_CHECKING:
    from moodlemate.ai._gpt import GPT
    from moodlemate.ai.batch import BatchItem, ResultLog
    from moodlemate.ai.batch.remote import RemoteBatchSummary

_REPORT_EVERY = 5.0  # seconds between progress lines while batches run


def add_options(parser: argparse.ArgumentParser) -> None:
    from moodlemate.ai.batch.remote import DEFAULT_MAX_WAIT, DEFAULT_POLL_INTERVAL

    group = parser.add_argument_group(
        "remote batches",
        "Run the batch on the provider's own batch service (OpenAI's Batch API: half the "
        "price, answered within 24 hours). The batch ids go to OUTPUT.remote.json before "
        "anything is sent; rerun the same command to resume waiting (nothing is submitted "
        "twice). Items a batch left unanswered (expired, cancelled, failed) are recorded "
        'with "ok": false and submitted again by a rerun.',
    )
    group.add_argument("--remote", action="store_true", help="use the provider's batch service")
    group.add_argument(
        "--cancel",
        action="store_true",
        help="cancel the remote batches recorded for OUTPUT, then exit (a rerun with "
        "--remote collects what they answered)",
    )
    group.add_argument(
        "--retry-failed-locally",
        action="store_true",
        help="with --remote: send what the remote batches left unanswered as live requests",
    )
    group.add_argument(
        "--reask",
        action="store_true",
        help="with --remote: ask again, live, each line whose batch reply did not match its "
        "schema, from that reply on (up to 3 replies in all, within the budget)",
    )
    group.add_argument(
        "--poll-interval",
        type=_seconds,
        default=DEFAULT_POLL_INTERVAL,
        metavar="SECONDS",
        help=f"between status checks (default {DEFAULT_POLL_INTERVAL:g})",
    )
    group.add_argument(
        "--max-wait",
        type=_seconds,
        default=DEFAULT_MAX_WAIT,
        metavar="SECONDS",
        help=f"stop waiting after this long; a rerun resumes (default {DEFAULT_MAX_WAIT:g})",
    )
    group.add_argument(
        "--max-requests-per-file",
        type=positive_int,
        metavar="N",
        help="split into input files of at most N requests (default: the provider's limit, "
        "50,000 for OpenAI)",
    )
    group.add_argument(
        "--max-bytes-per-file",
        type=positive_int,
        metavar="N",
        help="and of at most N bytes (default: the provider's limit, 200 MB for OpenAI)",
    )


def cancel(args: argparse.Namespace, gpt: GPT, err: Writable) -> int:
    from moodlemate.ai.batch.remote import cancel_remote_batch
    from moodlemate.ai.errors import MoodlemateError

    try:
        cancelled = cancel_remote_batch(gpt, args.output)
    except MoodlemateError as exc:
        raise CommandError(f"{type(exc).__name__}: {exc}") from None
    if not cancelled:
        _note(err, f"no running remote batch recorded for {args.output}")
    for batch_id, status in cancelled:
        _note(err, f"{batch_id}: {status}")
    return EXIT_OK


def run(
    args: argparse.Namespace,
    gpt: GPT,
    items: list[BatchItem],
    log: ResultLog,
    err: Writable,
    *,
    created: bool = False,
) -> int:
    """Run the remote batch; ``created``: OUTPUT is new, so a refusal removes it again."""
    from moodlemate.ai.batch import BatchInterrupted
    from moodlemate.ai.batch.remote import run_remote_batch
    from moodlemate.ai.batch.remote_state import state_path
    from moodlemate.ai.errors import (
        BudgetExceededError,
        ConfigurationError,
        InvalidAPIKeyError,
        MoodlemateError,
        ValidationError,
    )

    reporter = _RemoteProgress(err)
    try:
        summary = run_remote_batch(
            gpt,
            items,
            log,
            poll_interval=args.poll_interval,
            max_wait=args.max_wait,
            max_requests_per_file=args.max_requests_per_file,
            max_bytes_per_file=args.max_bytes_per_file,
            retry_failed_locally=args.retry_failed_locally,
            reask=args.reask,
            concurrency=args.concurrency,
            progress=reporter,
        )
    except BatchInterrupted as exc:
        _print_summary(err, exc.summary, log.path)  # type: ignore[arg-type]
        return EXIT_INTERRUPTED
    except (ConfigurationError, InvalidAPIKeyError, ValidationError) as exc:
        if created and os.path.getsize(log.path) == 0 and not os.path.exists(state_path(log.path)):
            os.unlink(log.path)  # nothing was written or sent: leave no empty output behind
        raise CommandError(f"{type(exc).__name__}: {exc}; nothing was sent", EXIT_USAGE) from None
    except BudgetExceededError as exc:
        if created and os.path.getsize(log.path) == 0 and not os.path.exists(state_path(log.path)):
            os.unlink(log.path)  # nothing was written or sent
        raise CommandError(f"{type(exc).__name__}: {exc}") from None
    except MoodlemateError as exc:
        raise CommandError(
            f"{type(exc).__name__}: {exc}; rerun the same command to resume"
        ) from None
    except OSError as exc:
        raise CommandError(f"cannot write {log.path}: {exc.strerror or exc}") from None
    _print_summary(err, summary, log.path)
    if summary.timed_out:
        _note(err, f"stopped waiting after {args.max_wait:g}s; rerun to resume polling")
        return EXIT_FAILURE
    return EXIT_OK if summary.unanswered == 0 else EXIT_FAILURE


class _RemoteProgress:
    """One line when the batches' status changes, and every few seconds while they run."""

    def __init__(self, err: Writable) -> None:
        self.err = err
        self._last: tuple[Any, ...] = ()
        self._at = 0.0

    def __call__(self, summary: RemoteBatchSummary) -> None:
        if not summary.statuses:
            return
        key = tuple(sorted(summary.statuses.items()))
        now = time.monotonic()
        if key == self._last and now - self._at < _REPORT_EVERY:
            return
        self._last, self._at = key, now
        states = ", ".join(f"{n} {status}" for status, n in sorted(summary.statuses.items()))
        failed = f", {summary.remote_failed} failed" if summary.remote_failed else ""
        _note(
            self.err,
            f"{summary.remote_completed}/{summary.remote_total} done{failed} · batches: "
            f"{states} · {summary.elapsed:.0f}s",
        )


def _print_summary(err: Writable, summary: RemoteBatchSummary, output: str) -> None:
    how = "interrupted" if summary.interrupted else "finished"
    unpriced = f"  (+{summary.unpriced} at unknown price)" if summary.unpriced else ""
    rows = [
        f"moodlemate-ai batch --remote: {how} in {summary.elapsed:.1f}s; results in {output}",
        f"  batches    {summary.batches}  ({summary.submitted} submitted by this run, "
        f"{summary.waiting} still running; state in {summary.state_file})",
        f"  succeeded  {summary.succeeded}",
        f"  failed     {summary.failed}"
        + ('  (records with "ok": false; a rerun submits them again)' if summary.failed else ""),
        *(
            [
                f"  invalid    {summary.invalid}  (answers that did not match their schema; "
                "counted in failed, their problems in OUTPUT)"
            ]
            if summary.invalid
            else []
        ),
        f"  skipped    {summary.skipped}  (answered by an earlier run)",
        f"  tokens     {summary.usage.total_tokens}  ({summary.usage.prompt_tokens} prompt + "
        f"{summary.usage.completion_tokens} completion)",
        f"  cost       {money(summary.cost)} at batch prices{unpriced}",
    ]
    if summary.reserved:
        rows.append(
            f"  reserved   {money(summary.reserved)}  (the running batches' worst case, held "
            "against the budget until a rerun settles their cost)"
        )
    reasked = summary.reasked
    if reasked is not None:
        rows.append(
            f"  reasked    {reasked.succeeded} answered, {reasked.failed} failed  (live, "
            f"{money(reasked.cost)} at standard prices)"
        )
    local = summary.local
    if local is not None:
        rows.append(
            f"  locally    {local.succeeded} succeeded, {local.failed} failed  "
            f"({money(local.cost)} at standard prices)"
        )
    if summary.unanswered:
        rows.append(f"  unanswered {summary.unanswered}")
    err.write("\n".join(rows) + "\n")
    err.flush()


def _note(err: Writable, message: str) -> None:
    err.write(safe(f"moodlemate-ai batch: {message}") + "\n")  # may quote a server
    err.flush()


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value
