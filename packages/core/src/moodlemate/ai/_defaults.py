"""What a call uses when nothing is configured, declared once.

The default provider and model are the documented ones (``GPT()`` talks to OpenAI's
``gpt-4o-mini``); everything else about a vendor lives in its provider package.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MODEL", "DEFAULT_PROVIDER", "DEFAULT_SYSTEM_MESSAGE"]

DEFAULT_PROVIDER = "openai"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_SYSTEM_MESSAGE = "You are a helpful assistant."
