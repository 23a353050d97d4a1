"""What the subcommands share: settings options, building the GPT, argument types, messages."""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from moodlemate.ai._config import ENV_API_KEY as ENV_KEY
from moodlemate.ai.cli.exits import EXIT_FAILURE, EXIT_USAGE
from moodlemate.ai.errors import ValidationError

if TYPE_CHECKING:
    from moodlemate.ai._gpt import GPT
    from moodlemate.ai._usage import Usage

_SETTINGS = ("provider", "endpoint", "profile", "model", "fallbacks", "transport")


class CommandError(Exception):
    """A failure the command reports as one message, with the exit code a shell expects."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """--provider/--endpoint/--profile; unset ones come from the library's configuration."""
    group = parser.add_argument_group(
        "provider settings",
        "Unset options come from the same configuration as the library: MOODLEMATE_PROVIDER, "
        "MOODLEMATE_ENDPOINT, MOODLEMATE_MODEL, the provider's key variable (OPENAI_API_KEY, "
        "...) and the config file, else the defaults (openai, and the provider's default model).",
    )
    group.add_argument("--provider", metavar="NAME", help="provider to use, e.g. openai")
    group.add_argument(
        "--endpoint",
        metavar="URL",
        type=endpoint_url,
        help="OpenAI-compatible base URL, e.g. http://localhost:11434/v1",
    )
    group.add_argument("--profile", metavar="NAME", help="named profile from the config file")
    group.add_argument(
        "--fallback",
        dest="fallbacks",
        action="append",
        metavar="MODEL",
        help="model tried when the model is out (5xx, timeouts, rate limits); repeatable, "
        "in order; 'provider:model' uses that provider and its own key (replaces the "
        "profile's fallbacks)",
    )
    group.add_argument(
        "--key",
        metavar="KEY",
        type=api_key,
        help=f"API key sent to this command's endpoint (default with --endpoint: ${ENV_KEY}). "
        "Prefer the variable: a key on the command line shows in the process list",
    )
    group.add_argument(
        "--transport",
        metavar="NAME",
        help="HTTP transport the provider uses (openai: lean, the default, or openai-sdk; "
        "default: $MOODLEMATE_TRANSPORT, the config file's transport)",
    )
    group.add_argument(
        "--no-log",
        action="store_true",
        help="do not record calls in the spend log (default: the config file's log, else "
        "$XDG_DATA_HOME/moodlemate-ai/logs.db, with prompt and reply text)",
    )


def make_gpt(args: argparse.Namespace) -> GPT:
    """A GPT from the settings the user gave; everything else resolves as in the library."""
    from moodlemate.ai._gpt import GPT

    given: dict[str, Any] = {
        name: value for name in _SETTINGS if (value := getattr(args, name, None)) is not None
    }
    key = getattr(args, "key", None)
    if key is None and given.get("endpoint") is not None:
        # The endpoint typed on this command line is where the user's own key is meant to go
        # (without --endpoint, the library scopes $MOODLEMATE_API_KEY to MOODLEMATE_ENDPOINT).
        key = os.environ.get(ENV_KEY) or None
    if key is not None:
        given["api_key"] = key
    if getattr(args, "no_log", False):
        given["log"] = False
    gpt = GPT(**given)
    if gpt.log is None and not getattr(args, "no_log", False):
        from moodlemate.ai._spend_log import SpendLog, default_log_path

        gpt.log = SpendLog(default_log_path())
    if gpt.log is not None:
        gpt.log.text = True  # the CLI keeps what was asked and answered (--no-log: nothing)
    return gpt


# -- argument types: bad values are usage errors (exit 2), caught before anything is sent --


def temperature(text: str) -> float:
    from moodlemate.ai._validation import check_temperature

    try:
        return check_temperature(float(text))
    except ValueError as exc:
        message = exc.message if isinstance(exc, ValidationError) else f"not a number: {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def api_key(text: str) -> str:
    from moodlemate.ai._credentials import check_key_format

    try:
        return check_key_format(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def endpoint_url(text: str) -> str:
    from moodlemate.ai._urls import normalize_endpoint

    try:
        return normalize_endpoint(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


# -- output --------------------------------------------------------------------------------


def money(cost: Decimal | None) -> str:
    return "unknown" if cost is None else f"${cost:.6f}"


def tokens_line(usage: Usage) -> str:
    detail = [
        f"{n} {what}"
        for n, what in ((usage.cached_tokens, "cached"), (usage.reasoning_tokens, "reasoning"))
        if n
    ]
    extra = f" ({', '.join(detail)})" if detail else ""
    return (
        f"{usage.total_tokens} tokens: {usage.prompt_tokens} prompt + "
        f"{usage.completion_tokens} completion{extra}"
    )


def read_stdin_text() -> str:
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(
            f"standard input is not UTF-8 text (byte {exc.start + 1})", EXIT_USAGE
        ) from None
