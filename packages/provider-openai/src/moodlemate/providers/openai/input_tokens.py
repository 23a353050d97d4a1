"""What a chat request carries beyond its messages' text, in OpenAI prompt tokens.

Images are counted with OpenAI's formulas (:mod:`.vision_tokens`) at their real size, read
from the image's header; tool definitions with the cookbook's rule (:mod:`.tool_tokens`).
Those are exact where OpenAI documents them. The rest is an estimate, and the count says so:
an image given by URL (its size is unknown until the server fetches it: counted at the largest
size the formula bills), an image on a model without a published formula, a PDF (OpenAI bills
each page's extracted text and an image of it: counted at one token per 4 bytes) and audio
(about 10 tokens a second, from a WAV header's byte rate, else an MP3 at 128 kbit/s), and a
typed answer's JSON schema (``response_format``), which OpenAI bills as prompt tokens without
publishing how: counted as the tokens of its compact JSON text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from moodlemate.ai.plugin import (
    AudioPart,
    ChatRequest,
    FilePart,
    ImagePart,
    TokenCount,
    image_dimensions,
)
from moodlemate.providers.openai import tokens, tool_tokens, vision_tokens

__all__ = ["AUDIO_TOKENS_PER_SECOND", "count_input_tokens", "image_part_tokens"]

AUDIO_TOKENS_PER_SECOND = 10
"""OpenAI's audio models bill about one token per 100 ms of input audio."""
FILE_BYTES_PER_TOKEN = 4
DEFAULT_IMAGE_TOKENS = 765
"""A 1024x1024 image at high detail on the gpt-4o formula: the figure for models with none."""
LARGEST_BILLED = (2048, 768)
"""The size that yields the most tiles once fitted (8), and at least as many patches as any."""


def count_input_tokens(request: ChatRequest) -> TokenCount:
    model = request.model
    total, estimate = 0, False
    for message in request.messages:
        if isinstance(message.content, str):
            continue
        for part in message.content:
            if isinstance(part, ImagePart):
                tokens_, exact = image_part_tokens(model, part)
            elif isinstance(part, FilePart):
                tokens_, exact = len(part.data or b"") // FILE_BYTES_PER_TOKEN, False
            elif isinstance(part, AudioPart):
                tokens_, exact = _audio_tokens(part), False
            else:
                continue
            total += tokens_
            estimate = estimate or not exact
    if request.options.tools:
        total += tool_tokens.tool_definition_tokens(model, request.options.tools)
        estimate = estimate or not tokens.tokenizer_known(model)
    schema = _answer_schema(request)
    if schema is not None:
        text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
        total += tokens.count_tokens(text, model)
        estimate = True
    return TokenCount(total, estimate=estimate)


def _answer_schema(request: ChatRequest) -> Mapping[str, Any] | None:
    """The ``json_schema`` object of the request's answer format (the named option, or the
    field a typed answer adds: ``response_format``, or ``text.format`` on the Responses
    API), or None."""
    extra = request.extra
    text = extra.get("text")
    for fmt in (
        request.options.response_format,
        extra.get("response_format"),
        text.get("format") if isinstance(text, Mapping) else None,
    ):
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema", fmt)
            return spec if isinstance(spec, Mapping) else None
    return None


def image_part_tokens(model: str, part: ImagePart) -> tuple[int, bool]:
    """The image's tokens on ``model``, and whether that is exact."""
    size = image_dimensions(part.data) if part.data is not None else None
    width, height = size or LARGEST_BILLED
    counted = vision_tokens.image_tokens(model, width, height, part.detail)
    if counted is None:
        return DEFAULT_IMAGE_TOKENS, False
    return counted, size is not None


def _audio_tokens(part: AudioPart) -> int:
    data = part.data
    seconds = None
    if part.format == "wav" and len(data) >= 44:
        byte_rate = int.from_bytes(data[28:32], "little")
        if byte_rate > 0:
            seconds = (len(data) - 44) / byte_rate
    if seconds is None:
        seconds = len(data) / (128_000 / 8)
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)
