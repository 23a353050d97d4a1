"""How ``chat`` delivers a reply: streamed to a terminal or waited for, as text or JSON, alone
or as the next turn of a conversation kept between runs (:mod:`.conversations`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from moodlemate.ai.cli.common import CommandError, money, tokens_line
from moodlemate.ai.cli.exits import EXIT_OK, EXIT_USAGE
from moodlemate.ai.cli.terminal import safe_for

if TYPE_CHECKING:
    from decimal import Decimal

    from moodlemate.ai._conversation import Conversation
    from moodlemate.ai._gpt import GPT
    from moodlemate.ai._provider import Completion

__all__ = ["add_reply_options", "deliver", "show_reasoning"]


def add_reply_options(parser: argparse.ArgumentParser) -> None:
    from moodlemate.ai.cli.conversations import name_type

    parser.add_argument(
        "--no-stream",
        action="store_true",
        help="wait for the whole reply (default: stream it when standard output is a terminal)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: text, model, finish_reason, usage, cost, attempts, "
        "request_id, reasoning (and conversation)",
    )
    parser.add_argument(
        "--reasoning",
        action="store_true",
        help="show the reasoning the server returned (a Responses reasoning summary, "
        "OpenRouter's reasoning, reasoning_content) on standard error after the reply, dimmed "
        "on a terminal; never part of the reply on standard output",
    )
    continuing = parser.add_mutually_exclusive_group()
    continuing.add_argument(
        "-c",
        "--continue",
        dest="continue_conversation",
        action="store_true",
        help="go on with the most recent conversation",
    )
    continuing.add_argument(
        "--conversation",
        metavar="NAME",
        type=name_type,
        help="go on with the conversation NAME (created on first use)",
    )


def deliver(gpt: GPT, args: argparse.Namespace, prompt: str, options: dict[str, Any]) -> int:
    """Send ``prompt`` as ``args`` ask, print the reply, save the conversation."""
    from moodlemate.ai.cli import conversations
    from moodlemate.ai.errors import ValidationError

    if args.conversation is not None:
        name = args.conversation
    elif args.continue_conversation:
        name = conversations.current()
    else:
        name = conversations.LAST
    try:
        model = args.model or gpt.model
    except ValidationError as exc:  # a provider without a default model
        raise CommandError(exc.message, EXIT_USAGE) from None
    talk = gpt.conversation(name)
    continuing = args.conversation is not None or args.continue_conversation
    stored = conversations.load_text(name) if continuing else None
    try:
        if stored is not None:
            talk.load_json(stored)
        else:
            talk.system_message = ""
            talk.model = model
        _apply(talk, args, options)
    except ValidationError as exc:
        raise CommandError(f"conversation {name!r}: {exc.message}") from None
    parts = options.get("attachments", ())
    schema = options.get("schema")
    if schema is not None:
        return _deliver_answer(gpt, args, talk, name, prompt, parts, schema)
    streaming = sys.stdout.isatty() and not args.no_stream and not args.json
    deltas: Iterator[str] = (
        talk.stream(prompt, attachments=parts)
        if streaming
        else iter((talk.ask(prompt, attachments=parts),))
    )
    text = _print(deltas, streaming=streaming, json_output=args.json)
    completion = gpt.last_result
    assert completion is not None  # set by the call that just returned
    conversations.save(name, talk.to_json())
    conversations.link_to_log(gpt, name)
    if args.json:
        from moodlemate.ai._completion_json import completion_fields

        fields = completion_fields(completion)
        print(json.dumps({**fields, "reasoning": completion.reasoning, "conversation": name}))
    elif not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
    if getattr(args, "reasoning", False) and not args.json:
        show_reasoning(completion)
    if args.usage:
        _report(completion)
    return EXIT_OK


def _deliver_answer(
    gpt: GPT,
    args: argparse.Namespace,
    talk: Conversation,
    name: str,
    prompt: str,
    parts: Any,
    schema: dict[str, Any],
) -> int:
    """``--schema``: the checked answer as one JSON value (re-asked as ``parse`` does).
    Every reply it took is in the ledger, so --usage and --json report their sum."""
    from moodlemate.ai.cli import conversations
    from moodlemate.ai.cli.chat_schema import printed_answer

    calls, cost = gpt.ledger.calls, gpt.ledger.cost
    answer = printed_answer(args, talk.ask(prompt, attachments=parts, schema=schema))
    completion = gpt.last_result
    assert completion is not None  # set by the call that just returned
    replies = gpt.ledger.calls - calls
    spent = None if completion.cost is None else gpt.ledger.cost - cost
    conversations.save(name, talk.to_json())
    conversations.link_to_log(gpt, name)
    if args.json:
        from moodlemate.ai._completion_json import completion_fields

        fields = completion_fields(completion)
        fields["cost"] = None if spent is None else format(spent, "f")
        print(json.dumps({**fields, "answer": answer, "replies": replies, "conversation": name}))
    else:
        print(safe_for(sys.stdout, json.dumps(answer, ensure_ascii=False)))
    sys.stdout.flush()
    if args.usage:
        _report(completion, replies, spent)
    return EXIT_OK


def _apply(talk: Conversation, args: argparse.Namespace, options: dict[str, Any]) -> None:
    """Settings given on this command line override the conversation's stored ones."""
    if args.system is not None:
        talk.system_message = args.system
    if args.model is not None:
        talk.model = args.model
    if "temperature" in options:
        talk.temperature = options["temperature"]
    if "max_tokens" in options:
        talk.max_tokens = options["max_tokens"]
    talk.options = options.get("request_options") or None
    talk.extra = options.get("extra") or None
    talk.tools = options.get("tools") or ()  # -T and --functions: each turn a tool run
    talk.before_tool_call = options.get("approve")


def _print(deltas: Iterator[str], *, streaming: bool, json_output: bool) -> str:
    parts: list[str] = []
    for delta in deltas:
        parts.append(delta)
        if not json_output:
            sys.stdout.write(safe_for(sys.stdout, delta))
            if streaming:
                sys.stdout.flush()
    return "".join(parts)


DIM, PLAIN = "\x1b[2m", "\x1b[0m"


def show_reasoning(completion: Completion) -> None:
    """``completion.reasoning`` on standard error, headed and dimmed on a terminal, so
    standard output keeps only the reply; a note when the server returned none."""
    from moodlemate.ai.cli.terminal import is_terminal

    reasoning = completion.reasoning
    if reasoning:
        shown = f"reasoning:\n{safe_for(sys.stderr, reasoning.rstrip())}"
    else:
        shown = (
            "no reasoning came back (OpenAI models return a summary only on the Responses API "
            "when asked: --api responses -o reasoning_summary auto)"
        )
    if is_terminal(sys.stderr):
        shown = f"{DIM}{shown}{PLAIN}"
    print(shown, file=sys.stderr)


def _report(completion: Completion, replies: int = 1, cost: Decimal | None = None) -> None:
    """One line on stderr; for a typed answer that took several replies, their summed cost."""
    attempts = f" · {completion.attempts} attempts" if completion.attempts > 1 else ""
    if completion.failed_before:
        failed = ", ".join(entry.model for entry in completion.failed_before)
        attempts += f" · served by {completion.served_by} after {failed} failed"
    if replies > 1:
        attempts += f" · {replies} replies"
    else:
        cost = completion.cost
    line = f"{completion.model} · {tokens_line(completion.usage)} · cost {money(cost)}"
    print(safe_for(sys.stderr, line + attempts), file=sys.stderr)
