"""``moodlemate-ai models``: the models providers know, with context window and prices."""

from __future__ import annotations

import argparse
import warnings
from typing import TYPE_CHECKING, Any

from moodlemate.ai.cli import EXIT_OK
from moodlemate.ai.cli.table import format_table

if TYPE_CHECKING:
    from moodlemate.ai.pricing import Price

HEADERS = ["PROVIDER", "MODEL", "CONTEXT", "MAX OUTPUT", "INPUT", "CACHED INPUT", "OUTPUT"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list known models with context window and prices",
        description="List the models installed providers know, with context window, maximum "
        "output and prices in USD per 1M tokens ('-' under CACHED INPUT: no cache discount; "
        "'?': unknown).",
    )
    parser.add_argument("-p", "--provider", metavar="NAME", help="only this provider's models")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moodlemate.ai.plugins import registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `moodlemate-ai providers` reports broken plugins
        if args.provider is not None:
            providers = [registry.get(args.provider)]
        else:
            providers = [registry.get(name) for name in registry.names()]
    rows: list[list[str]] = []
    unlisted: list[str] = []
    for provider in providers:
        models = provider.models()
        if not models:
            unlisted.append(provider.name)
        for info in models:
            rows.append(
                [
                    provider.name,
                    info.name,
                    _count(info.context_window),
                    _count(info.max_output_tokens),
                    *_prices(info.price),
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
    cached = "-" if price.cached_input is None else str(price.cached_input)
    return [str(price.input), cached, str(price.output)]
