"""Shared fixtures: a loopback OpenAI-compatible server and GPT instances pointed at it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TIKTOKEN_CACHE = REPO.parent / "shared" / "tiktoken-cache"

# Offline token counting: tiktoken reads this at load time. Set before any test imports it.
if "TIKTOKEN_CACHE_DIR" not in os.environ and SHARED_TIKTOKEN_CACHE.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED_TIKTOKEN_CACHE)

from moodlemate.ai import GPT, RetryPolicy  # noqa: E402
from moodlemate.ai.testing import LoopbackServer  # noqa: E402

if TYPE_CHECKING:
    import tiktoken

BUNDLED_BPE = REPO / "packages" / "provider-openai" / "src" / "moodlemate" / "providers"
BUNDLED_BPE = BUNDLED_BPE / "openai" / "_bpe"
"""The BPE files moodlemate-ai-openai ships (o200k_base.tiktoken, cl100k_base.tiktoken)."""


@cache
def tiktoken_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's own Encoding, the reference counts are checked against: built by tiktoken's
    constructor (its split pattern and special tokens) from its cache, else from a private
    cache seeded with the shipped file, so the suite needs neither ../shared nor a network."""
    import tiktoken
    import tiktoken_ext.openai_public
    from moodlemate.providers.openai.tiktoken_cache import is_cached, seed_tiktoken_cache

    if is_cached(name):
        return tiktoken.get_encoding(name)
    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    with tempfile.TemporaryDirectory() as private:
        seed_tiktoken_cache(BUNDLED_BPE / f"{name}.tiktoken", name, cache_dir=private)
        os.environ["TIKTOKEN_CACHE_DIR"] = private
        try:
            return tiktoken.Encoding(**tiktoken_ext.openai_public.ENCODING_CONSTRUCTORS[name]())
        finally:
            if before is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = before


pytest_plugins = ["pytester"]  # runs pytest sessions in tests of our own pytest plugin

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
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.chdir(tmp_path)
