"""``moodlemate-ai tokens``: count a text's tokens locally, as ``GPT.count_tokens`` does."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from moodlemate.ai.cli.common import CommandError, add_settings_options, make_gpt, read_stdin_text
from moodlemate.ai.cli.exits import EXIT_OK, EXIT_USAGE

DESCRIPTION = """\
Count the tokens of FILE (or of standard input when FILE is absent or '-') with the model's
tokenizer and print the number. Nothing is sent, and counting works offline (tiktoken's files
for current OpenAI models ship with moodlemate-ai-openai). When the model's tokenizer is not
known (a non-OpenAI model, a custom endpoint's model), the count is an estimate: standard
error says so, and --json has "estimate": true.
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
        "-m", "--model", help="whose tokenizer (default: MOODLEMATE_MODEL, else the provider's)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON object: tokens, model, provider, encoding, estimate",
    )
    add_settings_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = read_stdin_text() if args.file == "-" else _read(args.file)
    gpt = make_gpt(args)
    tokens = gpt.count_tokens(text, gpt.model)
    # The chat-format count says whether the tokenizer is the model's own.
    probe = gpt.count_message_tokens([{"role": "user", "content": ""}], gpt.model)
    if args.json:
        document = {
            "tokens": tokens,
            "model": gpt.model,
            "provider": gpt.provider.name,
            "encoding": probe.encoding,
            "estimate": probe.estimate,
        }
        print(json.dumps(document))
        return EXIT_OK
    print(tokens)
    if probe.estimate:
        how = f" with {probe.encoding}" if probe.encoding else ""
        print(
            f"moodlemate-ai tokens: an estimate: the tokenizer of {gpt.model!r} is not "
            f"known; counted{how}",
            file=sys.stderr,
        )
    return EXIT_OK


def _read(name: str) -> str:
    try:
        return Path(name).read_bytes().decode("utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read {name}: {exc.strerror or exc}", EXIT_USAGE) from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"{name} is not UTF-8 text (byte {exc.start + 1})", EXIT_USAGE) from None
