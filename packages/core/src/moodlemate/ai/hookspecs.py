"""The pluggy contract between the core and provider plugins.

A plugin is a module (or object) with ``@hookimpl`` functions, found through the
``moodlemate.ai`` entry-point group or passed to :func:`moodlemate.ai.register`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from moodlemate.ai.provider import Provider

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "moodlemate.ai"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_providers(register: Callable[[Provider], None]) -> None:
    """Call ``register(provider)`` once for each provider this plugin offers."""
