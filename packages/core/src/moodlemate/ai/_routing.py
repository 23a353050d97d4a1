"""``provider:model`` strings: a model name that also picks the provider for that call.

Only a prefix that names a provider counts, so Ollama tags such as ``llama3:8b`` and
OpenRouter variants such as ``openai/gpt-4o:free`` pass through unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moodlemate.ai.errors import ProviderNotInstalledError, UnknownProviderError

if TYPE_CHECKING:
    from moodlemate.ai._plugins import PluginRegistry
    from moodlemate.ai._provider import Provider

__all__ = ["split_provider"]


def split_provider(model: str, plugins: PluginRegistry) -> tuple[Provider | None, str]:
    """``("openrouter:openai/gpt-4o")`` -> (the OpenRouter provider, ``"openai/gpt-4o"``);
    a model without a provider prefix -> (None, model). A prefix naming a provider whose
    package is missing raises ProviderNotInstalledError rather than sending the string on."""
    prefix, colon, rest = model.partition(":")
    if not colon or not rest or not prefix or "/" in prefix:
        return None, model
    try:
        return plugins.get(prefix), rest
    except ProviderNotInstalledError:
        raise
    except UnknownProviderError:
        # Installed but left out by MOODLEMATE_PLUGINS, or broken: still a provider's name.
        if prefix in plugins.excluded or prefix in plugins.failures:
            raise
        return None, model
