"""``moodlemate-ai chat``: one prompt in, the reply on stdout; usage on stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moodlemate.ai.cli.chat_reply import add_reply_options, deliver
from moodlemate.ai.cli.common import (
    CommandError,
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
  moodlemate-ai chat -m gpt-4o -a photo.jpg "What is in this picture?"
  moodlemate-ai chat -a https://example.org/chart.png -a report.pdf "Do they agree?"
  cat scan.png | moodlemate-ai chat --at - image "Read the text in this image."
  moodlemate-ai chat -o seed 7 -o stop END -o response_format '{"type": "json_object"}' "JSON?"
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
        "-a",
        "--attachment",
        dest="attachments",
        action="append",
        metavar="PATH_OR_URL",
        help="attach an image, PDF or audio file, or an image URL, typed by its bytes "
        "(repeatable; '-': standard input's bytes)",
    )
    parser.add_argument(
        "--at",
        dest="typed_attachments",
        action="append",
        nargs=2,
        metavar=("PATH", "TYPE"),
        help="attach PATH ('-': standard input) that must be TYPE: image, pdf or audio",
    )
    parser.add_argument(
        "-o",
        "--option",
        dest="options",
        action="append",
        nargs=2,
        metavar=("NAME", "VALUE"),
        help="a request option (seed, stop, top_p, tools, response_format, reasoning_effort...; "
        "JSON for structured ones, @FILE to read it); other names are sent as given "
        "(repeatable)",
    )
    parser.add_argument(
        "--usage", action="store_true", help="report tokens, cost and attempts on stderr"
    )
    add_reply_options(parser)
    add_settings_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moodlemate.ai.cli.chat_inputs import attachments, request_options

    stdin_taken = "-" in (args.attachments or ()) or any(
        path == "-" for path, _ in args.typed_attachments or ()
    )
    prompt = _prompt(args.prompt, stdin_taken)
    options: dict[str, Any] = {}
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    named, extra = request_options(args.options)
    options["request_options"], options["extra"] = named, extra
    options["attachments"] = attachments(args.attachments, args.typed_attachments)
    gpt = make_gpt(args)
    return deliver(gpt, args, prompt, options)


def _prompt(argument: str | None, stdin_taken: bool) -> str:
    if argument is not None and argument != "-":
        text = argument
    elif stdin_taken:
        raise CommandError(
            "standard input is an attachment here: give the prompt as PROMPT", EXIT_USAGE
        )
    elif argument is None and sys.stdin.isatty():
        raise CommandError("no prompt: give PROMPT, or pipe it on standard input", EXIT_USAGE)
    else:
        text = read_stdin_text().rstrip("\n")
    if not text.strip():
        raise CommandError("the prompt is empty", EXIT_USAGE)
    return text
