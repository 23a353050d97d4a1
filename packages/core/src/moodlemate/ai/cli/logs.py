"""``moodlemate-ai logs``: the calls in the spend log, newest first, with what was asked and
answered; full-text search (``-q``), one conversation's turns (``--cid``), where the log is
(``logs path``) and whether the command writes it (``logs off`` / ``logs on``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from moodlemate.ai.cli.common import CommandError, money, positive_int
from moodlemate.ai.cli.exits import EXIT_OK
from moodlemate.ai.cli.table import print_table
from moodlemate.ai.cli.terminal import is_terminal

if TYPE_CHECKING:
    from moodlemate.ai._spend_log import CallRecord, SpendLog

HEADERS = [
    "TIME",
    "PROVIDER",
    "MODEL",
    "TOKENS",
    "COST",
    "ATTEMPTS",
    "MS",
    "RUN/TURN",
    "TOOLS",
    "OUTCOME",
    "PROMPT",
    "REPLY",
]
TERMINAL_TEXT = 40
"""Characters of prompt and reply shown per row on a terminal (all of them in a pipe)."""

EPILOG = """\
examples:
  moodlemate-ai logs                     # the last 20 calls
  moodlemate-ai logs -n 5 --json | jq '.[0].reply'
  moodlemate-ai logs -q "prime numbers"  # calls whose prompt or reply has both words
  moodlemate-ai logs --cid french        # the turns of the conversation 'french'
  moodlemate-ai logs --run run_0123abcd  # the model turns of one tool run
  moodlemate-ai logs path
  moodlemate-ai logs off                 # stop recording chats; `logs on` resumes
  moodlemate-ai logs prune --keep 30     # fold calls older than 30 days into daily totals
"""


def add_log_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log",
        metavar="PATH",
        help="the spend log to read (default: the config file's log, else "
        "$XDG_DATA_HOME/moodlemate-ai/logs.db)",
    )


def log_path(args: argparse.Namespace) -> Any:
    from moodlemate.ai._config import resolve_settings
    from moodlemate.ai._spend_log import SpendLog, default_log_path

    return SpendLog(getattr(args, "log", None) or resolve_settings().log or default_log_path()).path


def open_log(args: argparse.Namespace) -> SpendLog | None:
    """The log the command reads, or None (and a note) when there is none yet."""
    from moodlemate.ai._spend_log import SpendLog

    spend_log = SpendLog(log_path(args))
    if not spend_log.path.is_file():
        print(f"no spend log at {spend_log.path} yet", file=sys.stderr)
        return None
    return spend_log


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "logs",
        help="show, search and switch the log of calls",
        description="Show the last calls recorded in the spend log, newest first: provider, "
        "served model, tokens, exact cost ('unknown' when no price was known; '~$X' when "
        "a budget was charged $X for a reply of unknown cost, with a line totalling both), "
        "attempts, "
        "latency, the tool run and turn a call was (RUN/TURN) and how many tool calls its "
        "reply asked for (TOOLS; --run lists them: name, outcome, time, never arguments or "
        "results), outcome ('ok' or the error's type), prompt and reply (cut to fit on a "
        "terminal, whole in a pipe). ACTION 'path' prints where the log is; 'off' stops "
        "the command from recording chats (prompts and replies included), 'on' resumes; "
        "'prune' folds the calls older than --keep DAYS (90) into one row per day, provider, "
        "endpoint, model and outcome (tokens and exact cost summed, so 'spend' still adds "
        "up) and compacts the file, which logs also do by themselves at most once a day.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=("path", "off", "on", "prune"),
        metavar="ACTION",
        help="path, off, on or prune (default: list calls)",
    )
    parser.add_argument(
        "-n", "--count", type=positive_int, default=20, metavar="N", help="how many (20)"
    )
    parser.add_argument(
        "-q", "--query", metavar="TEXT", help="only calls whose prompt or reply has every word"
    )
    parser.add_argument("--cid", metavar="NAME", help="only the turns of conversation NAME")
    parser.add_argument(
        "--run",
        metavar="ID",
        help="only the model turns of tool run ID, in turn order, then each turn's tool calls",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of rows (costs as decimal strings, null when unknown; "
        "charged: what a budget counted; cache-write, audio and image token counts; a run "
        "turn's tool_calls with name, outcome and latency_ms)",
    )
    add_log_option(parser)
    parser.set_defaults(func=run)
    parser.add_argument(
        "--keep",
        type=positive_int,
        metavar="DAYS",
        help="with prune: days kept call by call (90)",
    )


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

    if args.action == "prune":
        return run_prune(args)
    if args.action is not None:
        return _act(args)
    spend_log = open_log(args)
    try:
        records = [] if spend_log is None else spend_log.with_tool_calls(_select(spend_log, args))
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read the spend log: {exc}") from None
    if args.json:
        print(json.dumps([record.as_dict() for record in records], indent=2))
        return EXIT_OK
    limit = TERMINAL_TEXT if is_terminal(sys.stdout) else None
    rows = [
        [
            r.time[:19].replace("T", " "),
            r.provider,
            r.served_model or r.requested_model,
            str(r.prompt_tokens + r.completion_tokens),
            _cost(r),
            "-" if r.attempts is None else str(r.attempts),
            "-" if r.latency_ms is None else f"{r.latency_ms:.0f}",
            "-" if r.run_id is None else f"{r.run_id}/{r.turn}",
            "-" if r.run_id is None else str(len(r.tool_calls)),
            r.outcome,
            _cut(_prompt(r), limit),
            _cut(r.reply or "", limit),
        ]
        for r in records
    ]
    if rows:
        print_table(HEADERS, rows, numeric=(3, 4, 5, 6, 8))
        _print_charged(records)
    if args.run is not None:
        _print_tool_calls(records)
    return EXIT_OK


def _cost(record: CallRecord) -> str:
    """The exact cost; for a reply of unknown cost, what a budget was charged for it, marked
    ``~`` (an amount held or priced in part, not the bill), else ``unknown``."""
    if record.outcome != "ok":
        return "-"
    if record.cost is None and record.charged:
        return f"~{money(record.charged)}"
    return money(record.cost)


def _print_charged(records: list[CallRecord]) -> None:
    """Below a listing where a reply of unknown cost was charged: the known cost of the calls
    shown, and what budgets were charged for them (so the two can be told apart)."""
    from moodlemate.ai._spend_log import totals

    if not any(r.cost is None and r.charged for r in records):
        return
    _, total = totals(records, "day")
    print(
        f"\n{total.calls} calls shown: known cost {money(total.known_cost)}; charged "
        f"{money(total.charged)}, of which ~{money(total.charged_unpriced)} for "
        f"{total.unpriced_calls} replies of unknown cost (~: charged, not their cost)"
    )


TOOL_HEADERS = ["TURN", "#", "TOOL", "OUTCOME", "MS"]


def _print_tool_calls(records: list[CallRecord]) -> None:
    """A run's tool calls, turn by turn: what each was and came to (no arguments, no results)."""
    rows = [
        [
            str(record.turn),
            str(call.position + 1),
            call.name,
            call.outcome,
            "-" if call.latency_ms is None else f"{call.latency_ms:.0f}",
        ]
        for record in records
        for call in record.tool_calls
    ]
    if rows:
        print()
        print_table(TOOL_HEADERS, rows, numeric=(0, 1, 4))


def _select(spend_log: SpendLog, args: argparse.Namespace) -> list[CallRecord]:
    if args.run is not None:
        return spend_log.run_calls(args.run)
    if args.query is None and args.cid is None:
        return spend_log.recent(args.count)
    from moodlemate.ai import _spend_search

    if args.query is not None:
        ids = _spend_search.search(spend_log.path, args.query, limit=10_000)
        if args.cid is not None:
            linked = set(_spend_search.conversation_ids(spend_log.path, args.cid, 10_000))
            ids = [i for i in ids if i in linked]
        ids = ids[: args.count]
    else:
        ids = _spend_search.conversation_ids(spend_log.path, args.cid, args.count)
    return _spend_search.records(spend_log.path, ids)


def _act(args: argparse.Namespace) -> int:
    from moodlemate.ai.cli import preferences

    if args.action == "path":
        print(log_path(args))
    else:
        on = args.action == "on"
        preferences.update("log", None if on else False)
        state = "records chats again" if on else "no longer records chats"
        print(f"moodlemate-ai {state} in {log_path(args)}", file=sys.stderr)
    return EXIT_OK


def _prompt(record: CallRecord) -> str:
    from moodlemate.ai._spend_search import prompt_words

    return prompt_words(record.prompt)


def _cut(text: str, limit: int | None) -> str:
    """One line: breaks written as ``\\n``; at most ``limit`` characters (None: all)."""
    flat = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
    if limit is not None and len(flat) > limit:
        return flat[: limit - 1] + "…"
    return flat
