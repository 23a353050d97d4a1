"""Ollama provider for moodlemate-ai: a local OpenAI-compatible server, no key, no charge."""

from moodlemate.providers.ollama.provider import OllamaProvider

__all__ = ["OllamaProvider"]
