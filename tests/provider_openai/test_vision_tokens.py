"""Image prompt tokens by OpenAI's published formulas, checked against its documented examples."""

from __future__ import annotations

import pytest
from moodlemate.providers.openai import vision_tokens
from moodlemate.providers.openai.vision_tokens import image_rate, image_tokens


# OpenAI's vision guide, "Calculating costs", tile models (gpt-4o: 85 base, 170 per tile).
@pytest.mark.parametrize(
    ("model", "width", "height", "detail", "expected"),
    [
        ("gpt-4o", 1024, 1024, "high", 765),  # 768x768 -> 4 tiles
        ("gpt-4o", 2048, 4096, "high", 1105),  # 1024x2048 -> 768x1536 -> 6 tiles
        ("gpt-4o", 4096, 8192, "low", 85),  # low detail: the base alone, whatever the size
        ("gpt-4o-2024-08-06", 1024, 1024, "high", 765),  # a snapshot counts as its family
        ("openai/gpt-4o", 2048, 4096, "high", 1105),  # a router's id too
        ("gpt-4.1", 1024, 1024, "high", 765),
        ("gpt-4o-mini", 1024, 1024, "high", 2833 + 4 * 5667),
        ("gpt-4o-mini", 4096, 8192, "low", 2833),
        ("o1", 1024, 1024, "high", 75 + 4 * 150),
        ("o3", 2048, 4096, "low", 75),
        ("gpt-5", 2048, 4096, "high", 70 + 6 * 140),
    ],
)
def test_tile_models_match_the_documented_examples(
    model: str, width: int, height: int, detail: str, expected: int
) -> None:
    assert image_tokens(model, width, height, detail) == expected


def test_auto_detail_is_counted_as_high() -> None:
    assert image_tokens("gpt-4o", 2048, 4096, "auto") == image_tokens("gpt-4o", 2048, 4096, "high")


def test_small_images_are_not_scaled_up() -> None:
    """A 128x64 image stays one tile: the short side is brought down to 768, never up."""
    assert image_tokens("gpt-4o", 128, 64, "high") == 85 + 170


def test_resizes_round_to_whole_pixels() -> None:
    """2049x513 fits 2048 wide at 512.75 -> 513 px high (two rows of tiles), 2050x513 at
    512.5 -> 512 (one row): the rounding the API bills by."""
    assert vision_tokens.tiles(2049, 513) == 8
    assert vision_tokens.tiles(2050, 513) == 4


# The same guide, patch models: 32 px patches, at most 1536, times the model's factor.
@pytest.mark.parametrize(
    ("width", "height", "expected_patches"),
    [
        (1024, 1024, 1024),  # documented: 32 x 32 patches
        (1800, 2400, 1452),  # documented: scaled to 1056x1408 -> 33 x 44
        (32, 32, 1),
        (33, 1, 2),
        (10_000, 10_000, 39 * 39),  # square: 39.2 patches a side, whole ones fit
    ],
)
def test_patch_counts_match_the_documented_examples(
    width: int, height: int, expected_patches: int
) -> None:
    assert vision_tokens.patches(width, height) == expected_patches


@pytest.mark.parametrize("size", [(1, 1), (500, 20_000), (4000, 1474), (20_000, 20_000)])
def test_patches_never_exceed_the_cap(size: tuple[int, int]) -> None:
    assert 1 <= vision_tokens.patches(*size) <= vision_tokens.MAX_PATCHES


@pytest.mark.parametrize(
    ("model", "factor"),
    [("gpt-4.1-mini", 1.62), ("gpt-4.1-nano", 2.46), ("o4-mini", 1.72), ("gpt-5-mini", 1.62)],
)
def test_patch_models_multiply_by_their_factor_whatever_the_detail(
    model: str, factor: float
) -> None:
    import math

    expected = math.ceil(1452 * factor)
    assert image_tokens(model, 1800, 2400, "high") == expected
    assert image_tokens(model, 1800, 2400, "low") == expected


@pytest.mark.parametrize("model", ["o1-mini", "o3-mini", "gpt-3.5-turbo", "some-local-model"])
def test_models_without_image_input_have_no_figure(model: str) -> None:
    assert image_rate(model) is None
    assert image_tokens(model, 512, 512) is None


@pytest.mark.parametrize("size", [(0, 10), (10, -1)])
def test_an_empty_image_is_an_error(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        image_tokens("gpt-4o", *size)
