"""``moodlemate-ai config``: trust or untrust a project-local ``moodlemate.toml``, and show
which config files apply and whether the project one is trusted.

A project file is untrusted until trusted here (:mod:`moodlemate.ai._project_trust`): the
command shows what the file would do with credentials before it records the trust.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

EPILOG = """\
examples:
  moodlemate-ai config status                  # the config files in use, and the trust
  moodlemate-ai config trust                   # trust ./moodlemate.toml as it is now
  moodlemate-ai config trust path/to/moodlemate.toml
  moodlemate-ai config untrust
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config",
        help="trust or untrust a project's moodlemate.toml; show the config files in use",
        description="A project-local moodlemate.toml (one that came with a cloned repository) "
        "is not trusted with credentials or data until you trust it: it may not name an "
        "environment variable to send, receive a key it does not hold, send its own over "
        "plain http to another machine, or choose the spend log's file or the Redis server. "
        "Trust is given to the file's current content; an edited file "
        "is untrusted again. CI jobs may set MOODLEMATE_TRUST_PROJECT_CONFIG=1 instead.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in (
        ("trust", "trust the file's current content (default ./moodlemate.toml)"),
        ("untrust", "remove the file from the trusted list (default ./moodlemate.toml)"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("path", nargs="?", default="moodlemate.toml", metavar="PATH")
        action.set_defaults(func=_trust if name == "trust" else _untrust)
    status = actions.add_parser(
        "status",
        help="list the config files that apply and whether the project file is trusted",
    )
    status.set_defaults(func=_status)


def _trust(args: argparse.Namespace) -> int:
    from moodlemate.ai._config_file import read_file
    from moodlemate.ai._project_trust import trust

    path = Path(args.path).expanduser()
    if not path.is_file():
        raise CommandError(f"no such file: {path}", EXIT_USAGE)
    top, profiles, _ = read_file(path)  # refuses a file that is no valid config
    for line in _credential_lines(top, profiles):
        print(line)
    resolved, sha256 = trust(path, os.environ)
    print(f"trusted {resolved} (sha256 {sha256[:16]}...); editing it makes it untrusted again")
    return EXIT_OK


def _untrust(args: argparse.Namespace) -> int:
    from moodlemate.ai._project_trust import untrust

    path = Path(args.path).expanduser()
    if not untrust(path, os.environ):
        print(f"{path.resolve()} was not trusted")
        return EXIT_FAILURE
    print(f"no longer trusted: {path.resolve()}")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from moodlemate.ai._config_file import CONFIG_ENV, PROJECT_FILE, config_paths, read_file
    from moodlemate.ai._project_trust import TRUST_ENV, allow_list_path, is_trusted

    paths = config_paths(os.environ)
    if not paths:
        print("no config file applies")
    for path in paths:
        if path == Path(PROJECT_FILE) and not os.environ.get(CONFIG_ENV):
            *_, sha256 = read_file(path)
            trusted = is_trusted(path.resolve(), sha256, os.environ)
            how = f" ({TRUST_ENV} is set)" if trusted and os.environ.get(TRUST_ENV) else ""
            state = f"trusted{how}" if trusted else "NOT trusted"
            print(f"{path.resolve()}: project file, {state}")
        else:
            print(f"{path.resolve()}: your own file, trusted")
    print(f"trusted project files are listed in {allow_list_path(os.environ)}")
    return EXIT_OK


def _credential_lines(top: dict[str, Any], profiles: dict[str, dict[str, Any]]) -> list[str]:
    """What the file does with credentials and where it sends or keeps data, for the user to
    check before trusting it."""
    lines = []
    tables = {"top level": top, **{f"[profiles.{n}]": t for n, t in profiles.items()}}
    for name, table in tables.items():
        points = table.get("endpoint") or (
            f"the {table['provider']} service" if "provider" in table else None
        )
        if points:
            lines.append(f"{name}: calls go to {points}")
        if "api_key_env" in table:
            lines.append(f"{name}: sends the value of ${table['api_key_env']} as the API key")
        if "api_key" in table:
            lines.append(f"{name}: holds an API key of its own")
        if "headers" in table:
            lines.append(f"{name}: sends headers {', '.join(sorted(table['headers']))}")
        if "log" in table:
            lines.append(f"{name}: writes the spend log to {table['log']}")
        if "redis" in table:
            from moodlemate.ai._redis import shown_url

            lines.append(
                f"{name}: shares budgets and pacing through Redis at {shown_url(table['redis'])}"
            )
    return lines
