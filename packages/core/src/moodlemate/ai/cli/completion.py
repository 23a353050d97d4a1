"""``moodlemate-ai completion``: tab completion of commands, options and choices, through
argcomplete (the ``cli`` extra). The shell asks the command itself, so completion always
matches the installed version; argcomplete is imported only when a shell asks."""

from __future__ import annotations

import argparse
from typing import Any

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.exits import EXIT_OK, EXIT_USAGE

SHELLS = ("bash", "zsh", "fish", "tcsh", "powershell")
EPILOG = """\
examples:
  eval "$(moodlemate-ai completion bash)"      # in ~/.bashrc
  eval "$(moodlemate-ai completion zsh)"       # in ~/.zshrc
  moodlemate-ai completion fish > ~/.config/fish/completions/moodlemate-ai.fish
"""
_MISSING = "completion needs argcomplete: pip install 'moodlemate-ai[cli]'"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "completion",
        help="print the shell code that enables tab completion",
        description="Print the code that makes SHELL complete moodlemate-ai's commands, "
        "options and choices (needs argcomplete: pip install 'moodlemate-ai[cli]').",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help=", ".join(SHELLS))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import argcomplete
    except ImportError:
        raise CommandError(_MISSING, EXIT_USAGE) from None
    print(argcomplete.shellcode(["moodlemate-ai"], shell=args.shell), end="")
    return EXIT_OK


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit (returns when argcomplete is absent)."""
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)
