"""moodlemate.testing: a real OpenAI-compatible HTTP server on 127.0.0.1 for offline tests.

    from moodlemate.testing import Fault, LoopbackServer, Reply

    with LoopbackServer() as server:
        server.enqueue(Fault.status(429, retry_after=0), Reply(text="hello"))
        ...  # point any OpenAI client (or moodlemate.ai.GPT) at server.url

The server checks requests against the OpenAI provider's own model rules, so it lives in
its own distribution (moodlemate-ai-testing) and the core carries no OpenAI emulation. Names
load on first access (PEP 562): the pytest plugin imports this package without the server.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from moodlemate.testing._batches import BatchFate as BatchFate
    from moodlemate.testing._batches import BatchService as BatchService
    from moodlemate.testing._rate_limits import RateLimit as RateLimit
    from moodlemate.testing._server import DEFAULT_MODELS as DEFAULT_MODELS
    from moodlemate.testing._server import Fault as Fault
    from moodlemate.testing._server import LoopbackServer as LoopbackServer
    from moodlemate.testing._server import RecordedRequest as RecordedRequest
    from moodlemate.testing._server import Reply as Reply

# Public name -> the module that defines it (keep in step with the block above; the tests
# check both).
_LAZY: dict[str, str] = {
    "BatchFate": "moodlemate.testing._batches",
    "BatchService": "moodlemate.testing._batches",
    "DEFAULT_MODELS": "moodlemate.testing._server",
    "Fault": "moodlemate.testing._server",
    "LoopbackServer": "moodlemate.testing._server",
    "RateLimit": "moodlemate.testing._rate_limits",
    "RecordedRequest": "moodlemate.testing._server",
    "Reply": "moodlemate.testing._server",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
