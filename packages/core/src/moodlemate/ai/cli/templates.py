"""Saved prompts: ``chat --save NAME`` keeps the system message, model and options given with
it; ``chat -t NAME`` starts from them (options given on the command line still win).
``moodlemate-ai templates`` lists, shows and removes them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from moodlemate.ai.cli import preferences
from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.completion import completes, template_names
from moodlemate.ai.cli.conversations import name_type
from moodlemate.ai.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from moodlemate.ai.cli.table import print_table

FIELDS = ("system", "model", "temperature", "max_tokens")
EPILOG = """\
examples:
  moodlemate-ai chat --save french -s "Answer in French." -m gpt-4o-mini --temperature 0.2
  moodlemate-ai -t french "Good morning"
  moodlemate-ai templates list
  moodlemate-ai templates show french
  moodlemate-ai templates remove french
"""


def save_from(args: argparse.Namespace) -> None:
    """``chat --save NAME``: store what this command line set, and nothing else."""
    fields = {name: value for name in FIELDS if (value := getattr(args, name, None)) is not None}
    if not fields:
        raise CommandError("--save needs something to save: -s, -m, --temperature", EXIT_USAGE)
    templates = preferences.section("templates")
    templates[args.save] = fields
    path = preferences.update("templates", templates)
    print(f"saved template {args.save!r} in {path}", file=sys.stderr)


def apply_to(args: argparse.Namespace) -> None:
    """``chat -t NAME``: fill each setting the command line left unset from the template."""
    template = preferences.section("templates").get(args.template)
    if not isinstance(template, dict):
        missing = f"no template {args.template!r} (moodlemate-ai templates list)"
        raise CommandError(missing, EXIT_USAGE)
    for name in FIELDS:
        if getattr(args, name, None) is None and template.get(name) is not None:
            setattr(args, name, template[name])


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "templates",
        help="list, show and remove saved prompts (chat --save / -t)",
        description="Templates saved with `chat --save NAME`, in "
        "$XDG_CONFIG_HOME/moodlemate-ai/cli.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="templates_action", metavar="ACTION", required=True)
    actions.add_parser(
        "list",
        help="list the templates",
        epilog="examples:\n  moodlemate-ai templates list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for action, what in (("show", "print a template as JSON"), ("remove", "remove a template")):
        sub = actions.add_parser(
            action,
            help=what,
            epilog=f"examples:\n  moodlemate-ai templates {action} french",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        completes(sub.add_argument("name", type=name_type, metavar="NAME"), template_names)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    templates = preferences.section("templates")
    action = args.templates_action
    if action == "list":
        rows = [
            [name, str(t.get("model") or "-"), str(t.get("system") or "-")[:60]]
            for name, t in sorted(templates.items())
            if isinstance(t, dict)
        ]
        if rows:
            print_table(["NAME", "MODEL", "SYSTEM"], rows)
        return EXIT_OK
    if args.name not in templates:
        print(f"no template {args.name!r}", file=sys.stderr)
        return EXIT_FAILURE
    if action == "show":
        print(json.dumps(templates[args.name], indent=2))
    else:
        del templates[args.name]
        preferences.update("templates", templates or None)
    return EXIT_OK
