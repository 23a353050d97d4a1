"""pytest fixtures for testing code that uses moodlemate-ai, offline, against a real server.

Installed with moodlemate-ai-testing (entry point ``pytest11``; ``pip install
"moodlemate-ai[testing]"``), so any project that depends on it gets, with no conftest:

- ``moodlemate_server``: a started :class:`~moodlemate.testing.LoopbackServer`, reset
  before each test (empty request log and script, no faults, no responder, default models and
  settings). One server serves the whole session, so the fixture costs no start-up per test.
- ``gpt``: a :class:`~moodlemate.ai.GPT` bound to that server with a test key and a retry
  policy that backs off in milliseconds, so fault tests stay fast.
- ``moodlemate_retry``: that policy (server-requested waits such as ``Retry-After`` are
  honoured as in production), to override or to reuse.

A project's own fixture of the same name wins over these (pytest's usual precedence); disable
the plugin with ``-p no:moodlemate-ai``. Importing this module imports only pytest: the server
and the facade load when a test asks for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from moodlemate.ai import GPT, RetryPolicy
    from moodlemate.testing import LoopbackServer

__all__ = ["TEST_API_KEY", "gpt", "moodlemate_retry", "moodlemate_server"]

TEST_API_KEY = "sk-test-moodlemate-pytest-plugin"
"""The key the ``gpt`` fixture sends; the server accepts any key unless given one."""


@pytest.fixture(scope="session")
def _moodlemate_session_server() -> Iterator[LoopbackServer]:
    from moodlemate.testing import LoopbackServer

    with LoopbackServer() as server:
        yield server


@pytest.fixture
def moodlemate_server(_moodlemate_session_server: LoopbackServer) -> LoopbackServer:
    """A running OpenAI-compatible server on 127.0.0.1, in its initial state."""
    _moodlemate_session_server.reset()
    return _moodlemate_session_server


@pytest.fixture
def moodlemate_retry() -> RetryPolicy:
    """Retries as in production, waits in milliseconds, every call bounded by 20 seconds."""
    from moodlemate.ai import RetryPolicy

    return RetryPolicy(
        attempts=4,
        deadline=20.0,
        attempt_timeout=5.0,
        wait_initial=0.01,
        wait_max=0.05,
        wait_jitter=0.0,
    )


@pytest.fixture
def gpt(moodlemate_server: LoopbackServer, moodlemate_retry: RetryPolicy) -> GPT:
    """A GPT talking to ``moodlemate_server`` through the OpenAI provider."""
    from moodlemate.ai import GPT

    return GPT(
        "openai", endpoint=moodlemate_server.url, api_key=TEST_API_KEY, retry=moodlemate_retry
    )
