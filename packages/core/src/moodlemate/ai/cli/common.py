"""What the subcommands share: settings options, building the GPT, argument types, messages."""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from moodlemate.ai._config import ENV_API_KEY as ENV_KEY
from moodlemate.ai.cli.exits import EXIT_USAGE
from moodlemate.ai.cli.exits import CommandError as CommandError  # where commands import it
from moodlemate.ai.errors import ValidationError

if TYPE_CHECKING:
    from moodlemate.ai._gpt import GPT
    from moodlemate.ai._retry import RetryPolicy
    from moodlemate.ai._usage import Usage

_SETTINGS = (
    "provider",
    "endpoint",
    "profile",
    "model",
    "fallbacks",
    "budget",
    "budget_scope",
    "budget_window",
    "transport",
    "api",
)


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
        "--api",
        choices=("chat", "responses"),
        help="vendor API the calls go through, where the provider speaks more than one "
        "(openai: chat completions or responses; default: $MOODLEMATE_API, the config file's "
        "api, else the provider's model rules)",
    )
    group.add_argument(
        "--no-log",
        action="store_true",
        help="do not record calls in the spend log (default: the config file's log, else "
        "$XDG_DATA_HOME/moodlemate-ai/logs.db, with prompt and reply text)",
    )


def add_budget_options(parser: argparse.ArgumentParser) -> None:
    """--budget/--budget-scope/--budget-window: the library's budget settings."""
    group = parser.add_argument_group(
        "budget",
        "A cost ceiling in US dollars: each request (each remote batch part) reserves its "
        "worst case first and is refused, unsent, when that cannot fit. With a scope the "
        "budget is shared by every process naming it, in the spend log's file or in Redis "
        "(MOODLEMATE_REDIS_URL or the config file's redis).",
    )
    group.add_argument("--budget", metavar="USD", type=budget_amount, help="cost ceiling")
    group.add_argument(
        "--budget-scope", metavar="NAME", help="share the budget with every process naming NAME"
    )
    group.add_argument(
        "--budget-window",
        choices=("day", "month"),
        help="with --budget-scope: count afresh each UTC day or month",
    )


def budget_amount(text: str) -> Decimal:
    from moodlemate.ai._budget import to_budget

    try:
        amount = to_budget(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    assert amount is not None
    return amount


CLI_RETRIES = 2
"""Retries after the first attempt when a command runs at a terminal: a person waiting at a
prompt is not a 24/7 worker, so an unreachable server is reported within seconds (the
library's own policy, 6 attempts over half a minute, rides out outages for services)."""
CLI_WAITS = {"wait_initial": 0.25, "wait_max": 2.0, "wait_jitter": 0.25}


def add_retry_options(parser: argparse.ArgumentParser) -> None:
    """--retries/--deadline: how hard this command tries before it reports a failure."""
    group = parser.add_argument_group(
        "retries",
        f"A failed request is retried {CLI_RETRIES} times, a second or so apart, so a server "
        "that cannot be reached (a name that does not resolve, a refused port) is reported "
        "within seconds, naming the host, the port and the cause.",
    )
    group.add_argument(
        "--retries",
        type=non_negative_int,
        default=CLI_RETRIES,
        metavar="N",
        help=f"retries after the first attempt (default {CLI_RETRIES}; 0: none)",
    )
    group.add_argument(
        "--deadline",
        type=positive_seconds,
        metavar="SECONDS",
        help="time for the whole call, attempts and waits together (default: the "
        "library's, 1200 s, which slow reasoning models need)",
    )


def cli_retry_policy(args: argparse.Namespace, base: RetryPolicy) -> RetryPolicy:
    """The command line's policy: ``base`` with fewer attempts and shorter waits."""
    from dataclasses import replace

    deadline = args.deadline if args.deadline is not None else base.deadline
    return replace(base, attempts=args.retries + 1, deadline=deadline, **CLI_WAITS)


def make_gpt(args: argparse.Namespace) -> GPT:
    """A GPT from the settings the user gave; everything else resolves as in the library."""
    from moodlemate.ai._gpt import GPT

    given: dict[str, Any] = {
        name: value for name in _SETTINGS if (value := getattr(args, name, None)) is not None
    }
    default_model = getattr(args, "default_model", None)
    key = getattr(args, "key", None)
    if key is None and given.get("endpoint") is not None:
        # The endpoint typed on this command line is where the user's own key is meant to go
        # (without --endpoint, the library scopes $MOODLEMATE_API_KEY to MOODLEMATE_ENDPOINT).
        key = os.environ.get(ENV_KEY) or None
    if key is not None:
        given["api_key"] = key
    if not getattr(args, "no_log", False) and _logging_off():
        args.no_log = True  # `moodlemate-ai logs off`
    if getattr(args, "no_log", False):
        given["log"] = False
    scope, window = given.pop("budget_scope", None), given.pop("budget_window", None)
    gpt = GPT(**given)
    if default_model is not None and "model" not in given and gpt._model is None:
        # `moodlemate-ai models default NAME` stands in for the provider's default model: a
        # model from the environment or a config file (the one chosen for this project or
        # profile) ranks above it, as every configured setting ranks above a default.
        gpt.model = default_model
    if getattr(args, "retries", None) is not None:
        gpt.retry = cli_retry_policy(args, gpt.retry)
    if gpt.log is None and not getattr(args, "no_log", False):
        from moodlemate.ai._spend_log import SpendLog, default_log_path

        gpt.log = SpendLog(default_log_path())
    if gpt.log is not None:
        gpt.log.text = True  # the CLI keeps what was asked and answered (--no-log: nothing)
    if scope is not None or window is not None:
        from moodlemate.ai._gpt import _shared_budget

        # Built here, not by GPT(): the store may be the CLI's default spend log.
        try:
            gpt.shared_budget = _shared_budget(gpt.log, gpt.redis, scope, window, False)
        except ValidationError as exc:
            raise CommandError(exc.message.replace("budget_", "--budget-"), EXIT_USAGE) from None
    return gpt


def _logging_off() -> bool:
    from moodlemate.ai.cli.preferences import logging_off

    return logging_off()


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


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
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
