"""What an image costs in prompt tokens on OpenAI's models, by the formulas OpenAI publishes.

Two families of formula (OpenAI's vision guide, "Calculating costs"):

* **Tiles** (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3...): a ``low`` detail image costs a fixed
  base; a ``high`` one is fitted into 2048x2048, its shorter side brought down to 768 (never up),
  and each 512 px tile covering it costs a per-tile figure on top of the base.
* **Patches** (gpt-4.1-mini/-nano, gpt-5-mini/-nano, o4-mini): the image is covered by 32 px
  patches, scaled down to fit within 1,536 of them, and the patch count is multiplied by the
  model's factor; detail does not change it.

``auto`` detail is counted as ``high``: the server picks, and a budget must assume the dearer.
A model that takes no images has no figure (None): the provider's capability rules refuse the
request before anything is sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moodlemate.providers.openai.models import family

__all__ = ["ImageRate", "image_rate", "image_tokens"]

PATCH = 32
MAX_PATCHES = 1536
TILE = 512
TILE_FIT = 2048
TILE_SHORT_SIDE = 768


@dataclass(frozen=True, slots=True)
class ImageRate:
    """How one model family prices an image: tiles (``base`` + ``per_tile``) or patches
    (``patch_factor`` per 32 px patch)."""

    base: int = 0
    per_tile: int = 0
    patch_factor: float | None = None


_TILES_4O = ImageRate(base=85, per_tile=170)
_TILES_O = ImageRate(base=75, per_tile=150)

_RATES: dict[str, ImageRate] = {
    "gpt-4o": _TILES_4O,
    "chatgpt-4o-latest": _TILES_4O,
    "gpt-4-turbo": _TILES_4O,
    "gpt-4.1": _TILES_4O,
    "gpt-4.5-preview": _TILES_4O,
    "gpt-4o-mini": ImageRate(base=2833, per_tile=5667),
    "o1": _TILES_O,
    "o1-pro": _TILES_O,
    "o3": _TILES_O,
    "o3-pro": _TILES_O,
    "gpt-5": ImageRate(base=70, per_tile=140),
    "gpt-5-chat-latest": ImageRate(base=70, per_tile=140),
    "computer-use-preview": ImageRate(base=65, per_tile=129),
    "gpt-4.1-mini": ImageRate(patch_factor=1.62),
    "gpt-4.1-nano": ImageRate(patch_factor=2.46),
    "gpt-5-mini": ImageRate(patch_factor=1.62),
    "gpt-5-nano": ImageRate(patch_factor=2.46),
    "o4-mini": ImageRate(patch_factor=1.72),
}


def image_rate(model: str) -> ImageRate | None:
    """The formula for ``model`` (snapshots and ``openai/`` ids included); None when OpenAI
    documents no image input for it (o1-mini, o3-mini, gpt-3.5...)."""
    return _RATES.get(family(model))


def image_tokens(model: str, width: int, height: int, detail: str = "auto") -> int | None:
    """Prompt tokens of one ``width`` x ``height`` image at ``detail`` (low, high or auto)."""
    rate = image_rate(model)
    if rate is None:
        return None
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if rate.patch_factor is not None:
        return math.ceil(patches(width, height) * rate.patch_factor)
    if detail == "low":
        return rate.base
    return rate.base + rate.per_tile * tiles(width, height)


def tiles(width: int, height: int) -> int:
    """512 px tiles covering the image once fitted into 2048x2048 and its short side at 768.

    Each resize lands on whole pixels, rounded to the nearest (half to even): the API bills a
    2049x513 image as two rows of tiles (513 x 2048/2049 = 512.75 -> 513) and a 2050x513 one as
    one row (512.5 -> 512)."""
    w, h = width, height
    if max(w, h) > TILE_FIT:
        scale = TILE_FIT / max(w, h)
        w, h = round(w * scale), round(h * scale)
    if min(w, h) > TILE_SHORT_SIDE:
        scale = TILE_SHORT_SIDE / min(w, h)
        w, h = round(w * scale), round(h * scale)
    return math.ceil(w / TILE) * math.ceil(h / TILE)


def patches(width: int, height: int) -> int:
    """32 px patches covering the image, scaled down (keeping its aspect) to at most 1,536."""
    raw = math.ceil(width / PATCH) * math.ceil(height / PATCH)
    if raw <= MAX_PATCHES:
        return raw
    shrink = math.sqrt(PATCH * PATCH * MAX_PATCHES / (width * height))
    # Shrink a little more so that whole patches fit along the binding side.
    shrink *= min(
        math.floor(width * shrink / PATCH) / (width * shrink / PATCH),
        math.floor(height * shrink / PATCH) / (height * shrink / PATCH),
    )
    fitted = math.ceil(width * shrink / PATCH) * math.ceil(height * shrink / PATCH)
    return min(fitted, MAX_PATCHES)
