"""Request options: the chat-completion parameters beyond temperature and max_tokens, as one
small frozen value a call takes (``options=Options(seed=7)`` or ``options={"seed": 7}``).

Grouped so the facade's methods and ``GPT(...)`` do not grow a keyword per parameter, and so
the plain-text path pays nothing (a request without options shares :data:`NO_OPTIONS`).
What is vendor-neutral (types, ranges, documented value sets) is checked here, before
sending; which model rejects which option is the provider's rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from moodlemate.ai._error_base import ValidationError

__all__ = ["APIS", "NO_OPTIONS", "OPTION_NAMES", "Options", "check_api", "options_from"]


@dataclass(frozen=True, slots=True, repr=False)
class Options:
    """Named chat-completion options; None (or empty) leaves the server's default."""

    top_p: float | None = None
    seed: int | None = None
    stop: str | tuple[str, ...] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: Mapping[str, int] | None = None
    """Token id (as a string, as JSON keys are) to a bias from -100 to 100."""
    user: str | None = None
    metadata: Mapping[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    parallel_tool_calls: bool | None = None
    tool_choice: str | Mapping[str, Any] | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    """Tool definitions, OpenAI-shaped: ``{"type": "function", "function": {...}}``."""
    response_format: Mapping[str, Any] | None = None
    reasoning_effort: str | None = None
    modalities: tuple[str, ...] | None = None
    audio: Mapping[str, Any] | None = None
    reasoning_summary: str | None = None
    """A summary of the model's reasoning (``auto``, ``concise``, ``detailed``): the Responses
    API's ``reasoning.summary``, returned in ``Completion.reasoning``."""
    api: str | None = None
    """The vendor API this call goes through (``"chat"``, ``"responses"``); not a wire field.
    None: the instance's ``api``, else the provider's model rules."""

    def __repr__(self) -> str:
        return f"Options({', '.join(f'{k}={v!r}' for k, v in self.named().items())})"

    def named(self) -> dict[str, Any]:
        """The options that are set, by name (``api`` is the providers' to act on, not send)."""
        out: dict[str, Any] = {}
        for name in OPTION_NAMES:
            value = getattr(self, name)
            if value is not None and value != ():
                out[name] = value
        return out


NO_OPTIONS = Options()
OPTION_NAMES = tuple(f.name for f in fields(Options))
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
REASONING_SUMMARIES = ("auto", "concise", "detailed")
APIS = ("chat", "responses")
MAX_STOP_SEQUENCES = 4
MAX_METADATA_PAIRS = 16
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def options_from(value: object) -> Options:
    """``value`` (an Options, a mapping of option names, or None) checked as an Options."""
    if value is None:
        return NO_OPTIONS
    if isinstance(value, Options):
        return check_options(value) if value is not NO_OPTIONS else value
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"options must be an Options or a mapping, not {type(value).__name__}"
        )
    unknown = [k for k in value if k not in OPTION_NAMES]
    if unknown:
        raise ValidationError(
            f"unknown option {unknown[0]!r} (named options: {', '.join(OPTION_NAMES)}; "
            "pass other fields through extra=)"
        )
    given = dict(value)
    for key in ("stop", "tools", "modalities"):
        if isinstance(given.get(key), list):
            given[key] = tuple(given[key])
    if given.get("tools") is None:
        given.pop("tools", None)
    return check_options(Options(**given))


def check_options(options: Options) -> Options:
    _number(options.top_p, "top_p", 0, 1)
    _number(options.presence_penalty, "presence_penalty", -2, 2)
    _number(options.frequency_penalty, "frequency_penalty", -2, 2)
    if options.seed is not None and (
        isinstance(options.seed, bool) or not isinstance(options.seed, int)
    ):
        raise ValidationError(f"seed must be an int, not {type(options.seed).__name__}")
    _stop(options.stop)
    _logit_bias(options.logit_bias)
    for name in ("user", "prompt_cache_key"):
        _string(getattr(options, name), name)
    _metadata(options.metadata)
    for name in ("store", "parallel_tool_calls"):
        flag = getattr(options, name)
        if flag is not None and not isinstance(flag, bool):
            raise ValidationError(f"{name} must be True or False, not {type(flag).__name__}")
    _choice(options.service_tier, "service_tier", SERVICE_TIERS)
    _choice(options.reasoning_effort, "reasoning_effort", REASONING_EFFORTS)
    _choice(options.reasoning_summary, "reasoning_summary", REASONING_SUMMARIES)
    _choice(options.api, "api", APIS)
    _tools(options.tools)
    _tool_choice(options.tool_choice, options.tools)
    _response_format(options.response_format)
    _modalities(options.modalities, options.audio)
    return options


def check_api(value: object, name: str = "api") -> str | None:
    """``value`` as an API name (``"chat"``, ``"responses"``), or None; ``name`` says where it
    came from in the message."""
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in APIS:
        raise ValidationError(f"{name} must be one of {', '.join(APIS)}, not {value!r}")
    return value.strip().lower()


def _number(value: object, name: str, low: float, high: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{name} must be a number, not {type(value).__name__}")
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise ValidationError(f"{name} must be between {low:g} and {high:g}, got {value!r}")


def _string(value: object, name: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValidationError(f"{name} must be a non-empty string")


def _choice(value: object, name: str, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValidationError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def _stop(stop: object) -> None:
    if stop is None or (isinstance(stop, str) and stop):
        return
    if (
        not isinstance(stop, tuple)
        or not 1 <= len(stop) <= MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise ValidationError(
            f"stop must be a non-empty string or 1 to {MAX_STOP_SEQUENCES} non-empty strings"
        )


def _logit_bias(bias: object) -> None:
    if bias is None:
        return
    if not isinstance(bias, Mapping):
        raise ValidationError("logit_bias must map token ids to biases")
    for token, value in bias.items():
        if not str(token).isdigit():
            raise ValidationError(f"logit_bias keys must be token ids, not {token!r}")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not -100 <= value <= 100
        ):
            raise ValidationError(f"logit_bias[{token!r}] must be between -100 and 100")


def _metadata(metadata: object) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, Mapping) or len(metadata) > MAX_METADATA_PAIRS:
        raise ValidationError(f"metadata must be a mapping of at most {MAX_METADATA_PAIRS} pairs")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError("metadata keys and values must be strings")
        if len(key) > 64 or len(value) > 512:
            raise ValidationError("metadata keys are at most 64 characters and values at most 512")


def _tools(tools: object) -> None:
    if not isinstance(tools, tuple):
        raise ValidationError("tools must be a sequence of tool definitions")
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type") != "function"
            or not isinstance(function, Mapping)
        ):
            raise ValidationError(
                f'tools[{i}] must be {{"type": "function", "function": {{"name": ...}}}}'
            )
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise ValidationError(
                f"tools[{i}]: the function name must be 1 to 64 letters, digits, _ or -"
            )
        if name in seen:
            raise ValidationError(f"tools[{i}]: a second tool named {name!r}")
        seen.add(name)
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ValidationError(f"tools[{i}]: parameters must be a JSON schema object")


def _tool_choice(choice: object, tools: tuple[Mapping[str, Any], ...]) -> None:
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise ValidationError(
                f"tool_choice must be none, auto, required or a tool, not {choice!r}"
            )
        if choice == "required" and not tools:
            raise ValidationError("tool_choice 'required' needs tools")
        return
    function = choice.get("function") if isinstance(choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str):
        raise ValidationError(
            'tool_choice must name a tool: {"type": "function", "function": {"name": ...}}'
        )
    if name not in {t["function"]["name"] for t in tools}:
        raise ValidationError(f"tool_choice names {name!r}, which is not among the tools")


def _response_format(response_format: object) -> None:
    if response_format is None:
        return
    if not isinstance(response_format, Mapping) or response_format.get("type") not in (
        "text",
        "json_object",
        "json_schema",
    ):
        raise ValidationError("response_format.type must be text, json_object or json_schema")
    if response_format["type"] == "json_schema":
        schema = response_format.get("json_schema")
        if not isinstance(schema, Mapping) or not isinstance(schema.get("name"), str):
            raise ValidationError("response_format json_schema needs a json_schema with a name")


def _modalities(modalities: object, audio: object) -> None:
    if modalities is not None and (
        not isinstance(modalities, tuple)
        or not modalities
        or not all(m in ("text", "audio") for m in modalities)
    ):
        raise ValidationError('modalities must be ("text",) or ("text", "audio")')
    wants_audio = isinstance(modalities, tuple) and "audio" in modalities
    if wants_audio and not isinstance(audio, Mapping):
        raise ValidationError('modalities with "audio" need audio={"voice": ..., "format": ...}')
    if audio is not None and not isinstance(audio, Mapping):
        raise ValidationError("audio must be a mapping with voice and format")
