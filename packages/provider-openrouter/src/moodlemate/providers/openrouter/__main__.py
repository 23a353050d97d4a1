"""``python -m moodlemate.providers.openrouter [ENDPOINT]``: refresh the cached price catalog."""

from __future__ import annotations

import sys

from moodlemate.ai.errors import MoodlemateError
from moodlemate.providers.openrouter.catalog import DEFAULT_ENDPOINT, cache_path, refresh_models


def main(argv: list[str]) -> int:
    endpoint = argv[0] if argv else DEFAULT_ENDPOINT
    try:
        count = refresh_models(endpoint)
    except MoodlemateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{count} OpenRouter models priced; cached in {cache_path(endpoint.rstrip('/'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
