"""OpenAI provider for moodlemate-ai: the OpenAI API and any OpenAI-compatible server."""

from moodlemate.providers.openai.provider import OpenAIProvider

__all__ = ["OpenAIProvider"]
