"""``moodlemate-ai logs``: the last calls in the spend log, newest first."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from moodlemate.ai.cli.common import CommandError, money, positive_int
from moodlemate.ai.cli.exits import EXIT_OK
from moodlemate.ai.cli.table import format_table

if TYPE_CHECKING:
    from moodlemate.ai._spend_log import SpendLog

HEADERS = ["TIME", "PROVIDER", "MODEL", "TOKENS", "COST", "ATTEMPTS", "MS", "OUTCOME"]


def add_log_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log",
        metavar="PATH",
        help="the spend log to read (default: the config file's log, else "
        "$XDG_DATA_HOME/moodlemate-ai/logs.db)",
    )


def open_log(args: argparse.Namespace) -> SpendLog | None:
    """The log the command reads, or None (and a note) when there is none yet."""
    import sys

    from moodlemate.ai._config import resolve_settings
    from moodlemate.ai._spend_log import SpendLog, default_log_path

    path = getattr(args, "log", None) or resolve_settings().log or default_log_path()
    spend_log = SpendLog(path)
    if not spend_log.path.is_file():
        print(f"no spend log at {spend_log.path} yet", file=sys.stderr)
        return None
    return spend_log


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "logs",
        help="show the last calls in the spend log",
        description="Show the last calls recorded in the spend log, newest first: provider, "
        "served model, tokens, exact cost ('unknown' when no price was known), attempts, "
        "latency and outcome ('ok' or the error's type).",
    )
    parser.add_argument(
        "-n", "--count", type=positive_int, default=20, metavar="N", help="how many (20)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of rows (costs as decimal strings, null when unknown)",
    )
    add_log_option(parser)
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    prune = actions.add_parser(
        "prune",
        help="fold old calls into per-day totals now, and compact the file",
        description="Fold the calls older than DAYS whole days (UTC) into one row per day, "
        "provider, endpoint, model and outcome (tokens and exact cost summed, so 'spend' "
        "still adds up), then compact the file. Logs do this by themselves at most once a "
        "day, keeping 90 days.",
    )
    prune.add_argument(
        "--keep", type=positive_int, metavar="DAYS", help="days kept call by call (90)"
    )
    prune.add_argument(
        "--log", metavar="PATH", default=argparse.SUPPRESS, help="the spend log to prune"
    )
    prune.set_defaults(func=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    """``logs prune``: the work is :meth:`SpendLog.prune`'s."""
    import sqlite3

    spend_log = open_log(args)
    if spend_log is None:
        return EXIT_OK
    before = spend_log.path.stat().st_size
    try:
        pruned = spend_log.prune(args.keep)
    except sqlite3.Error as exc:
        raise CommandError(f"cannot prune the spend log: {exc}") from None
    after = spend_log.path.stat().st_size
    print(
        f"folded {pruned.calls} calls into {pruned.rows} daily rows; "
        f"{spend_log.path}: {before:,} -> {after:,} bytes"
    )
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    import sqlite3

    spend_log = open_log(args)
    try:
        records = [] if spend_log is None else spend_log.recent(args.count)
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read the spend log: {exc}") from None
    if args.json:
        print(json.dumps([record.as_dict() for record in records], indent=2))
        return EXIT_OK
    rows = [
        [
            r.time[:19].replace("T", " "),
            r.provider,
            r.served_model or r.requested_model,
            str(r.prompt_tokens + r.completion_tokens),
            money(r.cost) if r.outcome == "ok" else "-",
            "-" if r.attempts is None else str(r.attempts),
            "-" if r.latency_ms is None else f"{r.latency_ms:.0f}",
            r.outcome,
        ]
        for r in records
    ]
    if rows:
        print(format_table(HEADERS, rows))
    return EXIT_OK
