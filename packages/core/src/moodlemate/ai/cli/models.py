"""``moodlemate-ai models``: the models providers know, with context window and prices."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from moodlemate.ai.cli.exits import EXIT_FAILURE, EXIT_OK
from moodlemate.ai.cli.table import print_table
from moodlemate.ai.cli.terminal import safe

if TYPE_CHECKING:
    from moodlemate.ai._pricing import ModelInfo, Price

HEADERS = [
    "PROVIDER",
    "MODEL",
    "CONTEXT",
    "MAX OUTPUT",
    "INPUT",
    "CACHED INPUT",
    "OUTPUT",
    "SOURCE",
]


EPILOG = """\
examples:
  moodlemate-ai models --endpoint http://127.0.0.1:8000/v1   # what that server serves
  moodlemate-ai models                                       # the configured server's
  moodlemate-ai models --known -p openai                     # every model we have prices for
  moodlemate-ai models default gpt-4o-mini                   # chat's model when -m is not given
  moodlemate-ai models default                               # show it
  moodlemate-ai models default --clear
"""


def add_parser(subparsers: Any) -> None:
    from moodlemate.ai.cli.common import api_key, endpoint_url

    parser = subparsers.add_parser(
        "models",
        help="list the models the server serves, with prices and context windows",
        description="List the models the configured server serves (its /v1/models), with "
        "the context window, maximum output and prices in USD per 1M tokens we know for each "
        "('?': unknown; '-' under CACHED INPUT: no cache discount). --known lists every "
        "model the installed providers have figures for instead; SOURCE says where they come "
        "from: 'shipped DATE' (the provider package's snapshot) or 'live DATE'. "
        "`models default NAME` sets the model chat uses when -m is not given.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "action", nargs="?", choices=("default",), help="'default': show or set chat's model"
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="the default model (or alias)")
    parser.add_argument("--clear", action="store_true", help="with default: forget it")
    parser.add_argument(
        "--known", action="store_true", help="every model the providers know, not the server's"
    )
    parser.add_argument("-p", "--provider", metavar="NAME", help="provider (default: openai)")
    parser.add_argument("--endpoint", metavar="URL", type=endpoint_url, help="server to ask")
    parser.add_argument("--profile", metavar="NAME", help="named profile from the config file")
    parser.add_argument(
        "--key", metavar="KEY", type=api_key, help="API key for --endpoint (prefer keys set)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list: provider, model, limits, prices (decimal strings), source",
    )
    parser.set_defaults(func=run, no_log=True)


def run(args: argparse.Namespace) -> int:
    if args.action == "default":
        return _default(args)
    if args.name is not None:
        from moodlemate.ai.cli.common import CommandError
        from moodlemate.ai.cli.exits import EXIT_USAGE

        raise CommandError(f"unexpected argument {args.name!r}", EXIT_USAGE)
    if not args.known:
        return _served(args)
    from moodlemate.ai._plugins import registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `moodlemate-ai providers` reports broken plugins
        if args.provider is not None:
            providers = [registry.get(args.provider)]
        else:
            providers = [registry.get(name) for name in registry.names()]
    listed = [(provider.name, provider.models()) for provider in providers]
    if args.json:
        records = [_record(name, info) for name, models in listed for info in models]
        print(json.dumps(records, indent=2))
        return EXIT_OK
    rows: list[list[str]] = []
    unlisted: list[str] = []
    for name, models in listed:
        if not models:
            unlisted.append(name)
        for info in models:
            rows.append(
                [
                    name,
                    info.name,
                    _count(info.context_window),
                    _count(info.max_output_tokens),
                    *_prices(info.price),
                    _source(info),
                ]
            )
    if rows:
        print_table(HEADERS, rows, numeric=(2, 3, 4, 5, 6))
        print("\nprices in USD per 1M tokens")
    for name in unlisted:
        print(f"{name}: lists no models (which models it serves depends on the server)")
    return EXIT_OK


def _served(args: argparse.Namespace) -> int:
    from moodlemate.ai.cli.common import CommandError, make_gpt

    gpt = make_gpt(args)
    provider, connection, _ = gpt.provider_connection()
    served = provider.served_models(connection)
    if served is None:
        raise CommandError(f"{provider.name} cannot list what its server serves: try --known")
    listed = [
        (name, provider.model_info(name, connection.endpoint), window)
        for name, window in sorted(served.items())
    ]
    if args.json:
        records = []
        for name, info, window in listed:
            record: dict[str, Any] = (
                _record(provider.name, info) if info else {"provider": provider.name}
            )
            record.update(model=name, served_context_window=window, known=info is not None)
            records.append(record)
        print(json.dumps(records, indent=2))
        return EXIT_OK
    rows = [
        [
            name,
            _count(info.context_window if info and info.context_window else window),
            _count(info.max_output_tokens if info else None),
            *_prices(info.price if info else None),
        ]
        for name, info, window in listed
    ]
    from moodlemate.ai._spend_log import endpoint_origin

    print(f"{len(rows)} models served by {endpoint_origin(connection.endpoint)}", file=sys.stderr)
    if rows:
        print_table(
            ["MODEL", "CONTEXT", "MAX OUTPUT", "INPUT", "CACHED INPUT", "OUTPUT"],
            rows,
            numeric=(1, 2, 3, 4, 5),
        )
    return EXIT_OK


def _default(args: argparse.Namespace) -> int:
    from moodlemate.ai.cli import preferences
    from moodlemate.ai.cli.aliases import resolve

    if args.clear:
        preferences.update("default_model", None)
        print("chat's default model is cleared", file=sys.stderr)
    elif args.name is not None:
        preferences.update("default_model", args.name)
        target = resolve(args.name)
        shown = args.name if target == args.name else f"{args.name} ({target})"
        print(f"chat's default model is now {shown}", file=sys.stderr)
        _say_what_outranks_it()
    else:
        stored = preferences.load().get("default_model")
        if not stored:
            print("no default model set (moodlemate-ai models default NAME)", file=sys.stderr)
            return EXIT_FAILURE
        print(stored)
    return EXIT_OK


def _say_what_outranks_it() -> None:
    """A model configured here (MOODLEMATE_MODEL, a config file) ranks above the stored
    default, as configured settings rank above defaults: say so, or the new default would
    seem to be ignored."""
    import os

    from moodlemate.ai._config import ENV_MODEL, resolve_settings
    from moodlemate.ai._config_file import config_paths
    from moodlemate.ai.errors import MoodlemateError

    try:
        settings = resolve_settings()
    except MoodlemateError:
        return  # chat reports what is wrong with the configuration when it runs
    if not settings.model_is_explicit:
        return
    where = (
        f"${ENV_MODEL}"
        if os.environ.get(ENV_MODEL)
        else " or ".join(str(p.resolve()) for p in config_paths(os.environ))
    )
    print(
        safe(
            f"note: {where} sets model {settings.model!r}, which chat uses here before this "
            "default (-m overrides both)"
        ),
        file=sys.stderr,
    )


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _prices(price: Price | None) -> list[str]:
    """Input, cached input, output; '-' for cached input billed at the input rate."""
    if price is None:
        return ["?", "?", "?"]
    cached = "-" if price.cached_input is None else usd(price.cached_input)
    return [usd(price.input), cached, usd(price.output)]


def usd(amount: Decimal) -> str:
    """One format for every price: at least two decimals, as many more as it has."""
    text = format(amount.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def _source(info: ModelInfo) -> str:
    return f"{'live' if info.live else 'shipped'} {info.as_of or '?'}"


def _record(provider: str, info: ModelInfo) -> dict[str, Any]:
    price = info.price

    def text(value: Decimal | None) -> str | None:
        return None if value is None else format(value, "f")

    return {
        "provider": provider,
        "model": info.name,
        "context_window": info.context_window,
        "max_input_tokens": info.max_input_tokens,
        "max_output_tokens": info.max_output_tokens,
        "price": None
        if price is None
        else {
            "input": text(price.input),
            "cached_input": text(price.cached_input),
            "output": text(price.output),
            "unit": "USD per 1M tokens",
        },
        "source": "live" if info.live else "shipped",
        "source_detail": info.source,
        "as_of": info.as_of,
    }
