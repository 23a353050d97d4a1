"""What an OpenAI-compatible server says about its own models' context windows.

No price table knows a local model's window, and guessing wrong breaks conversations: on a
2,048-token llama.cpp server an assumed 8,192 fills the window on the first turn. Servers
say it in their model listing, each in its own field:

- vLLM: ``GET /v1/models`` -> ``data[].max_model_len``;
- llama.cpp: ``GET /v1/models`` -> ``data[].meta.n_ctx_train`` (the model's), and
  ``GET /props`` -> ``default_generation_settings.n_ctx`` (a slot's, which is what a request
  gets: the server's ``--ctx-size`` split between its ``--parallel`` slots);
- OpenRouter and LM Studio: ``context_length`` / ``max_context_length``.

Answers (and failures) are remembered per endpoint and model for :data:`TTL` seconds, and
each lookup is bounded by :data:`TIMEOUT`, so a server that does not answer costs a
conversation at most that, once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "TIMEOUT",
    "TTL",
    "ServedLimits",
    "models_from_listing",
    "window_from_listing",
    "window_from_props",
]

TIMEOUT = 2.0
TTL = 600.0
_MAX_BODY = 4 * 1024 * 1024
_LISTING_FIELDS = ("max_model_len", "context_length", "max_context_length", "context_window")

Fetch = Callable[[str], bytes | None]
"""GET an absolute URL within TIMEOUT: the body of a 2xx reply, else None."""


class ServedLimits:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], tuple[int | None, float]] = {}

    def window(self, endpoint: str, model: str, fetch: Fetch) -> int | None:
        key = (endpoint, model)
        now = time.monotonic()
        with self._lock:
            known = self._known.get(key)
        if known is not None and known[1] > now:
            return known[0]
        window = _ask(endpoint, model, fetch)
        with self._lock:
            self._known[key] = (window, now + TTL)
        return window


def _ask(endpoint: str, model: str, fetch: Fetch) -> int | None:
    listing = _json(fetch(endpoint.rstrip("/") + "/models"))
    window, is_llama_cpp = window_from_listing(listing, model)
    if is_llama_cpp:  # a slot's window, which may be smaller than the model's
        slot = window_from_props(_json(fetch(_root(endpoint) + "/props")))
        if slot is not None:
            return slot
    return window


def window_from_listing(listing: Any, model: str) -> tuple[int | None, bool]:
    """(the window the listing gives ``model``, whether the listing is llama.cpp's). A listing
    of one model answers for any name (llama.cpp and vLLM serve one model, whatever the
    request calls it)."""
    entries = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(entries, list):
        return None, False
    models = [e for e in entries if isinstance(e, dict)]
    named = [e for e in models if e.get("id") == model]
    entry = named[0] if named else (models[0] if len(models) == 1 else None)
    if entry is None:
        return None, False
    meta = entry.get("meta")
    is_llama_cpp = isinstance(meta, dict) or entry.get("owned_by") == "llamacpp"
    for name in _LISTING_FIELDS:
        value = _tokens(entry.get(name))
        if value is not None:
            return value, is_llama_cpp
    if isinstance(meta, dict):
        return _tokens(meta.get("n_ctx")) or _tokens(meta.get("n_ctx_train")), True
    return None, is_llama_cpp


def models_from_listing(body: bytes | None) -> dict[str, int | None] | None:
    """``GET /models``'s ids, each with the window the listing gives it; None when the body
    is not a listing. At most 10,000 models, ids of at most 256 characters."""
    listing = _json(body)
    entries = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(entries, list):
        return None
    served: dict[str, int | None] = {}
    for entry in entries[:10_000]:
        name = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(name, str) and 0 < len(name) <= 256:
            served[name] = window_from_listing({"data": [entry]}, name)[0]
    return served


def window_from_props(props: Any) -> int | None:
    settings = props.get("default_generation_settings") if isinstance(props, dict) else None
    return _tokens(settings.get("n_ctx")) if isinstance(settings, dict) else None


def _tokens(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 100_000_000:
        return value
    return None


def _json(body: bytes | None) -> Any:
    if not body or len(body) > _MAX_BODY:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _root(endpoint: str) -> str:
    """``http://host:8080/v1`` -> ``http://host:8080``: llama.cpp serves /props at its root."""
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
