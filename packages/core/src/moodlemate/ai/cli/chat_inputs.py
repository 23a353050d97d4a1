"""What ``chat`` sends beyond the prompt: attachments (``-a``, ``--at``) and request options
(``-o NAME VALUE``), each turned into the library's checked values before anything is sent.

An option's value is read as its type says (a number, an integer, true/false, text, or JSON
for the structured ones: ``-o tools @tools.json`` reads a file); ``stop`` may be repeated.
A name that is not a named option goes to the request as it is (JSON if it parses, else
text), the ``extra`` passthrough.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.exits import EXIT_USAGE

__all__ = ["attachments", "request_options"]

_FLOATS = frozenset({"top_p", "presence_penalty", "frequency_penalty"})
_INTS = frozenset({"seed"})
_BOOLS = frozenset({"store", "parallel_tool_calls"})
_TEXTS = frozenset(
    {"user", "service_tier", "prompt_cache_key", "reasoning_effort", "reasoning_summary", "api"}
)
_JSON = frozenset({"logit_bias", "metadata", "tools", "response_format", "audio"})
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_KINDS = {
    "image": ("image/png", "image/jpeg", "image/gif", "image/webp"),
    "pdf": ("application/pdf",),
    "audio": ("audio/wav", "audio/mpeg"),
}


def request_options(pairs: list[list[str]] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``-o NAME VALUE`` pairs as (named options, extra fields)."""
    from moodlemate.ai._options import OPTION_NAMES

    named: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, raw in pairs or ():
        if name not in OPTION_NAMES:
            extra[name] = _json_or_text(raw)
        elif name == "stop":
            named.setdefault("stop", []).append(raw)
        elif name == "modalities":
            named[name] = [m.strip() for m in raw.split(",") if m.strip()]
        elif name == "tool_choice":
            named[name] = raw if raw in ("none", "auto", "required") else _json(name, raw)
        else:
            named[name] = _typed(name, raw)
    return named, extra


def _typed(name: str, raw: str) -> Any:
    if name in _FLOATS:
        try:
            return float(raw)
        except ValueError:
            raise CommandError(f"-o {name}: {raw!r} is not a number", EXIT_USAGE) from None
    if name in _INTS:
        try:
            return int(raw)
        except ValueError:
            raise CommandError(f"-o {name}: {raw!r} is not an integer", EXIT_USAGE) from None
    if name in _BOOLS:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise CommandError(f"-o {name}: {raw!r} is not true or false", EXIT_USAGE)
    if name in _TEXTS:
        return raw
    return _json(name, raw)


def _json(name: str, raw: str) -> Any:
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"-o {name}: cannot read {raw[1:]!r} ({exc})", EXIT_USAGE) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"-o {name}: not valid JSON ({exc})", EXIT_USAGE) from None


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def attachments(sources: list[str] | None, typed: list[list[str]] | None) -> list[Any]:
    """``-a PATH_OR_URL`` (``-`` reads standard input's bytes) and ``--at PATH TYPE`` (TYPE:
    image, pdf or audio, checked against what the bytes are) as parts."""
    from moodlemate.ai._media import MAX_READ_BYTES, sniff
    from moodlemate.ai._messages import attachment

    parts: list[Any] = []
    for source in sources or ():
        parts.append(attachment(_stdin_bytes() if source == "-" else source))
    for source, kind in typed or ():
        if kind not in _KINDS:
            raise CommandError(
                f"--at {source} {kind}: TYPE must be one of {', '.join(_KINDS)}", EXIT_USAGE
            )
        if source == "-":
            data = _stdin_bytes()
        else:
            from moodlemate.ai._media import read_local

            data = read_local(source, "attachment")
        found = sniff(data[:MAX_READ_BYTES])
        if found not in _KINDS[kind]:
            raise CommandError(
                f"--at {source} {kind}: the bytes are {found or 'of an unknown type'}, not {kind}",
                EXIT_USAGE,
            )
        part = attachment(data)
        if source != "-":
            object.__setattr__(part, "path", source)
        parts.append(part)
    return parts


def _stdin_bytes() -> bytes:
    from moodlemate.ai._media import MAX_READ_BYTES

    if sys.stdin.isatty():
        raise CommandError("-a -: standard input is a terminal, not a file", EXIT_USAGE)
    data = sys.stdin.buffer.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise CommandError(f"-a -: standard input is over {MAX_READ_BYTES:,} bytes", EXIT_USAGE)
    return data
