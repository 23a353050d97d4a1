"""Shared fixtures: a loopback OpenAI-compatible server and GPT instances pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis_server  # reads MOODLEMATE_REDIS before the tests clear MOODLEMATE_*
from moodlemate.ai import GPT
from moodlemate.ai.testing import LoopbackServer
from support import FAST_RETRY, TEST_KEY  # also sets TIKTOKEN_CACHE_DIR before any test

pytest_plugins = ["pytester"]  # runs pytest sessions in tests of our own pytest plugin

TRANSPORTS = ("lean", "openai-sdk")
SUITE_TRANSPORT = os.environ.get("MOODLEMATE_TRANSPORT") or None
"""The transport the whole suite runs on (CI runs it once per transport), read before the
tests clear MOODLEMATE_*; unset: the provider's default."""


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def gpt(server: LoopbackServer) -> GPT:
    """A GPT on the loopback server with a key and a fast retry policy."""
    return GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)


WORKSPACE_PLUGINS = "openai,openrouter,ollama"
"""The plugins of this repository: the only ones a test loads, unless it is marked
``all_plugins`` (discovery tests), so a third-party plugin in the same virtualenv changes
nothing (tests/test_plugin_isolation.py installs one and runs tests beside it)."""

os.environ["MOODLEMATE_PLUGINS"] = WORKSPACE_PLUGINS  # for anything loaded before a fixture runs


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Tests never see the developer's real keys, config or plugin selection, nor plugins
    installed beside the workspace's own."""
    for name in list(os.environ):
        if name.startswith(("MOODLEMATE_", "OPENAI_", "OPENROUTER_")):
            monkeypatch.delenv(name, raising=False)
    if request.node.get_closest_marker("all_plugins") is None:
        monkeypatch.setenv("MOODLEMATE_PLUGINS", WORKSPACE_PLUGINS)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    if SUITE_TRANSPORT is not None:
        monkeypatch.setenv("MOODLEMATE_TRANSPORT", SUITE_TRANSPORT)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=TRANSPORTS)
def each_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once per HTTP transport (``MOODLEMATE_TRANSPORT``): the transport-level
    tests (hard bounds, redaction, spec conformance) hold on both."""
    name: str = request.param
    monkeypatch.setenv("MOODLEMATE_TRANSPORT", name)
    return name


@pytest.fixture(scope="session")
def redis_session() -> Iterator[Any]:
    """One real redis-server for the session (tests/redis_server.py)."""
    server = redis_server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_session: Any) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_session.url)
    client.flushall()
    client.close()
    return str(redis_session.url)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many documentation blocks ran, and how many are marked not runnable."""
    outcomes = {
        outcome: sum("test_docs.py::test_doc_block_runs" in r.nodeid for r in reports)
        for outcome, reports in terminalreporter.stats.items()
        if outcome in ("passed", "failed", "error", "skipped")
    }
    executed = sum(outcomes.values())
    if not executed:
        return
    import doc_blocks

    marked = [block for block in doc_blocks.all_blocks() if block.not_run is not None]
    terminalreporter.write_line(
        f"documentation blocks: {executed} executed ({outcomes.get('passed', 0)} passed, "
        f"{outcomes.get('failed', 0)} failed), {len(marked)} marked not-run"
    )
