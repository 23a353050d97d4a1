"""Token counting with tiktoken: one encoder per encoding, loaded on first use.

tiktoken downloads its BPE files the first time an encoding is used and caches them in
``TIKTOKEN_CACHE_DIR`` (else a temp folder). An encoding in that cache is loaded by tiktoken;
o200k_base and cl100k_base, when not cached, come from the files shipped in this package
(:mod:`.bundled_bpe`), so current models count offline with no download. Other encodings go
through :mod:`.tiktoken_cache`, which fails fast offline with an error that says which file to
provide and how.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache
from typing import TYPE_CHECKING

from moodlemate.ai.plugin import TokenizerUnavailableError
from moodlemate.providers.openai.models import family

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "FALLBACK_ENCODING",
    "count_tokens",
    "encoding_for",
    "encoding_name_for",
    "tokenizer_known",
]

log = logging.getLogger("moodlemate.ai")
FALLBACK_ENCODING = "o200k_base"
_OPENAI_STYLE = re.compile(r"^(gpt-|chatgpt-|o\d|text-|davinci|babbage|ft:)")
_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


@lru_cache(maxsize=1024)
def _resolve(model: str) -> tuple[str, bool]:
    from tiktoken.model import encoding_name_for_model

    for name in (model, family(model)):
        try:
            return encoding_name_for_model(name), True
        except KeyError:
            continue
    if _OPENAI_STYLE.match(family(model)):
        log.info("no tokenizer known for %r; counting with %s", model, FALLBACK_ENCODING)
    else:
        log.info(
            "%r is not an OpenAI model: its token counts are estimates made with %s",
            model,
            FALLBACK_ENCODING,
        )
    return FALLBACK_ENCODING, False


def encoding_name_for(model: str) -> str:
    """tiktoken's encoding for ``model``; unknown models get o200k_base (current OpenAI models)."""
    return _resolve(model)[0]


def tokenizer_known(model: str) -> bool:
    """Whether tiktoken knows ``model``'s encoding (else counts are o200k_base estimates)."""
    return _resolve(model)[1]


def encoding_for(model: str) -> tiktoken.Encoding:
    name = encoding_name_for(model)
    encoding = _encodings.get(name)
    if encoding is None:
        with _lock:
            encoding = _encodings.get(name)
            if encoding is None:
                encoding = _encodings[name] = _load(name)
    return encoding


def count_tokens(text: str, model: str) -> int:
    """Special-token text such as ``<|endoftext|>`` counts as plain text, as a prompt would."""
    return len(encoding_for(model).encode_ordinary(text))


def _load(name: str) -> tiktoken.Encoding:
    import tiktoken
    from moodlemate.providers.openai.bundled_bpe import BUNDLED, encoding_from, load_bundled
    from moodlemate.providers.openai.tiktoken_cache import cached_file, ensure_available, is_cached

    if name in BUNDLED:
        # Read and verified once, tiktoken's cached copy where it has one, else the shipped
        # file; parsed here (tiktoken would read and hash the file again, and parse it slower).
        data = cached_file(name)
        built = load_bundled(name) if data is None else encoding_from(name, data)
        if built is not None:
            return built
    # A verified copy in tiktoken's cache is tiktoken's to load; checking it again, or
    # importing the downloader, would only cost.
    if not is_cached(name):
        bundled = load_bundled(name)
        if bundled is not None:
            return bundled
        ensure_available(name)
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # tiktoken surfaces requests, hash and OS errors as they come
        raise TokenizerUnavailableError(
            f"tiktoken could not load {name} ({type(exc).__name__}: {exc})"
        ) from exc
