"""The layout rules of issue "one plugin contract": no import cycles in core or in a provider
package, and provider packages reach core only through its contract module,
``moodlemate.ai.plugin``.

Imports are read from the source (every ``import`` statement, at module level, in functions
and under ``TYPE_CHECKING`` alike), so a cycle hidden in a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "packages/core/src"
PROVIDERS = {
    "openai": ROOT / "packages/provider-openai/src",
    "openrouter": ROOT / "packages/provider-openrouter/src",
    "ollama": ROOT / "examples/provider-ollama/src",
}
CONTRACT = "moodlemate.ai.plugin"


def _modules(src: Path) -> dict[str, Path]:
    found = {}
    for path in src.rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path] | None = None) -> set[str]:
    """Every module ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``, and as
    ``pkg`` only when some name it takes is not a submodule of ``known``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            subs = {f"{base}.{alias.name}" for alias in node.names}
            out.update(subs)
            if known is None or any(sub not in known for sub in subs):
                out.add(base)
    return out


def _core_graph() -> dict[str, set[str]]:
    return _graph(CORE)


def _graph(src: Path) -> dict[str, set[str]]:
    """Which module of ``src`` imports which other module of ``src``."""
    modules = _modules(src)
    return {
        name: {m for m in _imports(name, path, modules) if m in modules and m != name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_core_has_no_import_cycles() -> None:
    graph = _core_graph()
    assert len(graph) > 40  # the walk found the package (a wrong path would pass vacuously)
    assert _cycles(graph) == []


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_provider_package_has_no_import_cycles(provider: str) -> None:
    graph = _graph(PROVIDERS[provider])
    assert len(graph) > 2, f"no modules found for {provider}"
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_provider_package_imports_only_the_contract_module_of_core(provider: str) -> None:
    modules = _modules(PROVIDERS[provider])
    assert modules, f"no modules found for {provider}"
    reached = {
        (name, imported)
        for name, path in modules.items()
        for imported in _imports(name, path)
        if imported.startswith("moodlemate.ai")
    }
    assert any(imported == CONTRACT for _, imported in reached)
    strays = sorted(
        (name, imported)
        for name, imported in reached
        if imported not in (CONTRACT, "moodlemate.ai") and not imported.startswith(CONTRACT + ".")
    )
    # ``from moodlemate.ai.plugin import X`` also yields "moodlemate.ai.plugin.X" and
    # "moodlemate.ai"; anything else is a reach past the contract.
    assert strays == [], strays


def test_the_contract_module_exports_what_it_promises() -> None:
    import moodlemate.ai.plugin as contract

    missing = [name for name in contract.__all__ if not hasattr(contract, name)]
    assert missing == []
    for name in ("Provider", "Connection", "ChatRequest", "Completion", "hookimpl"):
        assert name in contract.__all__
    # The plugin-facing methods are named apart from the facade's complete/stream.
    assert {"execute", "aexecute", "open_stream", "aopen_stream"} <= set(vars(contract.Provider))


def test_a_provider_written_against_the_old_method_names_fails_loudly() -> None:
    from moodlemate.ai.plugin import Provider

    with pytest.raises(TypeError, match="now 'execute'"):

        class Old(Provider):
            name = "old"
            default_endpoint = "http://127.0.0.1:9/v1"

            def complete(self, connection: object, request: object) -> object:
                raise NotImplementedError

            def count_tokens(self, text: str, model: str) -> int:
                return 0
