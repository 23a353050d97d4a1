"""Import paths that moved keep working for at least one minor version, with a warning.

The deprecation rule: a public name that moves stays importable from its old place, and
importing it from there raises a ``DeprecationWarning`` naming the new place. Core's modules
became private (``moodlemate.ai.retry`` -> ``moodlemate.ai._retry``) and the test server moved
to moodlemate-ai-testing; the old module names resolve here, through a finder at the end of
``sys.meta_path``, to a stand-in module that forwards every attribute to the new module. So
classes keep their identity (``moodlemate.ai.retry.RetryPolicy is moodlemate.ai.RetryPolicy``)
and no file per old name clutters the package. Removal: not before 0.3.0.
"""

from __future__ import annotations

import sys
from importlib import import_module

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

REMOVED_IN = "0.3.0"

_CORE_RENAMED = (
    "bounds",
    "budget",
    "call",
    "call_hooks",
    "call_types",
    "completion_json",
    "config",
    "config_file",
    "context_window",
    "conversation",
    "credentials",
    "defaults",
    "endpoint_host",
    "fallback_streams",
    "fallbacks",
    "gpt",
    "hookspecs",
    "ledger",
    "plausible",
    "plugins",
    "pricing",
    "provider",
    "remote_batches",
    "replies",
    "retry",
    "routing",
    "secrets",
    "shared_budget",
    "spend_log",
    "streaming",
    "token_count",
    "token_framing",
    "urls",
    "usage",
    "validation",
)

MOVED: dict[str, str] = {
    **{f"moodlemate.ai.{name}": f"moodlemate.ai._{name}" for name in _CORE_RENAMED},
    "moodlemate.ai.pytest_plugin": "moodlemate.testing.pytest_plugin",
    "moodlemate.ai.testing_batches": "moodlemate.testing._batches",
}
"""Old module name -> the module that holds its code now."""

_PUBLIC_FACES = ("moodlemate.ai", "moodlemate.ai.plugin", "moodlemate.testing")


def new_place(old: str) -> str:
    """Where the old module's names are to be imported from now, for the warning."""
    target = MOVED[old]
    if not target.rpartition(".")[2].startswith("_"):
        return f"import {target} instead"
    module = import_module(target)
    homes: dict[str, list[str]] = {}
    for face_name in _PUBLIC_FACES:
        try:
            face = import_module(face_name)
        except ImportError:  # moodlemate-ai-testing is optional
            continue
        for name in getattr(face, "__all__", ()):
            value = getattr(module, name, None)
            defined_there = getattr(value, "__module__", None) == target
            if defined_there and not any(name in names for names in homes.values()):
                homes.setdefault(face_name, []).append(name)
    if not homes:
        return f"it has no public names; its code is now the private {target}"
    return "; ".join(f"import {', '.join(names)} from {face}" for face, names in homes.items())


class _Loader:
    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        from types import ModuleType

        return ModuleType(self.old, f"Deprecated: moved to {MOVED[self.old]}.")

    def exec_module(self, module: ModuleType) -> None:
        import warnings

        target = import_module(MOVED[self.old])
        warnings.warn(
            f"{self.old} is deprecated and will be removed in {REMOVED_IN}: {new_place(self.old)}",
            DeprecationWarning,
            stacklevel=2,  # warnings skips importlib's frames: the import statement's line
        )

        def forward(name: str) -> Any:
            return getattr(target, name)

        def names() -> list[str]:
            return dir(target)

        module.__getattr__ = forward  # type: ignore[method-assign]
        module.__dir__ = names  # type: ignore[method-assign]
        module.__all__ = list(getattr(target, "__all__", ()))  # type: ignore[attr-defined]


class MovedModuleFinder:
    """Finds only the old names in :data:`MOVED`; every other import passes it by."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in MOVED:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(fullname, _Loader(fullname))  # type: ignore[arg-type]


def install() -> None:
    """Put the finder at the end of ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
