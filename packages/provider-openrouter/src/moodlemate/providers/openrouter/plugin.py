"""Entry point of the ``moodlemate.ai`` plugin group: registers the OpenRouter provider.

Importing this module stays cheap: the openai SDK loads on the first call.
"""

from __future__ import annotations

from collections.abc import Callable

from moodlemate.ai.plugin import Provider, hookimpl
from moodlemate.providers.openrouter.provider import OpenRouterProvider


@hookimpl
def register_providers(register: Callable[[Provider], None]) -> None:
    register(OpenRouterProvider())
