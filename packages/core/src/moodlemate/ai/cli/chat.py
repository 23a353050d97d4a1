"""``moodlemate-ai chat``: one prompt in, the reply on stdout; usage on stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moodlemate.ai.cli import templates
from moodlemate.ai.cli.chat_reply import add_reply_options, deliver
from moodlemate.ai.cli.chat_schema import add_schema_options, answer_schema_of
from moodlemate.ai.cli.chat_tools import add_tool_options, chosen_tools, tool_approval
from moodlemate.ai.cli.common import (
    CommandError,
    add_retry_options,
    add_settings_options,
    make_gpt,
    positive_int,
    read_stdin_text,
    temperature,
)
from moodlemate.ai.cli.completion import completes, model_names, template_names
from moodlemate.ai.cli.conversations import name_type
from moodlemate.ai.cli.exits import EXIT_OK, EXIT_USAGE

DESCRIPTION = """\
Send one prompt and print the reply. The prompt is the PROMPT argument, or standard input
when PROMPT is absent or '-'; with neither on a terminal, an interactive chat starts (one
conversation across turns; !multi ... !end for several lines; !exit, !quit or Ctrl-D to
leave). `moodlemate-ai "PROMPT"` (no command) is the same as `moodlemate-ai chat "PROMPT"`.
The reply goes to standard output, streamed as it arrives when that is a terminal; --usage
reports tokens and cost on standard error, so `moodlemate-ai chat ... > reply.txt` keeps only
the reply. Each chat is kept as a conversation
(in $XDG_DATA_HOME/moodlemate-ai/conversations): -c goes on with the latest one.
With -T NAME (a tool an installed plugin registers) or --functions FILE.py (every public
function in the file), the model may call tools: each call is shown and asked about on the
terminal before it runs (--yes: without asking; needed when not on a terminal), and the
reply comes once the model has answered.
"""

EPILOG = """\
examples:
  moodlemate-ai "Name three primes."
  moodlemate-ai chat                          # interactive, on a terminal
  moodlemate-ai chat --save terse -s "Answer in one line." -m gpt-4o-mini
  moodlemate-ai -t terse "What is a monad?"
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
  moodlemate-ai chat --functions tools.py "Is it warmer in Oslo or Rome?"   # asks before each call
  moodlemate-ai chat -T weather --yes "Weather in Oslo?"   # a plugin's tool, run without asking
  moodlemate-ai chat --schema 'name, age int, bio: a short bio' "Invent a person."
  moodlemate-ai chat --schema-multi person.schema.json "Invent three people." | jq '.[].name'
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
    completes(
        parser.add_argument(
            "-m",
            "--model",
            help="model or alias to use (default: MOODLEMATE_MODEL, else `models default`, "
            "else the provider's)",
        ),
        model_names,
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
    completes(
        parser.add_argument(
            "-t", "--template", type=name_type, metavar="NAME", help="start from a saved template"
        ),
        template_names,
    )
    parser.add_argument(
        "--save",
        type=name_type,
        metavar="NAME",
        help="save -s, -m, --temperature and --max-tokens as template NAME (sends nothing)",
    )
    add_tool_options(parser)
    add_reply_options(parser)
    add_schema_options(parser)
    add_settings_options(parser)
    add_retry_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.save is not None:
        templates.save_from(args)
        return EXIT_OK
    if args.template is not None:
        templates.apply_to(args)
    args.model, args.default_model = _models(args.model)
    stdin_taken = "-" in (args.attachments or ()) or any(
        path == "-" for path, _ in args.typed_attachments or ()
    )
    if args.prompt is None and sys.stdin.isatty() and not stdin_taken:
        from moodlemate.ai.cli.chat_interactive import converse

        return converse(args, make_gpt(args), _options(args))
    prompt = _prompt(args.prompt, stdin_taken)
    gpt = make_gpt(args)
    return deliver(gpt, args, prompt, _options(args))


def _models(given: str | None) -> tuple[str | None, str | None]:
    """(-m or the template's model through the aliases, the `models default` model). The
    default is a default: MOODLEMATE_MODEL and a config file's model rank above it
    (:func:`~moodlemate.ai.cli.common.make_gpt` applies it), and, being the GPT's model
    rather than an option, it never overrides a continued conversation's."""
    from moodlemate.ai.cli import preferences
    from moodlemate.ai.cli.aliases import resolve

    default = None
    if given is None:
        stored = preferences.load().get("default_model")
        default = stored if isinstance(stored, str) and stored else None
    return resolve(given), resolve(default)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from moodlemate.ai.cli.chat_inputs import attachments, request_options

    options: dict[str, Any] = {}
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    named, extra = request_options(args.options)
    options["request_options"], options["extra"] = named, extra
    options["attachments"] = attachments(args.attachments, args.typed_attachments)
    options["tools"] = chosen_tools(args)
    options["approve"] = tool_approval(args)
    options["schema"] = answer_schema_of(args)
    return options


def _prompt(argument: str | None, stdin_taken: bool) -> str:
    if argument is not None and argument != "-":
        text = argument
    elif stdin_taken:
        raise CommandError(
            "standard input is an attachment here: give the prompt as PROMPT", EXIT_USAGE
        )
    else:
        text = read_stdin_text().rstrip("\n")
    if not text.strip():
        raise CommandError("the prompt is empty", EXIT_USAGE)
    return text
