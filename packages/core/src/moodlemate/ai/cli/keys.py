"""``moodlemate-ai keys``: store a key per provider, so no shell needs it in its environment.

Keys are read from a hidden prompt (or standard input when piped), never from the command
line, where the process list and the shell history would show them; they are shown only
masked. The library itself reads them (:mod:`moodlemate.ai._key_store`), after a key given in
code or with ``--key`` and after the environment."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.completion import completes, provider_names
from moodlemate.ai.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from moodlemate.ai.cli.table import print_table

EPILOG = """\
examples:
  moodlemate-ai keys set openai            # asks for the key without echoing it
  pass show openai | moodlemate-ai keys set openai
  moodlemate-ai keys list
  moodlemate-ai keys get openai            # masked: sk-...7f3a
  moodlemate-ai keys path
  moodlemate-ai keys remove openai
"""
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def provider_name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a provider name")
    return text


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="store, list and remove API keys per provider",
        description="Store API keys per provider in a private file (mode 0600) in "
        "$XDG_CONFIG_HOME/moodlemate-ai, or in the OS keyring with --keyring. A stored key "
        "is used after --key and the environment (OPENAI_API_KEY, ...), and goes only where "
        "the provider's variable may go: its own service over https, or the endpoint its "
        "base-URL variable (OPENAI_BASE_URL) names.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    setter = actions.add_parser(
        "set",
        help="store a key, read from a hidden prompt or standard input",
        description="Store PROVIDER's key. On a terminal it is asked for without echo; "
        "otherwise the first line of standard input is read. Never give it as an argument.",
        epilog="examples:\n  moodlemate-ai keys set openai\n"
        "  printf '%s\\n' \"$KEY\" | moodlemate-ai keys set openrouter",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completes(
        setter.add_argument("provider", type=provider_name, metavar="PROVIDER"), provider_names
    )
    setter.add_argument(
        "--keyring",
        action="store_true",
        help="keep the key in the OS keyring (needs the keyring package: "
        "pip install 'moodlemate-ai[keyring]')",
    )
    getter = actions.add_parser(
        "get",
        help="show a stored key, masked",
        epilog="examples:\n  moodlemate-ai keys get openai",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completes(
        getter.add_argument("provider", type=provider_name, metavar="PROVIDER"), provider_names
    )
    actions.add_parser(
        "list",
        help="list the providers with a stored key (masked)",
        epilog="examples:\n  moodlemate-ai keys list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions.add_parser(
        "path",
        help="print the path of the keys file",
        epilog='examples:\n  ls -l "$(moodlemate-ai keys path)"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    remover = actions.add_parser(
        "remove",
        help="forget a stored key",
        epilog="examples:\n  moodlemate-ai keys remove openai",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completes(
        remover.add_argument("provider", type=provider_name, metavar="PROVIDER"), provider_names
    )
    parser.set_defaults(func=run)


def _provider_argument(parser: argparse.ArgumentParser) -> None:
    action = parser.add_argument("provider", type=provider_name, metavar="PROVIDER")
    completes(action, provider_names)


def masked(key: str) -> str:
    """Enough to tell keys apart, never enough to use one: ``sk-...7f3a``."""
    if len(key) < 16:
        return "*" * 8
    prefix = key[:3] if key[:3].isascii() else ""
    return f"{prefix}...{key[-4:]}"


def run(args: argparse.Namespace) -> int:
    from moodlemate.ai import _key_store

    action = args.keys_action
    if action == "path":
        print(_key_store.keys_path())
    elif action == "set":
        key = _read_key(args.provider)
        try:
            path = _key_store.write_key(args.provider, key, use_keyring=args.keyring)
        except ImportError:
            raise CommandError(
                "--keyring needs the keyring package: pip install 'moodlemate-ai[keyring]'",
                EXIT_USAGE,
            ) from None
        except OSError as exc:
            raise CommandError(f"cannot store the key: {exc.strerror or exc}") from None
        where = "the OS keyring" if args.keyring else str(path)
        print(f"stored the key for {args.provider} in {where} ({masked(key)})", file=sys.stderr)
    elif action == "get":
        stored = _key_store.stored_key(args.provider)
        if stored is None:
            print(f"no key stored for {args.provider}", file=sys.stderr)
            return EXIT_FAILURE
        print(masked(stored))
    elif action == "list":
        rows = []
        for name, value in sorted(_key_store.read_entries().items()):
            found = _key_store.stored_key(name)
            shown = "(unreadable)" if found is None else masked(found)
            rows.append([name, shown, "keyring" if isinstance(value, dict) else "file"])
        if rows:
            print_table(["PROVIDER", "KEY", "STORED IN"], rows)
        else:
            print("no keys stored (moodlemate-ai keys set PROVIDER)", file=sys.stderr)
    elif action == "remove":
        if not _key_store.delete_key(args.provider):
            print(f"no key stored for {args.provider}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"removed the key for {args.provider}", file=sys.stderr)
    return EXIT_OK


def _read_key(provider: str) -> str:
    from moodlemate.ai._credentials import check_key_format
    from moodlemate.ai.errors import ValidationError

    if sys.stdin.isatty():
        import getpass

        try:
            text = getpass.getpass(f"Enter the key for {provider} (not shown): ")
        except EOFError:
            raise CommandError("no key given", EXIT_USAGE) from None
    else:
        text = sys.stdin.readline()
    key = text.strip()
    try:
        return check_key_format(key)
    except ValidationError as exc:
        raise CommandError(exc.message, EXIT_USAGE) from None
