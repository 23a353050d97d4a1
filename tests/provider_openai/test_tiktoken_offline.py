"""Offline token counting: the shipped encodings need nothing; any other encoding fails with a
typed, actionable error within seconds; a cache seed is verified.

Each scenario runs in a fresh interpreter (encoders are cached per process) whose only route
to the internet is a proxy on 127.0.0.1 that refuses or never answers, so no test depends on
the machine's own network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moodlemate.ai import TokenizerUnavailableError, ValidationError
from moodlemate.ai.testing import LoopbackServer, Reply
from moodlemate.providers.openai.tiktoken_cache import (
    BPE_FILES,
    MissingBpeFileError,
    seed_tiktoken_cache,
)
from support import BUNDLED_BPE

O200K = BPE_FILES["o200k_base"][0]
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_CACHE_NAME = "fb374d419588a4632f3f557e76b4b70aebbca790"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
SHARED_O200K = BUNDLED_BPE / "o200k_base.tiktoken"  # a copy of the file tiktoken downloads
# p50k_base (text-davinci-003) is not shipped: without a cache it must be downloaded.
P50K = BPE_FILES["p50k_base"][0]
P50K_URL = "https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken"

COUNT = """
import json, sys, time
from moodlemate.providers.openai import tiktoken_cache
tiktoken_cache.DOWNLOAD_TIMEOUT = float(sys.argv[1])
from moodlemate.ai import GPT, TokenizerUnavailableError
started = time.monotonic()
try:
    result = {"tokens": GPT().count_tokens("hello world", sys.argv[2])}
except TokenizerUnavailableError as exc:
    result = {"error": type(exc).__name__, "message": str(exc),
              "is_tokenizer_error": True, "cache_path": str(exc.cache_path)}
except BaseException as exc:
    result = {"error": type(exc).__name__, "message": str(exc), "is_tokenizer_error": False}
result["seconds"] = time.monotonic() - started
print(json.dumps(result))
"""


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def silent_proxy() -> Iterator[int]:
    """A listener that accepts connections and never answers: a network that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def _count_offline(
    cache: Path, proxy_port: int, timeout: float = 10.0, model: str = "text-davinci-003"
) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["TIKTOKEN_CACHE_DIR"] = str(cache)
    env["HTTPS_PROXY"] = env["HTTP_PROXY"] = f"http://127.0.0.1:{proxy_port}"
    done = subprocess.run(
        [sys.executable, "-c", COUNT, str(timeout), model],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _empty_cache(tmp_path: Path) -> Path:
    """A tiktoken cache folder of its own (tmp_path also holds XDG_CACHE_HOME, where plugin
    discovery keeps its own cache)."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    return cache


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4"])
def test_shipped_encodings_count_with_an_empty_cache_and_no_network(
    tmp_path: Path, model: str
) -> None:
    cache = _empty_cache(tmp_path)
    result = _count_offline(cache, _closed_port(), model=model)
    assert result["tokens"] == 2
    assert list(cache.iterdir()) == []  # nothing downloaded, nothing copied


def test_empty_cache_without_network_is_a_typed_actionable_error(tmp_path: Path) -> None:
    cache = _empty_cache(tmp_path)
    started = time.monotonic()
    result = _count_offline(cache, _closed_port())
    assert time.monotonic() - started < 15  # the whole interpreter, imports included
    assert result["error"] == "MissingBpeFileError"
    assert result["is_tokenizer_error"] is True
    assert float(result["seconds"]) < 5  # type: ignore[arg-type]
    message = str(result["message"])
    for needed in ("p50k_base", P50K_URL, P50K.cache_name, P50K.sha256, str(cache)):
        assert needed in message
    assert "python -m moodlemate.providers.openai.tiktoken_cache" in message
    assert result["cache_path"] == str(cache / P50K.cache_name)
    assert list(cache.iterdir()) == []


def test_a_network_that_never_answers_fails_within_the_download_timeout(
    tmp_path: Path, silent_proxy: int
) -> None:
    result = _count_offline(tmp_path, silent_proxy, timeout=1.0)
    assert result["error"] == "MissingBpeFileError"
    assert float(result["seconds"]) < 5  # type: ignore[arg-type]


def test_a_corrupt_cached_file_is_reported_not_trusted(tmp_path: Path) -> None:
    (tmp_path / P50K.cache_name).write_bytes(b"not a bpe file\n")
    result = _count_offline(tmp_path, _closed_port())
    assert result["error"] == "MissingBpeFileError"
    assert "corrupt" in str(result["message"])


def test_a_corrupt_cached_copy_of_a_shipped_encoding_gives_way_to_the_shipped_file(
    tmp_path: Path,
) -> None:
    (tmp_path / O200K_CACHE_NAME).write_bytes(b"not a bpe file\n")
    assert _count_offline(tmp_path, _closed_port(), model="gpt-4o")["tokens"] == 2


def test_seeding_from_a_local_file_makes_counting_work_offline(tmp_path: Path) -> None:
    downloaded = tmp_path / "o200k_base.tiktoken"
    shutil.copyfile(SHARED_O200K, downloaded)
    cache = tmp_path / "cache"
    target = seed_tiktoken_cache(downloaded, cache_dir=cache)  # encoding found by its hash
    assert target == cache / O200K_CACHE_NAME
    assert hashlib.sha256(target.read_bytes()).hexdigest() == O200K_SHA256
    assert _count_offline(cache, _closed_port(), model="gpt-4o")["tokens"] == 2


def test_seeding_honours_tiktoken_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    target = seed_tiktoken_cache(SHARED_O200K, "o200k_base")
    assert target == tmp_path / O200K_CACHE_NAME


def test_the_module_command_seeds_the_cache(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "moodlemate.providers.openai.tiktoken_cache",
            str(SHARED_O200K),
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / O200K_CACHE_NAME).is_file()


def test_a_corrupted_file_is_rejected_and_nothing_is_written(tmp_path: Path) -> None:
    corrupted = tmp_path / "o200k_base.tiktoken"
    data = bytearray(SHARED_O200K.read_bytes())
    data[1000] ^= 0x01
    corrupted.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ValidationError) as caught:
        seed_tiktoken_cache(corrupted, "o200k_base", cache_dir=cache)
    assert O200K_SHA256 in str(caught.value)
    assert not cache.exists()


def test_a_file_of_another_encoding_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        seed_tiktoken_cache(SHARED_O200K, "cl100k_base", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_error_is_catchable_as_the_core_type() -> None:
    assert issubclass(MissingBpeFileError, TokenizerUnavailableError)
    assert O200K.cache_name == O200K_CACHE_NAME


CHAT = """
import logging, sys
logging.basicConfig()
from moodlemate.ai import GPT, TokenizerUnavailableError
import moodlemate.providers.openai as package
assert package.__file__.startswith(sys.argv[2]), package.__file__
gpt = GPT("openai", endpoint=sys.argv[1], api_key="sk-test-4f1c2e9b7a6d5c3e")
try:
    gpt.count_tokens("hi", "gpt-4")
except TokenizerUnavailableError as exc:
    print("count:", exc, file=sys.stderr)
print(gpt.chat_completion("gpt-4", "", " hello" * 9000))
talk = gpt.conversation("long", model="gpt-4")
for _ in range(3):
    print(talk.ask(" word" * 2000))
print("turns", len(talk.history))
"""


def test_chat_and_conversations_work_when_no_tokenizer_data_can_be_loaded(
    tmp_path: Path, server: LoopbackServer
) -> None:
    """A damaged install and no cache or network cost the exact counts, never the calls."""
    source = BUNDLED_BPE.parent
    site = tmp_path / "site"
    copy = site / "moodlemate" / "providers" / "openai"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    damaged = copy / "_bpe" / "cl100k_base.tiktoken"
    damaged.write_bytes(damaged.read_bytes()[:-100])  # a truncated install
    server.enqueue(Reply(text="sent anyway"), *[Reply(text="ok") for _ in range(3)])
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["TIKTOKEN_CACHE_DIR"] = str(tmp_path / "empty-cache")
    env["HTTPS_PROXY"] = f"http://127.0.0.1:{_closed_port()}"
    env["NO_PROXY"] = "127.0.0.1"
    env["PYTHONPATH"] = str(site)
    done = subprocess.run(
        [sys.executable, "-c", CHAT, server.url, str(copy)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:5] == ["sent anyway", "ok", "ok", "ok", "turns 2"]
    assert "cl100k_base file shipped with moodlemate-ai-openai is damaged" in done.stderr
    # One warning for the model, however many checks and trims fell back to the estimate.
    assert done.stderr.count("token counts of 'gpt-4' are estimates") == 1, done.stderr
    assert len(server.chat_requests) == 4
    # 2,000 words: 2,000 tokens exactly (all three turns would fit 8,192), 5,000 estimated.
    assert len(server.chat_requests[-1].body["messages"]) == 2  # system message and prompt
