"""Token counting with tiktoken: one encoder per encoding, loaded on first use.

tiktoken downloads its BPE files the first time an encoding is used and caches them in
``TIKTOKEN_CACHE_DIR`` (else a temp folder); offline, point that variable at a folder that
holds the files.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import TYPE_CHECKING

from moodlemate.providers.openai.models import family

if TYPE_CHECKING:
    import tiktoken

__all__ = ["FALLBACK_ENCODING", "count_tokens", "encoding_for", "encoding_name_for"]

log = logging.getLogger("moodlemate.ai")
FALLBACK_ENCODING = "o200k_base"
_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


@lru_cache(maxsize=1024)
def encoding_name_for(model: str) -> str:
    """tiktoken's encoding for ``model``; unknown models get o200k_base (current OpenAI models)."""
    from tiktoken.model import encoding_name_for_model

    for name in (model, family(model)):
        try:
            return encoding_name_for_model(name)
        except KeyError:
            continue
    log.info("no tokenizer known for %r; counting with %s", model, FALLBACK_ENCODING)
    return FALLBACK_ENCODING


def encoding_for(model: str) -> tiktoken.Encoding:
    name = encoding_name_for(model)
    encoding = _encodings.get(name)
    if encoding is None:
        with _lock:
            encoding = _encodings.get(name)
            if encoding is None:
                import tiktoken

                encoding = _encodings[name] = tiktoken.get_encoding(name)
    return encoding


def count_tokens(text: str, model: str) -> int:
    """Special-token text such as ``<|endoftext|>`` counts as plain text, as a prompt would."""
    return len(encoding_for(model).encode_ordinary(text))
