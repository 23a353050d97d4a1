"""Provider discovery: entry points and in-code registration, loaded lazily and once.

Loading is deferred to the first call that needs a provider, so ``import moodlemate.ai``
stays cheap. Each entry point is imported on its own: a broken plugin is reported by name
and package, and the other providers keep working.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moodlemate.ai.errors import ProviderNotInstalledError, UnknownProviderError

if TYPE_CHECKING:
    import pluggy
    from moodlemate.ai.provider import Provider

__all__ = ["ENTRY_POINT_GROUP", "PLUGINS_ENV", "PluginRegistry", "ProviderEntry", "registry"]

ENTRY_POINT_GROUP = "moodlemate.ai"
PLUGINS_ENV = "MOODLEMATE_PLUGINS"
"""Comma-separated entry-point names to load; unset loads all, empty string loads none."""

# Extras of the core distribution, so "not installed" errors can say what to pip install.
_EXTRAS = {"openai": "openai", "openrouter": "openrouter"}

log = logging.getLogger("moodlemate.ai")


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    provider: Provider
    plugin: str
    package: str | None
    version: str | None


class PluginRegistry:
    """Holds the pluggy manager and the providers plugins registered."""

    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self._group = group
        self._lock = threading.RLock()
        self._pm: pluggy.PluginManager | None = None
        self._entries: dict[str, ProviderEntry] = {}
        self._failures: dict[str, str] = {}

    # -- loading -------------------------------------------------------------------------

    def _manager(self) -> pluggy.PluginManager:
        pm = self._pm
        if pm is not None:
            return pm
        with self._lock:
            if self._pm is None:
                self._pm = self._load()
            return self._pm

    def _load(self) -> pluggy.PluginManager:
        # importlib.metadata costs ~25 ms (it pulls in email, zipfile, csv): GPT() must not pay it.
        from importlib.metadata import entry_points

        import pluggy
        from moodlemate.ai import hookspecs

        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        allowed = _allowed_plugins()
        for ep in entry_points(group=self._group):
            if allowed is not None and ep.name not in allowed:
                continue
            package = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self._report(ep.name, package, f"failed to import ({type(exc).__name__}: {exc})")
                continue
            self._add(pm, plugin, ep.name, package, version)
        return pm

    def _add(
        self,
        pm: pluggy.PluginManager,
        plugin: Any,
        name: str,
        package: str | None,
        version: str | None,
    ) -> None:
        try:
            pm.register(plugin, name=name)
            pm.check_pending()
        except Exception as exc:
            if pm.is_registered(plugin):
                pm.unregister(plugin)
            self._report(name, package, f"does not fit the hook specification ({exc})")
            return
        collected: list[Provider] = []
        try:
            impls = [
                impl for impl in pm.hook.register_providers.get_hookimpls() if impl.plugin is plugin
            ]
            for impl in impls:
                impl.function(register=collected.append)
        except Exception as exc:
            self._report(name, package, f"raised while registering ({type(exc).__name__}: {exc})")
            return
        for provider in collected:
            self._accept(provider, name, package, version)

    def _accept(
        self, provider: Provider, plugin: str, package: str | None, version: str | None
    ) -> None:
        from moodlemate.ai.provider import Provider

        where = f"plugin {plugin!r}" + (f" from package {package!r}" if package else "")
        if not isinstance(provider, Provider):
            self._report(plugin, package, f"registered {provider!r}, which is not a Provider")
            return
        missing = [a for a in ("name", "default_endpoint") if not getattr(provider, a, None)]
        if missing:
            self._report(plugin, package, f"registered a provider without {', '.join(missing)}")
            return
        existing = self._entries.get(provider.name)
        if existing is not None and existing.provider is not provider:
            self._report(
                plugin,
                package,
                f"registers provider {provider.name!r}, already registered by "
                f"plugin {existing.plugin!r}; keeping the first",
            )
            return
        log.debug("provider %r registered by %s", provider.name, where)
        self._entries[provider.name] = ProviderEntry(provider, plugin, package, version)

    def _report(self, plugin: str, package: str | None, problem: str) -> None:
        where = f"moodlemate.ai plugin {plugin!r}" + (f" (package {package!r})" if package else "")
        message = f"{where} {problem}"
        self._failures[plugin] = message
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        log.warning("%s", message)

    # -- public --------------------------------------------------------------------------

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin module or object defined in code (scripts, notebooks, tests)."""
        pm = self._manager()
        with self._lock:
            label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
            self._add(pm, plugin, label, None, None)

    def register_provider(self, provider: Provider) -> None:
        """Register one provider object directly, without writing a hook implementation."""
        self._manager()
        with self._lock:
            self._accept(provider, provider.name, None, None)

    def unregister_provider(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def entries(self) -> dict[str, ProviderEntry]:
        self._manager()
        return dict(self._entries)

    def names(self) -> list[str]:
        return sorted(self.entries())

    @property
    def failures(self) -> dict[str, str]:
        """Plugins that failed to load, with the reason (also warned and logged)."""
        self._manager()
        return dict(self._failures)

    def get(self, name: str) -> Provider:
        self._manager()
        entry = self._entries.get(name)
        if entry is not None:
            return entry.provider
        installed = ", ".join(self.names()) or "none"
        extra = _EXTRAS.get(name)
        if extra is not None:
            raise ProviderNotInstalledError(
                f"provider {name!r} is not installed: pip install 'moodlemate-ai[{extra}]' "
                f"(installed providers: {installed})"
            )
        raise UnknownProviderError(f"unknown provider {name!r} (installed providers: {installed})")

    def for_endpoint(self, endpoint: str) -> Provider | None:
        """The provider whose own service ``endpoint`` is, if any."""
        for entry in self.entries().values():
            if entry.provider.recognises(endpoint):
                return entry.provider
        return None

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        return self._manager()

    def reload(self) -> None:
        """Forget everything and rediscover on next use (after installing a plugin at run time)."""
        with self._lock:
            self._pm = None
            self._entries = {}
            self._failures = {}


def _allowed_plugins() -> set[str] | None:
    value = os.environ.get(PLUGINS_ENV)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


registry = PluginRegistry()
"""The process-wide registry every GPT instance uses unless given another."""
