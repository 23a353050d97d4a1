"""Where ``serve`` and ``demo`` get the test server: the moodlemate-ai-testing distribution,
imported only when one of them runs, with an install hint (exit code 2) when it is missing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.exits import EXIT_USAGE


@contextmanager
def testing_installed() -> Iterator[None]:
    """Wrap the command's ``from moodlemate.ai.testing import ...``: a missing distribution
    becomes one message naming what to install; any other import failure propagates."""
    try:
        yield
    except ImportError as exc:
        if exc.name != "moodlemate.testing":
            raise
        raise CommandError(str(exc), EXIT_USAGE) from None
