"""``moodlemate-ai models``: the models providers know, with context window and prices."""

from __future__ import annotations

import argparse
import json
import warnings
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from moodlemate.ai.cli.exits import EXIT_OK
from moodlemate.ai.cli.table import format_table

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


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list known models with context window and prices",
        description="List the models installed providers know, with context window, maximum "
        "output and prices in USD per 1M tokens ('-' under CACHED INPUT: no cache discount; "
        "'?': unknown). SOURCE says where the figures come from: 'shipped DATE', the snapshot "
        "in the provider's package, or 'live DATE', fetched from the provider's service.",
    )
    parser.add_argument("-p", "--provider", metavar="NAME", help="only this provider's models")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list: provider, model, limits, prices (decimal strings), source",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
        print(format_table(HEADERS, rows))
        print("\nprices in USD per 1M tokens")
    for name in unlisted:
        print(f"{name}: lists no models (which models it serves depends on the server)")
    return EXIT_OK


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
