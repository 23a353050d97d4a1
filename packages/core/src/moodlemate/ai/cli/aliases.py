"""``moodlemate-ai aliases``: short names for models (``4o`` for ``gpt-4o``), used wherever
the command takes a model: ``-m``, templates, ``models default``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moodlemate.ai.cli import preferences
from moodlemate.ai.cli.completion import alias_names, completes
from moodlemate.ai.cli.conversations import name_type
from moodlemate.ai.cli.exits import EXIT_FAILURE, EXIT_OK
from moodlemate.ai.cli.table import print_table

EPILOG = """\
examples:
  moodlemate-ai aliases set mini gpt-4o-mini
  moodlemate-ai -m mini "Hello"
  moodlemate-ai aliases list
  moodlemate-ai aliases remove mini
"""


def resolve(model: str | None) -> str | None:
    """The model an alias stands for; any other name unchanged."""
    if model is None:
        return None
    target = preferences.section("aliases").get(model)
    return target if isinstance(target, str) and target else model


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "aliases",
        help="manage short names for models",
        description="Short names for models, usable wherever a model is named (-m, templates, "
        "models default); kept in $XDG_CONFIG_HOME/moodlemate-ai/cli.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="aliases_action", metavar="ACTION", required=True)
    setter = actions.add_parser(
        "set",
        help="make ALIAS stand for MODEL",
        epilog="examples:\n  moodlemate-ai aliases set 4o gpt-4o",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    setter.add_argument("alias", type=name_type, metavar="ALIAS")
    setter.add_argument("model", metavar="MODEL")
    actions.add_parser(
        "list",
        help="list the aliases",
        epilog="examples:\n  moodlemate-ai aliases list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    remover = actions.add_parser(
        "remove",
        help="remove an alias",
        epilog="examples:\n  moodlemate-ai aliases remove 4o",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completes(remover.add_argument("alias", type=name_type, metavar="ALIAS"), alias_names)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    aliases = preferences.section("aliases")
    if args.aliases_action == "set":
        aliases[args.alias] = args.model
        preferences.update("aliases", aliases)
    elif args.aliases_action == "remove":
        if aliases.pop(args.alias, None) is None:
            print(f"no alias {args.alias!r}", file=sys.stderr)
            return EXIT_FAILURE
        preferences.update("aliases", aliases or None)
    elif aliases:
        print_table(["ALIAS", "MODEL"], sorted(aliases.items()))
    return EXIT_OK
