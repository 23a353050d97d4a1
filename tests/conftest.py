"""Shared fixtures: a loopback OpenAI-compatible server and GPT instances pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TIKTOKEN_CACHE = REPO.parent / "shared" / "tiktoken-cache"

# Offline token counting: tiktoken reads this at load time. Set before any test imports it.
if "TIKTOKEN_CACHE_DIR" not in os.environ and SHARED_TIKTOKEN_CACHE.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED_TIKTOKEN_CACHE)

from moodlemate.ai import GPT, RetryPolicy  # noqa: E402
from moodlemate.ai.testing import LoopbackServer  # noqa: E402

TEST_KEY = "sk-test-4f1c2e9b7a6d5c3e"
FAST_RETRY = RetryPolicy(
    attempts=4,
    deadline=20.0,
    attempt_timeout=5.0,
    wait_initial=0.01,
    wait_max=0.05,
    wait_jitter=0.0,
)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def gpt(server: LoopbackServer) -> GPT:
    """A GPT on the loopback server with a key and a fast retry policy."""
    return GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the developer's real keys, config or plugin selection."""
    for name in list(os.environ):
        if name.startswith(("MOODLEMATE_", "OPENAI_", "OPENROUTER_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.chdir(tmp_path)
