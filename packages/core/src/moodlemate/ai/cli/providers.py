"""``moodlemate-ai providers``: which providers are installed, from which package, and which
plugins failed to load (exit status 1 then, so a deployment check can rely on it)."""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

from moodlemate.ai.cli.exits import EXIT_FAILURE, EXIT_OK
from moodlemate.ai.cli.table import print_table
from moodlemate.ai.cli.terminal import safe


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "providers",
        help="list installed providers and plugins that failed to load",
        description="List installed providers (name, package, version, default endpoint) "
        "and report plugins that failed to load. Exits 1 when any plugin failed.",
        epilog="""examples:
  moodlemate-ai providers
  moodlemate-ai providers --json | jq '.providers[].name'
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON object: providers, excluded, failed",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moodlemate.ai._plugins import PLUGINS_ENV, registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # failures are listed below instead
        entries = registry.entries()
        failures = registry.failures
        excluded = registry.excluded
    if args.json:
        print(json.dumps(_document(entries, excluded, failures), indent=2))
        return EXIT_FAILURE if failures else EXIT_OK
    rows = [
        [
            name,
            entry.package or "(in code)",
            entry.version or "-",
            entry.provider.default_endpoint,
        ]
        for name, entry in sorted(entries.items())
    ]
    if rows:
        print_table(["NAME", "PACKAGE", "VERSION", "DEFAULT ENDPOINT"], rows)
    elif excluded:
        print(f"no providers loaded ({PLUGINS_ENV} leaves out every installed one)")
    else:
        from moodlemate.ai._plugins import install_hint

        print(f"no providers installed ({install_hint('openai')})")
    if excluded:
        print(f"\nleft out by {PLUGINS_ENV}: {', '.join(sorted(excluded))}")
    if failures:
        print("\nfailed plugins:")
        for plugin, reason in sorted(failures.items()):
            print(safe(f"  {plugin}: {reason}"))  # a third-party plugin's exception text
        return EXIT_FAILURE
    return EXIT_OK


def _document(entries: Any, excluded: Any, failures: Any) -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": name,
                "package": entry.package,
                "version": entry.version,
                "default_endpoint": entry.provider.default_endpoint,
            }
            for name, entry in sorted(entries.items())
        ],
        "excluded": sorted(excluded),
        "failed": dict(sorted(failures.items())),
    }
