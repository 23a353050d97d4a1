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

from moodlemate.ai.plugin import (
    NO_OPTIONS,
    AudioPart,
    ChatRequest,
    FilePart,
    ImagePart,
    TextPart,
)
from moodlemate.providers.openai import wire

__all__ = [
    "REASONING_ALLOWANCE",
    "REASONING_REJECTS",
    "ModelRules",
    "chat_body",
    "family",
    "input_problem",
    "output_allowance",
    "routed_rules_for",
    "rules_for",
    "same_model",
]

log = logging.getLogger("moodlemate.ai")

_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")
_REASONING = re.compile(
    r"^(o\d+(-mini|-pro|-preview|-deep-research)?|gpt-5(\.\d+)?(-mini|-nano|-pro)?)$"
)
_NO_SYSTEM_ROLE = frozenset({"o1-mini", "o1-preview"})


_OPENAI_NAME = re.compile(r"^(gpt-|chatgpt-|o\d|text-|davinci|babbage)")
_NO_IMAGES = re.compile(
    r"^(gpt-3\.5.*|gpt-4(-32k)?|o1-mini|o1-preview|o3-mini|gpt-4o(-mini)?-(audio|search)-preview"
    r"|gpt-(4o-mini-)?audio.*|text-.*|davinci.*|babbage.*)$"
)
_AUDIO = re.compile(r"^(gpt-4o(-mini)?-audio-preview|gpt-audio(-mini)?)$")
_RESPONSES_ONLY = re.compile(
    r"^(o1-pro|o3-pro|o3-deep-research|o4-mini-deep-research|gpt-5(\.\d+)?-pro|gpt-5(\.\d+)?-codex"
    r"|codex-mini-latest|computer-use-preview)$"
)


@dataclass(frozen=True, slots=True)
class ModelRules:
    """What a model takes. The capabilities default to yes: a model no rule knows (a local
    server's, another vendor's behind a router) is sent what the user gives it."""

    reasoning: bool = False
    system_role: bool = True
    images: bool = True
    """Image and file (PDF) parts."""
    audio: bool = True
    """Input audio parts, and the audio output modality."""
    tools: bool = True
    """Tool definitions and ``response_format`` json_schema (o1-mini and o1-preview have
    neither)."""
    known: bool = False
    """An OpenAI model these rules describe; others (a local model, another vendor's) may
    reason or not: their ``reasoning_effort`` is sent as given."""
    responses_only: bool = False
    """Served only on the Responses API (o1-pro, o3-pro, gpt-5-pro, the deep-research and codex
    models): every request goes to ``/v1/responses``."""


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
    if not _OPENAI_NAME.match(fam):
        return _CHAT_RULES
    reasoning = bool(_REASONING.match(fam))
    return ModelRules(
        reasoning=reasoning,
        system_role=fam not in _NO_SYSTEM_ROLE,
        images=not _NO_IMAGES.match(fam),
        audio=bool(_AUDIO.match(fam)),
        tools=fam not in _NO_SYSTEM_ROLE,
        known=True,
        responses_only=bool(_RESPONSES_ONLY.match(fam)),
    )


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
    messages = wire.messages(request.messages)
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
    if request.options is not NO_OPTIONS:
        body.update(wire.options(request.options))
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.extra:
        body.update(request.extra)
    return body


def _fold_system_into_user(model: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put system/developer text at the head of the first user turn, keeping it verbatim."""
    instructions = [
        m["content"] if isinstance(m["content"], str) else _text_of(m["content"])
        for m in messages
        if m["role"] in ("system", "developer")
    ]
    rest = [m for m in messages if m["role"] not in ("system", "developer")]
    if not instructions:
        return rest
    _note_once(model, "system", "model rejects the system role; system text sent in the user turn")
    preamble = "\n\n".join(t for t in instructions if t)
    for i, message in enumerate(rest):
        if message["role"] == "user":
            content = message["content"]
            if not preamble:
                joined = content
            elif isinstance(content, str):
                joined = f"{preamble}\n\n{content}"
            else:  # parts: the instructions become the first text part
                joined = [{"type": "text", "text": preamble}, *content]
            rest[i] = {**message, "content": joined}
            return rest
    return [{"role": "user", "content": preamble}, *rest]


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


REASONING_REJECTS = ("top_p", "presence_penalty", "frequency_penalty", "logit_bias")
"""Options reasoning models refuse (with temperature, which is adapted instead)."""


def input_problem(request: ChatRequest, rules: ModelRules) -> str | None:
    """Why ``request.model`` cannot take what ``request`` carries, by ``rules``; None when it
    can. The provider raises it as UnsupportedInputError before sending."""
    model = request.model
    for index, message in enumerate(request.messages):
        if isinstance(message.content, str):
            continue
        for part in message.content:
            if type(part) is TextPart:
                continue
            if isinstance(part, ImagePart | FilePart) and not rules.images:
                kind = "image" if isinstance(part, ImagePart) else "file"
                return f"{model} does not take {kind} input (messages[{index}])"
            if isinstance(part, AudioPart) and not rules.audio:
                return f"{model} does not take audio input (messages[{index}])"
    options = request.options
    if options is NO_OPTIONS:
        return None
    if rules.reasoning:
        for name in REASONING_REJECTS:
            if getattr(options, name) is not None:
                return f"{model} is a reasoning model and does not accept {name}"
    elif rules.known and options.reasoning_effort is not None:
        return f"{model} is not a reasoning model and does not accept reasoning_effort"
    if not rules.tools:
        if options.tools or options.tool_choice is not None:
            return f"{model} does not take tools"
        if options.response_format is not None:
            return f"{model} does not take response_format"
    if options.modalities is not None and "audio" in options.modalities and not rules.audio:
        return f"{model} does not produce audio (modalities)"
    return None


REASONING_ALLOWANCE = {
    "none": 4096,
    "minimal": 4096,
    "low": 12_000,
    "medium": 25_000,
    "high": 50_000,
    "xhigh": 100_000,
}
"""Output tokens reserved for a reasoning model's reply when ``max_tokens`` is not set, by
``reasoning_effort`` (medium when not given): OpenAI's reasoning guide advises leaving at least
25,000 tokens for reasoning and output at the default effort; the others scale from it. The
model's own output limit caps them."""


def output_allowance(request: ChatRequest, rules: ModelRules) -> int | None:
    """What a budget reserves for ``request``'s output when it sets no ``max_tokens``."""
    if not rules.reasoning:
        return None
    effort = request.options.reasoning_effort or "medium"
    return REASONING_ALLOWANCE.get(effort, REASONING_ALLOWANCE["medium"])
