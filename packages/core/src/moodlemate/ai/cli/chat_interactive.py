"""``moodlemate-ai chat`` on a terminal without a prompt: a conversation, turn after turn.

Each turn is an ordinary ``chat`` turn (:func:`~moodlemate.ai.cli.chat_reply.deliver`), so
the conversation is saved after every reply and ``-c`` goes on with it later. A line
``!multi`` starts a message of several lines, ended by ``!end``; ``!exit``, ``!quit`` or
Ctrl-D leave. Ctrl-C stops the reply being written and returns to the prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING, Any

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.exits import EXIT_OK
from moodlemate.ai.cli.terminal import safe

if TYPE_CHECKING:
    from moodlemate.ai._gpt import GPT

__all__ = ["converse"]

EXIT_WORDS = ("!exit", "!quit")
MULTI_START, MULTI_END = "!multi", "!end"


def converse(args: argparse.Namespace, gpt: GPT, options: dict[str, Any]) -> int:
    from moodlemate.ai.cli import conversations
    from moodlemate.ai.cli.chat_reply import deliver
    from moodlemate.ai.errors import MoodlemateError

    _enable_line_editing()
    model = args.model or _default_model(gpt)  # make_gpt gave it the `models default` one
    print(
        f"Chatting with {safe(model)}. Type {EXIT_WORDS[0]} or {EXIT_WORDS[1]} (or Ctrl-D) to "
        f"leave, {MULTI_START} to write several lines and {MULTI_END} to send them.",
        file=sys.stderr,
    )
    while True:
        prompt = _read_prompt()
        if prompt is None:
            return EXIT_OK
        if not prompt.strip():
            continue
        try:
            deliver(gpt, args, prompt, options)
        except KeyboardInterrupt:
            print("\n(interrupted)", file=sys.stderr)
        except CommandError as exc:
            print(safe(f"error: {exc}"), file=sys.stderr)
        except MoodlemateError as exc:
            print(safe(f"{type(exc).__name__}: {exc}"), file=sys.stderr)
        else:
            # The next turns go on with the conversation this one saved.
            args.conversation = conversations.current()
            args.continue_conversation = False


def _read_prompt() -> str | None:
    """One message, or None to leave (Ctrl-D, !exit, !quit)."""
    try:
        line = input("> ")
        if line.strip() in EXIT_WORDS:
            return None
        if line.strip() != MULTI_START:
            return line
        lines: list[str] = []
        while (line := input("... ")).strip() != MULTI_END:
            lines.append(line)
        return "\n".join(lines)
    except EOFError:
        print(file=sys.stderr)
        return None


def _default_model(gpt: GPT) -> str:
    from moodlemate.ai.errors import ValidationError

    try:
        return gpt.model
    except ValidationError as exc:
        raise CommandError(exc.message) from None


def _enable_line_editing() -> None:
    """Arrow keys and history for ``input()`` where the readline module exists."""
    with contextlib.suppress(ImportError):  # absent on Windows
        import readline  # noqa: F401
