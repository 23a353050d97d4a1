"""The OpenAI price table, kept as data (prices.json) so a price change is a data change.

Each model lists its text prices and, where its model page lists them, the prices of audio
tokens (``audio_input``, ``audio_output``) and image tokens (``image_input``); a price not
listed is unknown, and a reply with such tokens is priced as unknown, never at the text
price."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from functools import cache
from typing import Any

from moodlemate.ai.plugin import ModelInfo, Price
from moodlemate.providers.openai.models import family
from moodlemate.providers.openai.package_files import read_package_bytes

__all__ = ["PriceTable", "openai_prices"]


class PriceTable:
    """Model name -> ModelInfo; a dated snapshot falls back to its family unless listed itself."""

    def __init__(
        self,
        models: dict[str, ModelInfo],
        batch: dict[str, ModelInfo] | None = None,
        tiers: dict[str, dict[str, ModelInfo]] | None = None,
    ) -> None:
        self._models = models
        self._batch = batch or {}
        self._tiers = tiers or {}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PriceTable:
        source, as_of = data.get("source"), data.get("as_of")
        models = {
            name: ModelInfo(
                name=name,
                price=Price(
                    input=Decimal(entry["input"]),
                    output=Decimal(entry["output"]),
                    cached_input=_rate(entry.get("cached_input")),
                    audio_input=_rate(entry.get("audio_input")),
                    audio_output=_rate(entry.get("audio_output")),
                    image_input=_rate(entry.get("image_input")),
                ),
                context_window=entry.get("context_window"),
                max_output_tokens=entry.get("max_output_tokens"),
                max_input_tokens=entry.get("max_input_tokens"),
                source=entry.get("source", source),
                as_of=entry.get("as_of", as_of),
            )
            for name, entry in data["models"].items()
        }
        batch = _batch_prices(data.get("batch"), models)
        tiers = {
            "flex": _flex_prices(data.get("flex"), batch),
            "priority": _listed_prices(data.get("priority"), models),
        }
        return cls(models, batch, tiers)

    def get(self, model: str) -> ModelInfo | None:
        info = self._models.get(model)
        if info is None:
            info = self._models.get(model.rsplit("/", 1)[-1]) or self._models.get(family(model))
        return info

    def batch(self, model: str) -> ModelInfo | None:
        """The model at the Batch API's price (its ``source`` says where that is published);
        None when the table lists no batch price for it."""
        info = self.get(model)
        return None if info is None else self._batch.get(info.name)

    def tier(self, model: str, tier: str) -> ModelInfo | None:
        """The model at a service tier's price (``flex``, ``priority``; ``default`` is the
        standard price); None when the table lists no price for it at that tier."""
        info = self.get(model)
        if info is None or tier == "default":
            return info
        return self._tiers.get(tier, {}).get(info.name)

    def all(self) -> list[ModelInfo]:
        return sorted(self._models.values(), key=lambda info: info.name)


def _rate(value: Any) -> Decimal | None:
    """A per-1M price as listed; None (null or absent) means none is listed."""
    return None if value is None else Decimal(value)


def _batch_prices(section: Any, models: dict[str, ModelInfo]) -> dict[str, ModelInfo]:
    """The ``batch`` section: standard prices times its ``discount``, for the models it lists."""
    if not isinstance(section, dict):
        return {}
    factor = Decimal(section["discount"])
    batch: dict[str, ModelInfo] = {}
    for name in section["models"]:
        info = models[name]
        if info.price is None:
            continue
        batch[name] = replace(
            info,
            price=info.price.scaled(factor),
            source=section["source"],
            as_of=section.get("as_of", info.as_of),
        )
    return batch


def _flex_prices(section: Any, batch: dict[str, ModelInfo]) -> dict[str, ModelInfo]:
    """The ``flex`` section: its models at their batch price (as OpenAI bills flex)."""
    if not isinstance(section, dict):
        return {}
    return {
        name: replace(batch[name], source=section["source"], as_of=section.get("as_of"))
        for name in section["models"]
        if name in batch
    }


def _listed_prices(section: Any, models: dict[str, ModelInfo]) -> dict[str, ModelInfo]:
    """A tier section that lists its own per-model prices (``priority``)."""
    if not isinstance(section, dict):
        return {}
    return {
        name: replace(
            models[name],
            price=Price(
                input=Decimal(entry["input"]),
                output=Decimal(entry["output"]),
                cached_input=Decimal(entry["cached_input"]),
            ),
            source=section["source"],
            as_of=section.get("as_of"),
        )
        for name, entry in section["models"].items()
    }


@cache
def openai_prices() -> PriceTable:
    text = read_package_bytes("prices.json").decode("utf-8")
    return PriceTable.from_json(json.loads(text))
