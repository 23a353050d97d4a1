"""Entry point of the ``moodlemate.ai`` plugin group: registers the Ollama provider."""

from __future__ import annotations

from collections.abc import Callable

from moodlemate.ai.plugin import Provider, hookimpl
from moodlemate.providers.ollama.provider import OllamaProvider


@hookimpl
def register_providers(register: Callable[[Provider], None]) -> None:
    register(OllamaProvider())
