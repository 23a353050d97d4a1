"""``moodlemate-ai chat``: one prompt in, the reply on stdout; usage on stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moodlemate.ai.cli.chat_reply import add_reply_options, deliver
from moodlemate.ai.cli.common import (
    CommandError,
    add_retry_options,
    add_settings_options,
    make_gpt,
    positive_int,
    read_stdin_text,
    temperature,
)
from moodlemate.ai.cli.exits import EXIT_USAGE

DESCRIPTION = """\
Send one prompt and print the reply. The prompt is the PROMPT argument, or standard input
when PROMPT is absent or '-'. The reply goes to standard output, streamed as it arrives when
that is a terminal; --usage reports tokens and cost on standard error, so
`moodlemate-ai chat ... > reply.txt` keeps only the reply. Each chat is kept as a conversation
(in $XDG_DATA_HOME/moodlemate-ai/conversations): -c goes on with the latest one.
"""

EPILOG = """\
examples:
  moodlemate-ai chat "Name three primes."
  moodlemate-ai chat -m gpt-4o -s "Answer in French." --usage "What is a haiku?"
  git diff | moodlemate-ai chat -s "Write a commit message for this diff."
  moodlemate-ai chat --endpoint http://localhost:11434/v1 -m llama3.2 "Hi"
  moodlemate-ai chat "My name is Ada." && moodlemate-ai chat -c "What is my name?"
  moodlemate-ai chat --conversation french -s "Answer in French." "Hello"
  moodlemate-ai chat --json "Hi" | jq .usage
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="send one prompt and print the reply",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", nargs="?", metavar="PROMPT", help="the user message ('-': stdin)")
    parser.add_argument(
        "-m", "--model", help="model to use (default: MOODLEMATE_MODEL, else the provider's)"
    )
    parser.add_argument("-s", "--system", metavar="SYSTEM", help="system message (default: none)")
    parser.add_argument(
        "--temperature", type=temperature, metavar="T", help="sampling temperature, 0-2 (0.7)"
    )
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        metavar="N",
        help="cap on reply tokens (default: the model's own limit)",
    )
    parser.add_argument(
        "--usage", action="store_true", help="report tokens, cost and attempts on stderr"
    )
    add_reply_options(parser)
    add_settings_options(parser)
    add_retry_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prompt = _prompt(args.prompt)
    gpt = make_gpt(args)
    options: dict[str, Any] = {}
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    return deliver(gpt, args, prompt, options)


def _prompt(argument: str | None) -> str:
    if argument is not None and argument != "-":
        text = argument
    elif argument is None and sys.stdin.isatty():
        raise CommandError("no prompt: give PROMPT, or pipe it on standard input", EXIT_USAGE)
    else:
        text = read_stdin_text().rstrip("\n")
    if not text.strip():
        raise CommandError("the prompt is empty", EXIT_USAGE)
    return text
