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
    "aliases",
    "templates",
    "keys",
    "logs",
    "spend",
    "config",
    "completion",
)
DEFAULT_COMMAND = "chat"
_GLOBAL_FLAGS = ("-h", "--help", "--version")

EPILOG = """\
examples:
  moodlemate-ai "Name three primes."          # no command: chat
  moodlemate-ai chat                          # on a terminal: an interactive chat
  moodlemate-ai -m gpt-4o -s "Be terse." "Why is the sky blue?"
  moodlemate-ai keys set openai               # store a key (asked for, never echoed)
  moodlemate-ai models --endpoint http://127.0.0.1:8000/v1
  moodlemate-ai logs -q "primes"              # search what was asked and answered
  moodlemate-ai spend --by model
  moodlemate-ai COMMAND --help                # every command has its own examples
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``command`` only that subcommand's (importing one
    command's module, not fourteen: a piped ``chat`` starts in about half the time)."""
    parser = argparse.ArgumentParser(
        prog="moodlemate-ai",
        description="Chat with LLM providers through the moodlemate-ai GPT facade. "
        'Without a command, the arguments are chat\'s: moodlemate-ai "PROMPT".',
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    parser.add_argument(
        "--version", action=_VersionAction, nargs=0, help="show the version and exit"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if command is None else (command,):
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


class _VersionAction(argparse.Action):
    """argparse's ``version`` action asks for the text up front; this looks it up only when
    ``--version`` is given (importlib.metadata is not free)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(_version())
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("moodlemate-ai")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        own = "unknown"
    return f"moodlemate-ai {own} (Python {sys.version.split()[0]})"


def with_default_command(argv: Sequence[str]) -> list[str]:
    """``moodlemate-ai "prompt"`` and ``moodlemate-ai -m gpt-4o "prompt"`` mean ``chat``: the
    first argument that is neither ``-v`` nor a command starts chat's arguments; ``--help``
    and ``--version`` stay the command's own."""
    args = list(argv)
    for index, arg in enumerate(args):
        if arg in ("-v", "--verbose") or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
            continue
        if arg in COMMANDS or arg in _GLOBAL_FLAGS:
            return args
        return [*args[:index], DEFAULT_COMMAND, *args[index:]]
    return args


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` runs, or None when it asks the program itself (``--help``)."""
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if arg in _GLOBAL_FLAGS:
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw == ["--version"]:  # answered before any subcommand module is imported
        print(_version())
        return 0
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions (argcomplete)
        from moodlemate.ai.cli.completion import complete

        complete(build_parser())
    if not raw:
        if sys.stdin is not None and not sys.stdin.isatty():
            raw = [DEFAULT_COMMAND]  # `echo hi | moodlemate-ai`
        else:
            build_parser().print_help()
            return 0
    argv = with_default_command(raw)
    args = build_parser(_command_of(argv)).parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from moodlemate.ai._secrets import RedactingFilter
    from moodlemate.ai.cli.terminal import SafeFormatter

    for handler in logging.getLogger().handlers:  # whatever logger a record comes from
        handler.addFilter(RedactingFilter())
        handler.setFormatter(SafeFormatter(handler.formatter))  # quotes servers' messages
    if args.verbose < 2:  # our retry warnings already say what stamina's would
        logging.getLogger("stamina").setLevel(logging.ERROR)
    from moodlemate.ai.cli.common import CommandError
    from moodlemate.ai.cli.terminal import safe

    try:
        code: int = args.func(args)
    except CommandError as exc:
        prefix = "error: " if exc.code == EXIT_USAGE else ""
        print(safe(f"moodlemate-ai {args.command}: {prefix}{exc}"), file=sys.stderr)
        return exc.code
    except MoodlemateError as exc:
        print(safe(f"moodlemate-ai: {type(exc).__name__}: {exc}"), file=sys.stderr)
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
