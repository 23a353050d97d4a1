"""``moodlemate-ai completion``: tab completion of commands, options and choices, through
argcomplete (the ``cli`` extra). The shell asks the command itself, so completion always
matches the installed version; argcomplete is imported only when a shell asks."""

from __future__ import annotations

import argparse
from collections.abc import Callable
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


# -- what an argument completes to, read when the shell asks (never on an ordinary run) ----

Completer = Callable[..., list[str]]


def completes(action: argparse.Action, completer: Completer) -> argparse.Action:
    """Attach ``completer`` (argcomplete's ``completer`` attribute) to ``action``."""
    action.completer = completer  # type: ignore[attr-defined]
    return action


def template_names(**_: Any) -> list[str]:
    from moodlemate.ai.cli import preferences

    return sorted(preferences.section("templates"))


def alias_names(**_: Any) -> list[str]:
    from moodlemate.ai.cli import preferences

    return sorted(preferences.section("aliases"))


def model_names(**_: Any) -> list[str]:
    """Aliases, then every model the installed providers know."""
    import warnings

    from moodlemate.ai._plugins import registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        known = {info.name for name in registry.names() for info in registry.get(name).models()}
    return alias_names() + sorted(known)


def provider_names(**_: Any) -> list[str]:
    import warnings

    from moodlemate.ai._plugins import registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted(registry.names())
