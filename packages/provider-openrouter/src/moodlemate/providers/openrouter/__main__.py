"""``python -m moodlemate.providers.openrouter [ENDPOINT]``: refresh the cached price catalog."""

from __future__ import annotations

import argparse
import sys

from moodlemate.ai.plugin import MoodlemateError
from moodlemate.providers.openrouter.catalog import DEFAULT_ENDPOINT, cache_path, refresh_models


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moodlemate.providers.openrouter",
        description="Fetch OpenRouter's model prices and limits now and cache them for 24 hours.",
    )
    parser.add_argument(
        "endpoint",
        nargs="?",
        default=DEFAULT_ENDPOINT,
        metavar="ENDPOINT",
        help=f"OpenRouter-compatible base URL (default: {DEFAULT_ENDPOINT})",
    )
    endpoint = parser.parse_args(argv).endpoint
    try:
        count = refresh_models(endpoint)
    except MoodlemateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{count} OpenRouter models priced; cached in {cache_path(endpoint.rstrip('/'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
