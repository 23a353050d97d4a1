"""Model families and the request shape each accepts, as the OpenAI API enforces them.

Reasoning models (o-series, gpt-5) reject ``max_tokens`` (they take
``max_completion_tokens``) and any temperature but 1; o1-mini and o1-preview also reject the
system and developer roles. The seed's default call (temperature 0.7) must still work on
them, so the request is adapted and the adaptation logged once per model.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from moodlemate.ai.plugin import ChatRequest

__all__ = ["ModelRules", "chat_body", "family", "routed_rules_for", "rules_for", "same_model"]

log = logging.getLogger("moodlemate.ai")

_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")
_REASONING = re.compile(
    r"^(o\d+(-mini|-pro|-preview|-deep-research)?|gpt-5(\.\d+)?(-mini|-nano|-pro)?)$"
)
_NO_SYSTEM_ROLE = frozenset({"o1-mini", "o1-preview"})


@dataclass(frozen=True, slots=True)
class ModelRules:
    reasoning: bool = False
    system_role: bool = True


_CHAT_RULES = ModelRules()


@lru_cache(maxsize=1024)
def family(model: str) -> str:
    """``o1-mini-2024-09-12`` -> ``o1-mini``; ``openai/gpt-4o`` -> ``gpt-4o``."""
    name = model.rsplit("/", 1)[-1].lower()
    name = name.split(":", 1)[0]  # OpenRouter variants such as ":free"
    return _SNAPSHOT.sub("", name)


def same_model(requested: str, served: str) -> bool:
    """Whether ``served`` (a reply's ``model``) is ``requested`` or a dated snapshot of the
    same family (``gpt-4o-mini`` -> ``gpt-4o-mini-2024-07-18``), from the same vendor when
    both name one (``openai/gpt-4o`` -> ``openai/gpt-4o-2024-08-06``)."""
    vendor, slash, _ = requested.lower().rpartition("/")
    served_vendor, served_slash, _ = served.lower().rpartition("/")
    if slash and served_slash and vendor != served_vendor:
        return False
    return family(served) == family(requested)


@lru_cache(maxsize=1024)
def rules_for(model: str) -> ModelRules:
    fam = family(model)
    if not _REASONING.match(fam):
        return _CHAT_RULES
    return ModelRules(reasoning=True, system_role=fam not in _NO_SYSTEM_ROLE)


def routed_rules_for(model: str) -> ModelRules:
    """The rules for a model id as a router spells it (``vendor/model``): OpenAI's rules
    apply to OpenAI's models (``openai/o1``, or a bare ``o1``); another vendor's model is
    taken in the classic shape, whatever its name looks like (``acme/o3-mini``), because the
    router normalises the request for it. The OpenRouter provider and the test server both
    decide by this."""
    vendor, slash, _ = model.partition("/")
    if slash and vendor.lower() != "openai":
        return _CHAT_RULES
    return rules_for(model)


_adapted: set[tuple[str, str]] = set()
_adapted_lock = threading.Lock()


def _note_once(model: str, what: str, message: str) -> None:
    with _adapted_lock:
        if (model, what) in _adapted:
            return
        _adapted.add((model, what))
    log.info("%s: %s", model, message)


def chat_body(request: ChatRequest, rules: ModelRules) -> dict[str, Any]:
    """The JSON body of /chat/completions for ``request`` under ``rules``."""
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if not rules.reasoning:
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
    else:
        if request.max_tokens is not None:
            body["max_completion_tokens"] = request.max_tokens
        if request.temperature is not None:
            if request.temperature == 1:
                body["temperature"] = 1
            else:
                _note_once(
                    request.model,
                    "temperature",
                    f"reasoning model accepts only temperature 1; sending none instead of "
                    f"{request.temperature:g}",
                )
        if not rules.system_role:
            body["messages"] = _fold_system_into_user(request.model, messages)
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.extra:
        body.update(request.extra)
    return body


def _fold_system_into_user(model: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Put system/developer text at the head of the first user turn, keeping it verbatim."""
    instructions = [m["content"] for m in messages if m["role"] in ("system", "developer")]
    rest = [m for m in messages if m["role"] not in ("system", "developer")]
    if not instructions:
        return rest
    _note_once(model, "system", "model rejects the system role; system text sent in the user turn")
    preamble = "\n\n".join(t for t in instructions if t)
    for i, message in enumerate(rest):
        if message["role"] == "user":
            joined = f"{preamble}\n\n{message['content']}" if preamble else message["content"]
            rest[i] = {"role": "user", "content": joined}
            return rest
    return [{"role": "user", "content": preamble}, *rest]
