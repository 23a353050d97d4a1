"""The ``moodlemate-ai`` command (also ``python -m moodlemate.ai``). Each subcommand lives in
its own module with an ``add_parser(subparsers)`` function that sets ``func`` (returning the
exit code)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib import import_module

from moodlemate.ai.cli.exits import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
)
from moodlemate.ai.errors import MoodlemateError

__all__ = ["main"]

# Subcommand modules, in the order `--help` lists them.
COMMANDS = (
    "chat",
    "tokens",
    "batch",
    "demo",
    "serve",
    "providers",
    "models",
    "logs",
    "spend",
    "config",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moodlemate-ai",
        description="Chat with LLM providers through the moodlemate-ai GPT facade.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        import_module(f"moodlemate.ai.cli.{name}").add_parser(subparsers)
    for subparser in subparsers.choices.values():
        _accept_shared_options(subparser)
    return parser


def _accept_shared_options(subparser: argparse.ArgumentParser) -> None:
    """``moodlemate-ai chat -v ...`` as well as ``moodlemate-ai -v chat ...``: SUPPRESS keeps
    the value given before the subcommand when none is given after it."""
    subparser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log more (-vv: debug)",
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("moodlemate-ai")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        own = "unknown"
    return f"moodlemate-ai {own} (Python {sys.version.split()[0]})"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from moodlemate.ai._secrets import RedactingFilter

    for handler in logging.getLogger().handlers:  # whatever logger a record comes from
        handler.addFilter(RedactingFilter())
    if args.verbose < 2:  # our retry warnings already say what stamina's would
        logging.getLogger("stamina").setLevel(logging.ERROR)
    from moodlemate.ai.cli.common import CommandError

    try:
        code: int = args.func(args)
    except CommandError as exc:
        prefix = "error: " if exc.code == EXIT_USAGE else ""
        print(f"moodlemate-ai {args.command}: {prefix}{exc}", file=sys.stderr)
        return exc.code
    except MoodlemateError as exc:
        print(f"moodlemate-ai: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("moodlemate-ai: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader left (`moodlemate-ai models | head`): stop quietly, and point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
