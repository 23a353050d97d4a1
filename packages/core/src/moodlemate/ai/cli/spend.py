"""``moodlemate-ai spend``: what the calls in the spend log cost, by day, model or provider."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.exits import EXIT_OK
from moodlemate.ai.cli.logs import add_log_option, open_log
from moodlemate.ai.cli.table import print_table

_RELATIVE = re.compile(r"(\d{1,6})([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def since(text: str) -> datetime:
    """``7d`` / ``24h`` / ``30m`` ago, or an ISO date or time (UTC unless it says otherwise)."""
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        amount, unit = match.groups()
        return datetime.now(UTC) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use e.g. 7d, 24h, 2026-01-31 or 2026-01-31T09:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def add_parser(subparsers: Any) -> None:
    from moodlemate.ai._spend_log import GROUPINGS

    parser = subparsers.add_parser(
        "spend",
        help="total the spend log's cost by day, model or provider",
        description="Total the calls in the spend log, exactly (decimal, never rounded): "
        "calls, errors, tokens and cost per day (UTC), served model or provider. Calls "
        "without a known price are counted apart; a group holding only such calls costs "
        "'unknown', not $0. CHARGED is what the calls counted against budgets: the known "
        "cost plus, for replies of unknown cost, what was held or priced for them.",
        epilog="""examples:
  moodlemate-ai spend                       # per day (UTC), with the total
  moodlemate-ai spend --by model --since 7d
  moodlemate-ai spend --by provider --json | jq .total.cost
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--by", choices=GROUPINGS, default="day", help="how to group the totals (day)"
    )
    parser.add_argument(
        "--since",
        type=since,
        metavar="WHEN",
        help="only calls from then on: 7d, 24h, 30m ago, or an ISO date/time (UTC)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON: groups and total, costs as decimal strings (null when unknown)",
    )
    add_log_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sqlite3

    from moodlemate.ai._spend_log import totals

    spend_log = open_log(args)
    try:
        records = [] if spend_log is None else spend_log.calls(args.since)
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read the spend log: {exc}") from None
    groups, total = totals(records, args.by)
    if args.json:
        document = {
            "by": args.by,
            "since": None if args.since is None else args.since.isoformat(),
            "groups": [group.as_dict() for group in groups],
            "total": total.as_dict(),
        }
        print(json.dumps(document, indent=2))
        return EXIT_OK
    headers = [
        args.by.upper(),
        "CALLS",
        "ERRORS",
        "PROMPT",
        "COMPLETION",
        "COST",
        "UNPRICED",
        "CHARGED",
    ]
    rows = [
        [
            group.key,
            str(group.calls),
            str(group.errors),
            str(group.prompt_tokens),
            str(group.completion_tokens),
            _exact(group.cost),
            str(group.unpriced_calls),
            _exact(group.charged),
        ]
        for group in (*groups, total)
    ]
    print_table(headers, rows)
    return EXIT_OK


def _exact(cost: Decimal | None) -> str:
    """Every digit the prices gave, no float and no rounding."""
    return "unknown" if cost is None else f"${format(cost, 'f')}"
