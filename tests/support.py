"""What the tests share besides fixtures: the repository's root, the test key, a fast retry
policy and tiktoken's own encodings. Test modules import it as ``support`` (this folder is
on ``sys.path`` through the conftest beside it), never from ``conftest``."""

from __future__ import annotations

import os
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
SHARED_TIKTOKEN_CACHE = REPO.parent / "shared" / "tiktoken-cache"

# Offline token counting: tiktoken reads this at load time. Set before any test imports it.
if "TIKTOKEN_CACHE_DIR" not in os.environ and SHARED_TIKTOKEN_CACHE.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED_TIKTOKEN_CACHE)

from moodlemate.ai import RetryPolicy  # noqa: E402

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


TEST_KEY = "sk-test-4f1c2e9b7a6d5c3e"
FAST_RETRY = RetryPolicy(
    attempts=4,
    deadline=20.0,
    attempt_timeout=5.0,
    wait_initial=0.01,
    wait_max=0.05,
    wait_jitter=0.0,
)


def suite_transport() -> str:
    """The HTTP transport this test runs on: ``MOODLEMATE_TRANSPORT`` as tests/conftest.py
    set it (the whole suite's, or one of each_transport's), else the default."""
    return os.environ.get("MOODLEMATE_TRANSPORT") or "lean"
