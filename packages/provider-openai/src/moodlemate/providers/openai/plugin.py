"""Entry point of the ``moodlemate.ai`` plugin group: registers the OpenAI provider.

Importing this module must stay cheap: the openai SDK and tiktoken load on first use.
"""

from __future__ import annotations

from collections.abc import Callable

from moodlemate.ai.plugin import Provider, hookimpl
from moodlemate.providers.openai.provider import OpenAIProvider


@hookimpl
def register_providers(register: Callable[[Provider], None]) -> None:
    register(OpenAIProvider())
