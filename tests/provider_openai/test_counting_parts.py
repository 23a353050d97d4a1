"""Counting requests with images, files, audio and tools through the facade: OpenAI's
documented figures where they exist, estimates marked as such, and the counts used by the
context-window check and the budget reservation before anything is sent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from moodlemate.ai import (
    GPT,
    AudioPart,
    BudgetExceededError,
    ContextWindowExceededError,
    FilePart,
    ImagePart,
    Message,
    TextPart,
)
from moodlemate.ai.testing import LoopbackServer
from support import (
    FAST_RETRY,
    TEST_KEY,
    WEATHER_MESSAGES,
    WEATHER_TOOL,
    jpeg_bytes,
    pdf_bytes,
    png_bytes,
    wav_bytes,
)


def image_only(gpt: GPT, model: str, part: ImagePart) -> tuple[int, bool]:
    """What one image adds to a user turn's count (the turn's text counted apart)."""
    with_image = gpt.count_message_tokens([Message("user", (TextPart("x"), part))], model)
    text = gpt.count_message_tokens([{"role": "user", "content": "x"}], model)
    return with_image.tokens - text.tokens, with_image.estimate


@pytest.mark.parametrize(
    ("model", "size", "detail", "expected"),
    [
        # OpenAI's vision guide: 1024x1024 high = 765, 2048x4096 high = 1105, low = 85.
        ("gpt-4o", (1024, 1024), "high", 765),
        ("gpt-4o", (2048, 4096), "high", 1105),
        ("gpt-4o", (4096, 8192), "low", 85),
        ("gpt-4o", (1024, 1024), "low", 85),
        ("gpt-4.1", (2048, 4096), "auto", 1105),
        # The patch formula: 1024x1024 is 1024 patches, 1800x2400 fits to 1452.
        ("gpt-4.1-mini", (1024, 1024), "high", 1659),  # ceil(1024 * 1.62)
        ("gpt-4.1-mini", (1800, 2400), "low", 2353),  # ceil(1452 * 1.62)
        ("gpt-4o-mini", (1024, 1024), "high", 2833 + 4 * 5667),
    ],
)
def test_image_counts_match_openai_figures(
    gpt: GPT, model: str, size: tuple[int, int], detail: Any, expected: int
) -> None:
    for data in (png_bytes(*size) if max(size) <= 2048 else jpeg_bytes(*size), jpeg_bytes(*size)):
        assert image_only(gpt, model, ImagePart(data, detail=detail)) == (expected, False)


def test_an_image_by_url_is_an_estimate_at_the_largest_billed_size(gpt: GPT) -> None:
    tokens, estimate = image_only(gpt, "gpt-4o", ImagePart("https://example.org/a.png"))
    assert (tokens, estimate) == (85 + 8 * 170, True)
    assert image_only(gpt, "gpt-4o", ImagePart("https://example.org/a.png", detail="low")) == (
        85,
        True,
    )


def test_files_and_audio_are_estimates(gpt: GPT) -> None:
    pdf = gpt.count_message_tokens([Message("user", (FilePart(pdf_bytes()),))], "gpt-4o")
    assert pdf.estimate
    wav = wav_bytes(seconds=2.0)
    audio = gpt.count_message_tokens([Message("user", (AudioPart(wav),))], "gpt-4o-audio-preview")
    text = gpt.count_message_tokens([{"role": "user", "content": ""}], "gpt-4o-audio-preview")
    assert audio.estimate
    assert audio.tokens - text.tokens == 20  # 2 s at 10 tokens a second


def test_tool_definitions_count_the_cookbook_figure(gpt: GPT) -> None:
    counted = gpt.count_message_tokens(WEATHER_MESSAGES, "gpt-4o", tools=[WEATHER_TOOL])
    assert (counted.tokens, counted.estimate) == (101, False)
    assert gpt.count_message_tokens(WEATHER_MESSAGES, "gpt-4", tools=[WEATHER_TOOL]).tokens == 105


def test_tool_calls_and_results_count_their_text(gpt: GPT) -> None:
    plain = gpt.count_message_tokens([{"role": "user", "content": "hi"}], "gpt-4o").tokens
    with_turns = gpt.count_message_tokens(
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
        ],
        "gpt-4o",
    ).tokens
    assert with_turns > plain + 2 * 3 + 5


def test_images_over_the_window_are_refused_before_sending(
    gpt: GPT, server: LoopbackServer
) -> None:
    """gpt-4o-mini bills a 2048x768 high-detail image 48,169 tokens: three exceed its
    128,000-token window, though their bytes are few."""
    wide = ImagePart(png_bytes(2048, 768), detail="high")
    with pytest.raises(ContextWindowExceededError, match="context window"):
        gpt.complete("gpt-4o-mini", messages=[Message("user", (wide, wide, wide))])
    gpt.complete("gpt-4o-mini", messages=[Message("user", (wide, wide))])
    assert len(server.chat_requests) == 1


def test_the_budget_reserves_what_the_images_cost(server: LoopbackServer) -> None:
    """$0.01 covers the text, not two 48k-token images at gpt-4o-mini's $0.15 per million."""
    gpt = GPT(
        "openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, budget=Decimal("0.01")
    )
    wide = ImagePart(png_bytes(2048, 768), detail="high")
    with pytest.raises(BudgetExceededError):
        gpt.complete("gpt-4o-mini", messages=[Message("user", (TextPart("x"), wide, wide))])
    assert server.chat_requests == []
    gpt.complete("gpt-4o-mini", messages=[Message("user", (TextPart("x"),))])
    assert len(server.chat_requests) == 1
