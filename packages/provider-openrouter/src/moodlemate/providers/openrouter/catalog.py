"""OpenRouter's model catalog: prices and limits from ``GET {endpoint}/models``.

OpenRouter prices hundreds of models and changes them often, so the figures come from its
own models endpoint rather than a table in this package. Where they come from, in order:

1. memory, for :data:`CACHE_TTL` seconds;
2. the disk cache (``$XDG_CACHE_HOME/moodlemate-ai/``, else ``~/.cache/moodlemate-ai/``),
   while younger than :data:`CACHE_TTL`;
3. the endpoint itself, within :data:`FETCH_TIMEOUT` seconds of wall-clock time for the
   whole fetch (a server dripping its reply cannot stretch it), so a slow network delays
   callers at most that long once per :data:`RETRY_FAILED_AFTER` seconds;
4. a stale disk cache, then the snapshot shipped in this package (``models.json``).

A price lookup therefore never fails and never waits long. On an event loop's thread it
never waits for the network at all: it answers from memory, the disk cache or the snapshot,
and async calls first await the fetch in a worker thread (:func:`aload`).
:func:`refresh_models` forces a fetch (``python -m moodlemate.providers.openrouter``).

OpenRouter quotes USD per token as decimal strings (``"0.00000015"``); they become
per-million-token :class:`~moodlemate.ai._pricing.Price` Decimals exactly, prompt-cache reads
(``input_cache_read``) and writes (``input_cache_write``, which its usage reports as
``prompt_tokens_details.cache_write_tokens``) included. A negative price (``"-1"``, e.g.
``openrouter/auto``, which bills as whatever model it routes to) means unknown.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from moodlemate.ai.plugin import (
    APIConnectionError,
    MalformedResponseError,
    ModelInfo,
    Price,
    normalize_endpoint,
)

__all__ = [
    "CACHE_TTL",
    "DEFAULT_ENDPOINT",
    "FETCH_TIMEOUT",
    "MAX_CATALOG_BYTES",
    "RETRY_FAILED_AFTER",
    "aload",
    "cache_dir",
    "cache_path",
    "lookup",
    "models_for",
    "refresh_models",
    "snapshot",
]

log = logging.getLogger("moodlemate.ai")

DEFAULT_ENDPOINT = "https://openrouter.ai/api/v1"
CACHE_TTL = 24 * 3600.0
"""Seconds fetched prices are trusted before the next automatic fetch."""
FETCH_TIMEOUT = 2.0
"""Seconds an automatic fetch may take in all; :func:`refresh_models` allows more."""
MAX_CATALOG_BYTES = 64 * 1024 * 1024
"""The largest models listing accepted (OpenRouter's is a few MB)."""
RETRY_FAILED_AFTER = 600.0
"""Seconds to wait after a failed automatic fetch before trying the network again."""

_MILLION = Decimal(1_000_000)
_Models = dict[str, ModelInfo]
_lock = threading.Lock()
# cache file -> (monotonic expiry, models): memory mirrors the disk cache it was read from.
_memory: dict[Path, tuple[float, _Models]] = {}


# -- public ----------------------------------------------------------------------------------


def lookup(model: str, endpoint: str = DEFAULT_ENDPOINT) -> ModelInfo | None:
    """Price and limits of ``model``; a routing variant (``:nitro``, ``:floor``) is priced as
    its base model, while ``:free`` ids are their own entries."""
    models = models_for(endpoint)
    info = models.get(model)
    if info is None:
        base, colon, variant = model.partition(":")
        if colon and variant != "free":
            info = models.get(base)
    return info


def models_for(endpoint: str = DEFAULT_ENDPOINT) -> _Models:
    """Every model known for ``endpoint``, from the freshest source that answers quickly."""
    path = cache_path(endpoint)
    entry = _memory.get(path)
    if entry is not None and entry[0] > time.monotonic():
        return entry[1]
    if _on_event_loop():  # never wait for the network there; aload() fetches off the loop
        if entry is not None:
            return entry[1]
        cached = _read_cache(path)
        return cached[0] if cached is not None else snapshot()
    # The lock is held across the fetch, which FETCH_TIMEOUT bounds as a whole: concurrent
    # callers wait at most that long, then read what it stored.
    with _lock:
        entry = _memory.get(path)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        models, ttl = _load(endpoint, path)
        _memory[path] = (time.monotonic() + ttl, models)
        return models


async def aload(endpoint: str) -> None:
    """Make sure ``endpoint``'s catalog is in memory, fetching it in a worker thread so the
    event loop keeps running (async calls await this before they are priced)."""
    entry = _memory.get(cache_path(endpoint))
    if entry is None or entry[0] <= time.monotonic():
        import asyncio

        await asyncio.to_thread(models_for, endpoint)


def refresh_models(endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 30.0) -> int:
    """Fetch ``{endpoint}/models`` now, update the disk cache and return how many models
    were priced. Raises APIConnectionError or MalformedResponseError when that fails (the
    previous cache is kept)."""
    endpoint = normalize_endpoint(endpoint)
    models = _fetch(endpoint, timeout)
    with _lock:
        _memory[cache_path(endpoint)] = (time.monotonic() + CACHE_TTL, models)
    return sum(info.price is not None for info in models.values())


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "moodlemate-ai"


def cache_path(endpoint: str = DEFAULT_ENDPOINT) -> Path:
    """The disk cache of one endpoint's catalog (endpoints never share a file)."""
    host = urlsplit(endpoint).hostname or "local"
    digest = hashlib.sha256(endpoint.encode()).hexdigest()[:12]
    return cache_dir() / f"openrouter-models-{host}-{digest}.json"


@cache
def snapshot() -> _Models:
    """The catalog shipped with the package (its ``source`` and ``as_of`` say how old)."""
    from importlib.resources import files  # 5+ ms at import: only when the catalog is read

    text = files("moodlemate.providers.openrouter").joinpath("models.json").read_text("utf-8")
    data = json.loads(text)
    return parse(data, source=data["source"], as_of=data["as_of"])


def parse(payload: Any, *, source: str, as_of: str | None, live: bool = False) -> _Models:
    """OpenRouter's ``{"data": [...]}`` as ModelInfo by id; malformed entries are skipped.
    ``live``: fetched from the service rather than shipped."""
    entries = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise ValueError("no 'data' list")
    models: _Models = {}
    for entry in entries:
        info = _model_info(entry, source, as_of, live)
        if info is not None:
            models[info.name] = info
    return models


# -- sources ---------------------------------------------------------------------------------


def _load(endpoint: str, path: Path) -> tuple[_Models, float]:
    """The catalog and how long to keep it in memory."""
    cached = _read_cache(path)
    # A cache dated in the future (written under a clock since corrected) is stale, not
    # fresh for as long as the clock was ahead.
    age = time.time() - cached[1] if cached is not None else -1.0
    if cached is not None and 0 <= age < CACHE_TTL:
        return cached[0], CACHE_TTL - age
    try:
        return _fetch(endpoint, FETCH_TIMEOUT), CACHE_TTL
    except (APIConnectionError, MalformedResponseError) as exc:
        fallback = "the stale disk cache" if cached is not None else "the shipped snapshot"
        log.info(
            "could not refresh OpenRouter prices from %s (%s); using %s", endpoint, exc, fallback
        )
    return (cached[0] if cached is not None else snapshot()), RETRY_FAILED_AFTER


def _on_event_loop() -> bool:
    asyncio = sys.modules.get("asyncio")  # not imported: no loop can be running
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _fetch(endpoint: str, timeout: float) -> _Models:
    from moodlemate.providers.openai.transport import fetch

    url = f"{endpoint}/models"
    try:
        raw = fetch(url, timeout=timeout, max_bytes=MAX_CATALOG_BYTES)
    except MalformedResponseError as exc:  # too large
        raise MalformedResponseError(f"GET {url}: {exc.message}", provider="openrouter") from None
    except APIConnectionError as exc:
        raise APIConnectionError(f"GET {url} {exc.message}", provider="openrouter") from None
    fetched_at = time.time()
    as_of = datetime.fromtimestamp(fetched_at, UTC).strftime("%Y-%m-%d")
    try:
        payload = json.loads(raw)
        models = parse(payload, source=url, as_of=as_of, live=True)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        raise MalformedResponseError(
            f"GET {url}: not a models list", provider="openrouter"
        ) from None
    if not models:
        raise MalformedResponseError(f"GET {url}: no priced models", provider="openrouter")
    _write_cache(cache_path(endpoint), url, fetched_at, payload["data"])
    return models


def _read_cache(path: Path) -> tuple[_Models, float] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
        fetched_at = float(data["fetched_at"])
        as_of = datetime.fromtimestamp(fetched_at, UTC).strftime("%Y-%m-%d")
        return parse(data, source=str(data["source"]), as_of=as_of, live=True), fetched_at
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        log.info("ignoring unreadable OpenRouter price cache %s (%s)", path, exc)
        return None


def _write_cache(path: Path, source: str, fetched_at: float, entries: list[Any]) -> None:
    """Keep only what pricing needs (the full listing is megabytes); write atomically."""
    slim = [_slim(e) for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]
    body = json.dumps({"source": source, "fetched_at": fetched_at, "data": slim})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(body, "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.info("could not write the OpenRouter price cache %s (%s)", path, exc)


def _slim(entry: Mapping[str, Any]) -> dict[str, Any]:
    pricing = _table(entry.get("pricing"))
    top = _table(entry.get("top_provider"))
    return {
        "id": entry["id"],
        "context_length": entry.get("context_length"),
        "pricing": {
            k: pricing[k]
            for k in ("prompt", "completion", "input_cache_read", "input_cache_write")
            if k in pricing
        },
        "top_provider": {
            k: top[k] for k in ("context_length", "max_completion_tokens") if k in top
        },
    }


# -- one entry -------------------------------------------------------------------------------


def _model_info(entry: Any, source: str, as_of: str | None, live: bool) -> ModelInfo | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
        return None
    pricing = _table(entry.get("pricing"))
    top = _table(entry.get("top_provider"))
    price = None
    if pricing:
        prompt = _per_million(pricing.get("prompt"))
        completion = _per_million(pricing.get("completion"))
        if prompt is not None and completion is not None:
            price = Price(
                input=prompt,
                output=completion,
                cached_input=_per_million(pricing.get("input_cache_read")),
                cache_write=_per_million(pricing.get("input_cache_write")),
            )
    return ModelInfo(
        name=entry["id"],
        price=price,
        context_window=_int(entry.get("context_length")) or _int(top.get("context_length")),
        max_output_tokens=_int(top.get("max_completion_tokens")),
        source=source,
        as_of=as_of,
        live=live,
    )


def _per_million(value: Any) -> Decimal | None:
    """``"0.00000015"`` USD per token -> ``Decimal("0.15")`` per million, exactly."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        per_token = Decimal(str(value))
    except InvalidOperation:
        return None
    if not per_token.is_finite() or per_token < 0:
        return None
    per_million = per_token * _MILLION
    try:
        return (
            per_million.normalize()
            if per_million != per_million.to_integral()
            else (per_million.quantize(Decimal(1)))
        )
    except InvalidOperation:  # more digits than a Decimal holds exactly: no real price
        return None


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
