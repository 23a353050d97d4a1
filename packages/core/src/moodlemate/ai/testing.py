"""The test server, under the name earlier versions and the guides use.

``LoopbackServer`` emulates the OpenAI API, so it lives in its own distribution,
moodlemate-ai-testing (import ``moodlemate.testing``), and the core carries no vendor
emulation. This module only re-exports it; without that distribution, importing it raises an
``ImportError`` that says what to install.
"""

from __future__ import annotations

INSTALL_HINT = (
    "the test server is the moodlemate-ai-testing distribution: "
    'pip install "moodlemate-ai[testing]" (from a clone of the repository: '
    "pip install ./packages/provider-openai ./packages/testing)"
)

try:
    from moodlemate.testing import (
        DEFAULT_MODELS,
        BatchFate,
        BatchService,
        Fault,
        LoopbackServer,
        RecordedRequest,
        Reply,
    )
except ModuleNotFoundError as exc:
    if exc.name != "moodlemate.testing":
        raise
    raise ImportError(INSTALL_HINT, name="moodlemate.testing") from None

__all__ = [
    "DEFAULT_MODELS",
    "BatchFate",
    "BatchService",
    "Fault",
    "LoopbackServer",
    "RecordedRequest",
    "Reply",
]
