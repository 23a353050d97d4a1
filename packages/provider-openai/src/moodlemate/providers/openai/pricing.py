"""The OpenAI price table, kept as data (prices.json) so a price change is a data change."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from importlib.resources import files
from typing import Any

from moodlemate.ai.pricing import ModelInfo, Price
from moodlemate.providers.openai.models import family

__all__ = ["PriceTable", "openai_prices"]


class PriceTable:
    """Model name -> ModelInfo; a dated snapshot falls back to its family unless listed itself."""

    def __init__(self, models: dict[str, ModelInfo]) -> None:
        self._models = models

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PriceTable:
        source, as_of = data.get("source"), data.get("as_of")
        models = {
            name: ModelInfo(
                name=name,
                price=Price(
                    input=Decimal(entry["input"]),
                    output=Decimal(entry["output"]),
                    cached_input=(
                        Decimal(entry["cached_input"])
                        if entry.get("cached_input") is not None
                        else None
                    ),
                ),
                context_window=entry.get("context_window"),
                max_output_tokens=entry.get("max_output_tokens"),
                max_input_tokens=entry.get("max_input_tokens"),
                source=entry.get("source", source),
                as_of=entry.get("as_of", as_of),
            )
            for name, entry in data["models"].items()
        }
        return cls(models)

    def get(self, model: str) -> ModelInfo | None:
        info = self._models.get(model)
        if info is None:
            info = self._models.get(model.rsplit("/", 1)[-1]) or self._models.get(family(model))
        return info

    def all(self) -> list[ModelInfo]:
        return sorted(self._models.values(), key=lambda info: info.name)


@cache
def openai_prices() -> PriceTable:
    text = files("moodlemate.providers.openai").joinpath("prices.json").read_text("utf-8")
    return PriceTable.from_json(json.loads(text))
