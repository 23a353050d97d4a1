"""``moodlemate-ai batch``: a thin wrapper over :mod:`moodlemate.ai.batch`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from moodlemate.ai.cli import batch_remote
from moodlemate.ai.cli.common import (
    CommandError,
    add_budget_options,
    add_settings_options,
    make_gpt,
    money,
    positive_int,
)
from moodlemate.ai.cli.exits import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from moodlemate.ai.cli.progress import QuietStream
from moodlemate.ai.cli.terminal import safe
from moodlemate.ai.errors import ConfigurationError, InvalidAPIKeyError, MoodlemateError

if TYPE_CHECKING:
    from moodlemate.ai.batch import BatchSummary

DEFAULT_CONCURRENCY = 8
EXIT_TERMINATED = 128 + signal.SIGTERM

DESCRIPTION = """\
Send one chat request per line of INPUT (JSONL) and append one result per line to OUTPUT
(JSONL) as soon as it arrives. The whole input is validated first: a bad line stops the run
before anything is sent.

Input lines: {"id": "q1", "system": "Be brief.", "user": "What is a haiku?"}
  required: id (string or integer, unique), user (string)
  optional: system, model, temperature (0-2, default 0.7), max_tokens

Output lines: {"id", "ok", "text", "model", "finish_reason", "usage", "cost", "attempts",
"seconds", "request_id", "error"}; a failed request has "ok": false and "error": {"type",
"message", "status", "code", ...}. Lines are in completion order, not input order. Costs are
decimal strings (USD), null when the model's price is unknown.

Resuming: a rerun with the same OUTPUT skips every id already answered with "ok": true and
sends the rest, failed ones included (their new result is appended; the last record of an
id is the one that counts). Ctrl-C or SIGTERM stops sending, waits for the requests in flight
and writes their results (a second one abandons them); nothing already answered is lost, even
if the process is killed.
"""

EPILOG = """\
exit status:
  0    every request answered (now or by an earlier run)
  1    some requests failed (see "ok": false in OUTPUT), or the batch stopped on an error
  2    usage error, invalid INPUT, unusable OUTPUT (not a regular file, damaged, in use)
       or no usable key or provider: nothing was sent
  130  interrupted (Ctrl-C): rerun the same command to finish
  143  terminated (SIGTERM), handled like Ctrl-C

examples:
  moodlemate-ai batch questions.jsonl -o answers.jsonl
  moodlemate-ai batch questions.jsonl -o answers.jsonl --remote    # OpenAI's Batch API
  moodlemate-ai batch questions.jsonl -o answers.jsonl --concurrency 32 -m gpt-4o
  jq -c '{id, user: .question}' survey.jsonl | moodlemate-ai batch - -o answers.jsonl
  jq -c 'select(.ok | not)' answers.jsonl    # the failures, with their error
"""


def add_parser(subparsers: Any) -> None:
    from moodlemate.ai.batch.runner import MAX_CONCURRENCY

    parser = subparsers.add_parser(
        "batch",
        help="answer a JSONL file of requests into a JSONL file, resumably",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input", metavar="INPUT.jsonl", help="one request per line ('-': standard input)"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT.jsonl",
        required=True,
        help="results are appended here; an existing file is resumed",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight at once, 1-{MAX_CONCURRENCY} (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "-m",
        "--model",
        help="model for lines that name none (default: MOODLEMATE_MODEL, else the provider's)",
    )
    parser.add_argument(
        "--schema",
        metavar="SCHEMA",
        help="answer every line without its own 'schema' as JSON following SCHEMA: a JSON "
        "schema file, inline JSON, or fields such as 'name, age int' (see chat --schema)",
    )
    batch_remote.add_options(parser)
    add_budget_options(parser)
    add_settings_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moodlemate.ai._validation import check_model
    from moodlemate.ai.batch import (
        BatchInterrupted,
        BatchOutputError,
        ResultLog,
        parse_items,
        read_items,
        run_batch,
    )
    from moodlemate.ai.batch.runner import MAX_CONCURRENCY
    from moodlemate.ai.cli.chat_schema import schema_from
    from moodlemate.ai.cli.progress import ProgressReporter
    from moodlemate.ai.errors import ValidationError

    if args.concurrency > MAX_CONCURRENCY:
        raise CommandError(f"--concurrency must be at most {MAX_CONCURRENCY}", EXIT_USAGE)
    if _same_file(args.input, args.output):
        raise CommandError("OUTPUT must not be the INPUT file", EXIT_USAGE)
    if args.retry_failed_locally and not args.remote:
        raise CommandError("--retry-failed-locally needs --remote", EXIT_USAGE)
    if args.reask and not args.remote:
        raise CommandError("--reask needs --remote", EXIT_USAGE)
    gpt = make_gpt(args)
    if args.cancel:
        return batch_remote.cancel(args, gpt, QuietStream(sys.stderr))
    try:
        default_model = check_model(gpt.model)
    except ValidationError as exc:
        raise CommandError(f"invalid model: {exc.message}", EXIT_USAGE) from None
    schema = None if args.schema is None else schema_from(args.schema)
    try:
        if args.input == "-":
            items = parse_items(
                sys.stdin.buffer, default_model=default_model, source="<stdin>", schema=schema
            )
        else:
            items = read_items(args.input, default_model=default_model, schema=schema)
    except ValidationError as exc:  # BatchInputError lists every bad line
        raise CommandError(exc.message, EXIT_USAGE) from None
    except OSError as exc:
        raise CommandError(f"cannot read {args.input}: {exc.strerror or exc}", EXIT_USAGE) from None
    created = not os.path.lexists(args.output)
    try:
        log = ResultLog(args.output)
    except BatchOutputError as exc:
        raise CommandError(exc.message, EXIT_USAGE) from None
    except OSError as exc:
        raise CommandError(
            f"cannot open {args.output}: {exc.strerror or exc}", EXIT_USAGE
        ) from None
    if args.verbose == 0:
        # Retries show in the summary and in each record's "attempts"; per-retry warnings
        # would scroll the progress away. -v brings them back.
        logging.getLogger("moodlemate.ai").setLevel(logging.ERROR)
    # Progress and the summary must not stop the batch when the reader of standard error
    # leaves (`2>&1 >/dev/null | head -1`): the results go to OUTPUT, not there.
    err = QuietStream(sys.stderr)
    with log:
        if log.dropped_bytes:
            _note(
                err, f"dropped an incomplete last line ({log.dropped_bytes} bytes) from {log.path}"
            )
        answered = sum(1 for item in items if item.id in log.answered)
        if answered:
            _note(err, f"resuming: {answered} of {len(items)} ids already answered in {log.path}")
        reporter = ProgressReporter(err, interactive=sys.stderr.isatty())
        terminated = _TerminateGracefully()
        try:
            if args.remote:
                code = batch_remote.run(args, gpt, items, log, err, created=created)
                interrupted = code == EXIT_INTERRUPTED and terminated.received
                return EXIT_TERMINATED if interrupted else code
            summary = run_batch(gpt, items, log, concurrency=args.concurrency, progress=reporter)
        except BatchInterrupted as exc:
            reporter.finish()
            _print_summary(err, exc.summary, log.path)
            return EXIT_TERMINATED if terminated.received else EXIT_INTERRUPTED
        except OSError as exc:
            reporter.finish()
            raise CommandError(f"cannot write {log.path}: {exc.strerror or exc}") from None
        except (ConfigurationError, InvalidAPIKeyError) as exc:  # checked before any request
            unusable: MoodlemateError | None = exc
        else:
            unusable = None
        finally:
            terminated.restore()
    if unusable is not None:
        if created and os.path.getsize(log.path) == 0:
            os.unlink(log.path)  # nothing was written: leave no empty output behind
        raise CommandError(
            f"{type(unusable).__name__}: {unusable}; nothing was sent", EXIT_USAGE
        ) from None
    reporter.finish()
    _print_summary(err, summary, log.path)
    if summary.stopped_by is not None:
        error = summary.stopped_by
        _note(err, f"stopped early: {type(error).__name__}: {error}")
        return EXIT_FAILURE
    return EXIT_OK if summary.failed == 0 else EXIT_FAILURE


class _TerminateGracefully:
    """SIGTERM (``kill``, ``timeout``, ``docker stop``) stops a batch as Ctrl-C does: the
    requests in flight are written, not lost. Left alone when the parent ignores SIGTERM."""

    def __init__(self) -> None:
        self.received = False
        self._previous = signal.getsignal(signal.SIGTERM)
        if self._previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.received = True
        raise KeyboardInterrupt

    def restore(self) -> None:
        if self._previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _same_file(a: str, b: str) -> bool:
    return a != "-" and os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _note(err: QuietStream, message: str) -> None:
    err.write(safe(f"moodlemate-ai batch: {message}") + "\n")  # may quote a server
    err.flush()


def _print_summary(err: QuietStream, summary: BatchSummary, output: str) -> None:
    how = (
        "interrupted"
        if summary.interrupted
        else "stopped early"
        if summary.stopped_by is not None
        else "finished"
    )
    usage = summary.usage
    known = summary.known_cost
    partly = summary.unpriced and known is not None
    unpriced = f"  (+{summary.unpriced} calls at unknown price)" if partly else ""
    rows = [
        f"moodlemate-ai batch: {how} in {summary.elapsed:.1f}s; results in {output}",
        f"  calls      {summary.calls}  ({summary.retries} retries)",
        f"  succeeded  {summary.succeeded}",
        f"  failed     {summary.failed}"
        + ('  (records with "ok": false; a rerun retries them)' if summary.failed else ""),
        f"  skipped    {summary.skipped}  (answered by an earlier run)",
    ]
    if summary.remaining:
        rows.append(f"  not sent   {summary.remaining}  (a rerun sends them)")
    rows += [
        f"  tokens     {usage.total_tokens}  ({usage.prompt_tokens} prompt + "
        f"{usage.completion_tokens} completion)",
        f"  cost       {money(known)}{unpriced}",
    ]
    err.write("\n".join(rows) + "\n")
    err.flush()
