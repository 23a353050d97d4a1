"""``moodlemate-ai tokens``: count a text's tokens locally, as ``GPT.count_tokens`` does."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from moodlemate.ai.cli import EXIT_OK, EXIT_USAGE
from moodlemate.ai.cli.common import CommandError, add_settings_options, make_gpt, read_stdin_text

DESCRIPTION = """\
Count the tokens of FILE (or of standard input when FILE is absent or '-') with the model's
tokenizer and print the number. Nothing is sent: counting is offline (tiktoken's data files
must be cached; see TIKTOKEN_CACHE_DIR in the README).
"""

EPILOG = """\
examples:
  moodlemate-ai tokens prompt.txt
  echo "How many tokens is this?" | moodlemate-ai tokens -m gpt-4
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tokens",
        help="count the tokens of a file or stdin, offline",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="text file ('-': stdin)"
    )
    parser.add_argument(
        "-m", "--model", help="whose tokenizer (default: MOODLEMATE_MODEL, else gpt-4o-mini)"
    )
    add_settings_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = read_stdin_text() if args.file == "-" else _read(args.file)
    gpt = make_gpt(args)
    print(gpt.count_tokens(text, gpt.model))
    return EXIT_OK


def _read(name: str) -> str:
    try:
        return Path(name).read_bytes().decode("utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read {name}: {exc.strerror or exc}", EXIT_USAGE) from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"{name} is not UTF-8 text (byte {exc.start + 1})", EXIT_USAGE) from None
