"""The shipped o200k_base and cl100k_base files: tiktoken's very files, tiktoken's encodings,
loaded with no cache, no TIKTOKEN_CACHE_DIR and no network."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken_ext.openai_public
from moodlemate.providers.openai.bundled_bpe import BUNDLED, load_bundled
from moodlemate.providers.openai.tiktoken_cache import BPE_FILES
from support import BUNDLED_BPE, tiktoken_encoding

SHIPPED = sorted(BUNDLED)
TEXTS = [
    "",
    "Hello, world! It's 2026.",
    "東京は日本の首都です。Привет!",
    "emoji: 🎉🚀👩‍💻 and CamelCaseWords",
    "def f(x):\n\r\n    return x ** 2  # square\n\n\n",
    "   leading and trailing   \t",
    "12345678901234567890 a1!b2@c3#",
]


def _tiktokens_expected_hash(encoding: str) -> str:
    """The hash tiktoken's own constructor passes to load_tiktoken_bpe, read from its source."""
    source = inspect.getsource(tiktoken_ext.openai_public.ENCODING_CONSTRUCTORS[encoding])
    found = re.search(r'expected_hash="([0-9a-f]{64})"', source)
    assert found is not None
    return found.group(1)


def test_two_encodings_are_shipped() -> None:
    assert SHIPPED == ["cl100k_base", "o200k_base"]
    assert sorted(p.name for p in BUNDLED_BPE.iterdir()) == [
        "cl100k_base.tiktoken",
        "o200k_base.tiktoken",
    ]


@pytest.mark.parametrize("encoding", SHIPPED)
def test_shipped_files_have_the_sha256_tiktoken_expects(encoding: str) -> None:
    expected = _tiktokens_expected_hash(encoding)
    assert BPE_FILES[encoding][0].sha256 == expected
    data = (BUNDLED_BPE / f"{encoding}.tiktoken").read_bytes()
    assert hashlib.sha256(data).hexdigest() == expected


@pytest.mark.parametrize("encoding", SHIPPED)
def test_the_shipped_encoding_is_tiktokens(encoding: str) -> None:
    ours = load_bundled(encoding)
    reference = tiktoken_encoding(encoding)  # built by tiktoken's constructor
    assert ours is not None
    assert ours.name == reference.name
    assert ours._pat_str == reference._pat_str
    assert ours._special_tokens == reference._special_tokens
    assert ours.n_vocab == reference.n_vocab
    for text in [*TEXTS, "<|endoftext|> and <|endofprompt|>"]:
        assert ours.encode(text, allowed_special="all") == reference.encode(
            text, allowed_special="all"
        )
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text)


COUNT = """
import json, sys
from moodlemate.ai import GPT
from moodlemate.providers.openai.tokens import encoding_for
gpt = GPT()
print(json.dumps({m: [gpt.count_tokens(sys.argv[1], m), encoding_for(m).name]
                  for m in ("gpt-4o-mini", "gpt-4", "o3-mini", "gpt-3.5-turbo")}))
"""


def test_counting_needs_no_cache_variable_no_network_and_writes_nothing(tmp_path: Path) -> None:
    """TIKTOKEN_CACHE_DIR unset, so tiktoken's default cache (under TMPDIR) would be used;
    every proxy is a listener that records who connects."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if "proxy" not in k.lower() and k not in {"TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"}
    }
    text = "Offline from the first call: 東京 🎉"
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen(8)
        proxy.setblocking(False)
        url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        env.update(TMPDIR=str(temp), HTTPS_PROXY=url, HTTP_PROXY=url, ALL_PROXY=url)
        done = subprocess.run(
            [sys.executable, "-c", COUNT, text],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        with pytest.raises(BlockingIOError):
            proxy.accept()  # nobody tried the network
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    for model, (tokens, encoding) in counts.items():
        assert tokens == len(tiktoken_encoding(encoding).encode_ordinary(text)), model
    assert {encoding for _, encoding in counts.values()} == {"o200k_base", "cl100k_base"}
    assert list(temp.iterdir()) == []  # no data-gym-cache, no copy of the files
