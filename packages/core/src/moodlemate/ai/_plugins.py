"""Provider discovery: entry points and in-code registration, loaded lazily and once.

Loading is deferred to the first call that needs a provider, so ``import moodlemate.ai``
stays cheap. Each entry point is imported on its own: a broken plugin (import error, hook
that does not match the spec, provider that misses part of the contract, name already
taken) is reported by name and package with a RuntimeWarning and a log record, and the
other providers keep working. Plugins registered in code are the caller's explicit request,
so the same problems raise :class:`~moodlemate.ai.errors.PluginError` there instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moodlemate.ai._urls import normalize_endpoint
from moodlemate.ai.errors import (
    InvalidEndpointError,
    PluginError,
    ProviderNotInstalledError,
    UnknownProviderError,
)

if TYPE_CHECKING:
    import pluggy
    from moodlemate.ai._call_hooks import CallHooks
    from moodlemate.ai._provider import Provider
    from moodlemate.ai._tools import Tool

__all__ = ["ENTRY_POINT_GROUP", "PLUGINS_ENV", "PluginRegistry", "ProviderEntry", "registry"]

ENTRY_POINT_GROUP = "moodlemate.ai"
PLUGINS_ENV = "MOODLEMATE_PLUGINS"
"""Comma-separated entry-point names to load; unset loads all, empty string loads none."""

# Extras of the core distribution, so "not installed" errors can say what to pip install:
# the PyPI extra, and the folder of a clone of the repository, where the packages live today.
_EXTRAS = {"openai": "openai", "openrouter": "openrouter"}
_CLONE_FOLDERS = {
    "openai": "./packages/provider-openai",
    "openrouter": "./packages/provider-openai ./packages/provider-openrouter",
}


def install_hint(extra: str) -> str:
    """How to install a provider of the core's extras, from a clone and from PyPI."""
    return (
        f"from a clone of the repository: pip install {_CLONE_FOLDERS[extra]}; "
        f"once published on PyPI: pip install 'moodlemate-ai[{extra}]'"
    )


_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

log = logging.getLogger("moodlemate.ai")


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    """A registered provider and where it came from (``package`` is None when from code)."""

    provider: Provider
    plugin: str
    package: str | None
    version: str | None
    from_code: bool = False

    def describe(self) -> str:
        where = "registered in code" if self.from_code else f"package {self.package!r}"
        return f"plugin {self.plugin!r} ({where})"


class PluginRegistry:
    """Holds the pluggy manager and the providers plugins registered."""

    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self._group = group
        self._lock = threading.RLock()
        self._pm: pluggy.PluginManager | None = None
        self._ready = False
        self._entries: dict[str, ProviderEntry] = {}
        # endpoint -> its owning provider: every call asks, and recognising parses URLs.
        self._owners: dict[str, Provider | None] = {}
        self._failures: dict[str, str] = {}
        self._excluded: set[str] = set()
        # Kept across reload(): what scripts registered in code, in order.
        self._code_plugins: dict[str, Any] = {}
        self._code_providers: dict[str, Provider] = {}
        self._hooks: CallHooks | None = None
        self._hooks_known = False
        self._rescan = False

    # -- loading -------------------------------------------------------------------------

    def _manager(self) -> pluggy.PluginManager:
        pm = self._pm
        if self._ready and pm is not None:
            return pm
        with self._lock:
            if self._pm is None:
                # Published before loading, so a plugin that registers itself in code while
                # being imported re-enters here (same thread, RLock) instead of recursing.
                self._pm = self._new_manager()
                try:
                    self._load(self._pm)
                finally:
                    self._ready = True
            return self._pm

    def _new_manager(self) -> pluggy.PluginManager:
        import pluggy
        from moodlemate.ai import _hookspecs as hookspecs

        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        return pm

    def _load(self, pm: pluggy.PluginManager) -> None:
        # Scanning the installed distributions costs tens of ms: GPT() must not pay it, and
        # a process whose installed set did not change reads the last scan from the cache.
        from moodlemate.ai._entry_points import discover, load

        allowed = _allowed_plugins()
        seen: set[str] = set()
        fresh, self._rescan = self._rescan, False
        for ep in discover(self._group, fresh=fresh):
            seen.add(ep.name)
            if allowed is not None and ep.name not in allowed:
                self._excluded.add(ep.name)
                continue
            package, version = ep.package, ep.version
            if pm.has_plugin(ep.name):
                owner = next((e for e in self._entries.values() if e.plugin == ep.name), None)
                problem = "is a name another installed package already uses" + (
                    f" ({owner.package!r})" if owner and owner.package else ""
                )
                self._report(ep.name, package, f"{problem}; it was not loaded", strict=False)
                continue
            try:
                plugin = load(ep)
            except Exception as exc:  # a broken plugin must not take the others down
                problem = f"failed to import {ep.value!r} ({type(exc).__name__}: {exc})"
                self._report(ep.name, package, problem, strict=False)
                continue
            self._add(pm, plugin, ep.name, package, version, from_code=False, strict=False)
        for name in sorted((allowed or set()) - seen):
            self._warn(
                name,
                f"{PLUGINS_ENV} names plugin {name!r}, which no installed package provides "
                f"(installed: {', '.join(sorted(seen)) or 'none'})",
            )
        for label, plugin in self._code_plugins.items():
            self._add(pm, plugin, label, None, None, from_code=True, strict=False)
        for label, provider in self._code_providers.items():
            self._add_providers(
                pm, None, [provider], label, None, None, from_code=True, strict=False
            )

    def _add(
        self,
        pm: pluggy.PluginManager,
        plugin: Any,
        name: str,
        package: str | None,
        version: str | None,
        *,
        from_code: bool,
        strict: bool,
    ) -> bool:
        from pluggy import PluginValidationError

        try:
            pm.register(plugin, name=name)
            pm.check_pending()
        except Exception as exc:
            if pm.is_registered(plugin):
                pm.unregister(plugin)
            reason = "; ".join(line for line in str(exc).splitlines() if line.strip())
            if isinstance(exc, PluginValidationError):
                problem = f"does not match the moodlemate.ai hook specification ({reason})"
            else:  # e.g. the same module registered twice under two names
                problem = f"could not be registered ({type(exc).__name__}: {reason})"
            self._report(name, package, problem, strict=strict)
            return False
        collected: list[Provider] = []
        try:
            for impl in pm.hook.register_providers.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=collected.append)
        except Exception as exc:
            pm.unregister(plugin)
            problem = f"raised while registering providers ({type(exc).__name__}: {exc})"
            self._report(name, package, problem, strict=strict)
            return False
        return self._add_providers(
            pm, plugin, collected, name, package, version, from_code=from_code, strict=strict
        )

    def _add_providers(
        self,
        pm: pluggy.PluginManager,
        plugin: Any,
        providers: list[Provider],
        name: str,
        package: str | None,
        version: str | None,
        *,
        from_code: bool,
        strict: bool,
    ) -> bool:
        """All or nothing: one bad provider rejects the whole plugin, so it is never half on."""
        claimed: set[str] = set()
        for provider in providers:
            problem = self._contract_problem(provider, name, from_code, claimed)
            if problem is not None:
                if plugin is not None and pm.is_registered(plugin):
                    pm.unregister(plugin)
                self._report(name, package, problem, strict=strict)
                return False
            claimed.add(provider.name)
        for provider in providers:
            entry = ProviderEntry(provider, name, package, version, from_code)
            existing = self._entries.get(provider.name)
            if existing is not None and not existing.from_code and existing.plugin != name:
                self._evict(pm, existing, entry)
            self._entries[provider.name] = entry
            self._owners.clear()
            log.debug("provider %r registered by plugin %r", provider.name, name)
        return True

    def _evict(self, pm: pluggy.PluginManager, loser: ProviderEntry, owner: ProviderEntry) -> None:
        """Unload a plugin that took a provider name belonging to a plugin loaded after it."""
        self._entries = {n: e for n, e in self._entries.items() if e.plugin != loser.plugin}
        self._owners.clear()
        if pm.has_plugin(loser.plugin):
            pm.unregister(name=loser.plugin)
        problem = (
            f"registers provider {owner.provider.name!r}, a name that belongs to "
            f"{owner.describe()}; it was not loaded"
        )
        self._report(loser.plugin, loser.package, problem, strict=False)

    def _contract_problem(
        self, provider: Provider, plugin: str, from_code: bool, claimed: set[str]
    ) -> str | None:
        from moodlemate.ai._provider import Provider

        if not isinstance(provider, Provider):
            return f"registered {provider!r}, which is not a moodlemate.ai.plugin.Provider"
        kind = type(provider).__name__
        name = getattr(provider, "name", None)
        if not isinstance(name, str) or not _PROVIDER_NAME.fullmatch(name):
            return (
                f"registered {kind} with name {name!r}: a provider needs a `name` such as "
                "'ollama' (letters, digits, '.', '_', '-')"
            )
        try:
            normalize_endpoint(getattr(provider, "default_endpoint", None))
        except InvalidEndpointError as exc:
            return f"registered provider {name!r} without a valid `default_endpoint` ({exc})"
        if name in claimed:
            return f"registers provider {name!r} twice"
        existing = self._entries.get(name)
        if existing is None or existing.provider is provider:
            return None
        if from_code and existing.from_code:
            return None  # a notebook cell run again replaces its own earlier registration
        if not from_code and not existing.from_code and name == plugin != existing.plugin:
            return None  # the plugin named like the provider owns the name, whatever the order
        return f"registers provider {name!r}, a name already taken by {existing.describe()}"

    def _report(self, plugin: str, package: str | None, problem: str, *, strict: bool) -> None:
        where = f"moodlemate.ai plugin {plugin!r}" + (
            f" (package {package!r})" if package else " (registered in code)"
        )
        message = f"{where} {problem}"
        if strict:
            raise PluginError(message)
        self._warn(plugin, message)

    def _warn(self, plugin: str, message: str) -> None:
        self._failures[plugin] = message
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        log.warning("%s", message)

    # -- public --------------------------------------------------------------------------

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin module or object defined in code (scripts, notebooks, tests).

        Registering under the same name again replaces the earlier in-code plugin, so a
        notebook cell can be re-run. Raises PluginError when the plugin breaks the contract
        or takes a name an installed plugin already has.
        """
        label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        pm = self._manager()
        with self._lock:
            if label in self._code_plugins:
                self._drop(pm, label)
            elif pm.has_plugin(label):
                entry_point = next((e for e in self._entries.values() if e.plugin == label), None)
                owner = entry_point.describe() if entry_point else f"plugin {label!r}"
                raise PluginError(
                    f"cannot register plugin {label!r}: {owner} is already loaded under that "
                    "name; pass another name"
                )
            self._code_plugins[label] = plugin
            self._hooks_known = False
            try:
                self._add(pm, plugin, label, None, None, from_code=True, strict=True)
            except PluginError:
                del self._code_plugins[label]
                raise

    def unregister(self, name: str) -> bool:
        """Remove the plugin registered in code under ``name``; False when there is none."""
        pm = self._manager()
        with self._lock:
            if name not in self._code_plugins:
                return False
            self._drop(pm, name)
            self._hooks_known = False
            return True

    def register_provider(self, provider: Provider) -> None:
        """Register one provider object directly, without writing a hook implementation.

        Registering a provider of the same name again replaces the earlier one; a name an
        installed plugin already has raises PluginError.
        """
        pm = self._manager()
        with self._lock:
            name = getattr(provider, "name", None)
            label = name if isinstance(name, str) else type(provider).__name__
            self._code_providers[label] = provider
            try:
                self._add_providers(
                    pm, None, [provider], label, None, None, from_code=True, strict=True
                )
            except PluginError:
                del self._code_providers[label]
                raise

    def unregister_provider(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)
            self._code_providers.pop(name, None)
            self._owners.clear()

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

    @property
    def excluded(self) -> set[str]:
        """Installed entry points that ``MOODLEMATE_PLUGINS`` left out."""
        self._manager()
        return set(self._excluded)

    def get(self, name: str) -> Provider:
        self._manager()
        entry = self._entries.get(name)
        if entry is not None:
            return entry.provider
        installed = ", ".join(self.names()) or "none"
        if name in self._excluded:
            raise UnknownProviderError(
                f"provider {name!r} is installed but not loaded: "
                f"{PLUGINS_ENV}={os.environ.get(PLUGINS_ENV, '')!r} leaves it out "
                f"(loaded providers: {installed})"
            )
        if name in self._failures:
            raise UnknownProviderError(f"provider {name!r} is unavailable: {self._failures[name]}")
        extra = _EXTRAS.get(name)
        if extra is not None:
            raise ProviderNotInstalledError(
                f"provider {name!r} is not installed ({install_hint(extra)}; "
                f"installed providers: {installed})"
            )
        from difflib import get_close_matches

        close = get_close_matches(name, [*self.names(), *_EXTRAS], n=1, cutoff=0.75)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownProviderError(
            f"unknown provider {name!r} ({hint}installed providers: {installed})"
        )

    def for_endpoint(self, endpoint: str) -> Provider | None:
        """The provider whose own service ``endpoint`` is, if any (memoized per endpoint)."""
        self._manager()
        try:
            return self._owners[endpoint]
        except KeyError:
            pass
        with self._lock:
            owner = next(
                (e.provider for e in self._entries.values() if e.provider.recognises(endpoint)),
                None,
            )
            self._owners[endpoint] = owner
        return owner

    def call_hooks(self) -> CallHooks | None:
        """The before/after-call hooks, or None when no plugin implements them (checked once)."""
        if self._hooks_known:
            return self._hooks
        pm = self._manager()
        with self._lock:
            from moodlemate.ai._call_hooks import CallHooks

            self._hooks = CallHooks.of(pm)
            self._hooks_known = True
            return self._hooks

    def tools(self) -> dict[str, Tool]:
        """The tools the plugins register (``register_tools``), by name, as :class:`Tool`
        values; two with one name are refused (ValidationError)."""
        from moodlemate.ai._tools import tool_set

        offered: list[object] = []
        for result in self._manager().hook.register_tools():
            if result is None:
                continue
            offered.extend([result] if callable(result) else result)
        return tool_set(offered)

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        return self._manager()

    def reload(self) -> None:
        """Rediscover entry points on next use (after installing a plugin at run time).

        Plugins and providers registered in code are registered again after the entry points.
        """
        with self._lock:
            importlib.invalidate_caches()
            self._rescan = True  # what was installed a moment ago may share a folder's mtime
            self._pm = None
            self._ready = False
            self._entries = {}
            self._owners.clear()
            self._failures = {}
            self._excluded = set()
            self._hooks_known = False

    def _drop(self, pm: pluggy.PluginManager, label: str) -> None:
        plugin = self._code_plugins.pop(label)
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        self._entries = {n: e for n, e in self._entries.items() if e.plugin != label}
        self._owners.clear()


def _allowed_plugins() -> set[str] | None:
    value = os.environ.get(PLUGINS_ENV)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


registry = PluginRegistry()
"""The process-wide registry every GPT instance uses unless given another."""
