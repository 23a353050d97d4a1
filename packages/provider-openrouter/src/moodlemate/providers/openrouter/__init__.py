"""OpenRouter provider for moodlemate-ai: hundreds of models behind one OpenAI-style API."""

from moodlemate.providers.openrouter.catalog import refresh_models
from moodlemate.providers.openrouter.provider import OpenRouterProvider

__all__ = ["OpenRouterProvider", "refresh_models"]
