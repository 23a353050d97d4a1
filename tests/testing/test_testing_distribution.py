"""The test server is its own distribution, moodlemate-ai-testing (``moodlemate.testing``).

Core keeps ``moodlemate.ai.testing`` as a re-export, and where the distribution is missing
(a real interpreter with the core on its path and nothing of the testing package) that
import, ``serve`` and ``demo`` say what to install instead of failing with a traceback.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTING_SRC = REPO / "packages/testing/src"
CORE_SRC = REPO / "packages/core/src"
HINT = 'pip install "moodlemate-ai[testing]"'


@pytest.fixture(scope="module")
def core_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding the core and the third-party libraries, but not moodlemate-ai-testing.

    Its ``.pth`` puts the core's source and this environment's site-packages on the path; the
    editable installs of the workspace packages are ``.pth`` files of that site-packages, which
    Python does not read from a directory reached that way, so they stay out.
    """
    venv = tmp_path_factory.mktemp("core-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_path("purelib")
    (Path(site) / "core_only.pth").write_text(f"{CORE_SRC}\n{ours}\n", encoding="utf-8")
    probe = "import importlib.util as u, moodlemate.ai; print(u.find_spec('moodlemate.testing'))"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"  # the core imports; the testing package is absent
    return python


def run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )


def test_without_the_distribution_the_import_names_what_to_install(core_only: Path) -> None:
    result = run(core_only, "-c", "import moodlemate.ai.testing")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: the test server is the moodlemate-ai-testing")
    assert HINT in last
    folders = re.search(r"from a clone of the repository: pip install ([^)]+)\)", last)
    assert folders is not None, last
    for folder in folders.group(1).split():
        assert (REPO / folder / "pyproject.toml").is_file(), folder
    assert "ModuleNotFoundError" not in result.stderr  # the hint replaces it, not chained
    # ... and the rest of the core does not care.
    ok = run(core_only, "-c", "from moodlemate.ai import GPT, RetryPolicy; RetryPolicy()")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_without_the_distribution_serve_and_demo_exit_2_with_the_hint(
    core_only: Path, command: str
) -> None:
    result = run(core_only, "-m", "moodlemate.ai", command)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(f"moodlemate-ai {command}: error: the test server is")
    assert HINT in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_testing_package_is_not_reported_as_missing(
    core_only: Path, tmp_path: Path
) -> None:
    """Only the distribution's absence becomes the hint; a failure inside it shows as itself."""
    package = tmp_path / "moodlemate" / "testing"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import moodlemate_missing_dependency\n")
    on_path = f"import sys; sys.path.insert(0, {str(tmp_path)!r})"
    result = run(core_only, "-c", f"{on_path}; import moodlemate.ai.testing")
    assert result.returncode == 1
    assert "No module named 'moodlemate_missing_dependency'" in result.stderr
    assert HINT not in result.stderr
    serve = f"{on_path}; from moodlemate.ai.cli import main; raise SystemExit(main(['serve']))"
    result = run(core_only, "-c", serve)
    assert "No module named 'moodlemate_missing_dependency'" in result.stderr
    assert HINT not in result.stderr


def test_the_re_export_is_the_distributions_own_objects() -> None:
    """The core's old name keeps what earlier versions exported; names added since (such as
    RateLimit) live only in moodlemate.testing."""
    import moodlemate.ai.testing as compat
    import moodlemate.testing as testing

    assert {"DEFAULT_MODELS", "Fault", "LoopbackServer", "RecordedRequest", "Reply"} <= set(
        compat.__all__
    )
    assert set(compat.__all__) <= set(testing.__all__)
    for name in compat.__all__:
        assert getattr(compat, name) is getattr(testing, name), name
    assert testing.LoopbackServer.__module__ == "moodlemate.testing._server"


def test_lazy_table_and_type_checking_imports_agree() -> None:
    import moodlemate.testing as testing

    tree = ast.parse(Path(testing.__file__).read_text(encoding="utf-8"))
    typed = {
        alias.asname: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moodlemate")
        for alias in node.names
        if alias.asname == alias.name  # the explicit re-export form
    }
    assert typed == testing._LAZY
    assert testing.__all__ == sorted(testing._LAZY)
    for name, module in testing._LAZY.items():
        assert getattr(testing, name) is getattr(importlib.import_module(module), name), name


def test_importing_the_package_loads_no_server_and_no_provider() -> None:
    code = (
        "import sys, moodlemate.testing, moodlemate.testing.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.startswith(('moodlemate', 'openai'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(out.stdout))
    assert "moodlemate.testing" in loaded
    assert not {"moodlemate.testing._server", "moodlemate.testing._batches"} & loaded
    assert not {m for m in loaded if m.startswith(("moodlemate.providers", "openai"))}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_the_server_takes_openai_knowledge_only_from_the_provider_rules_modules() -> None:
    """The package reaches the core through its public face and the OpenAI provider only
    through the modules that hold its rules (the model rules, the strict-schema rules): no
    second copy of them to drift."""
    modules = sorted((TESTING_SRC / "moodlemate" / "testing").glob("*.py"))
    assert len(modules) == 8
    reached = {name for path in modules for name in _imports(path)}
    ours = {name for name in reached if name.startswith("moodlemate")}
    assert {n for n in ours if n.startswith("moodlemate.ai")} <= {"moodlemate.ai"}
    assert {n for n in ours if n.startswith("moodlemate.providers")} == {
        "moodlemate.providers.openai.models",
        "moodlemate.providers.openai.strict_schema",
    }
    # No model family named in the server's code but its /v1/models listing (and docstrings).
    tree = ast.parse((TESTING_SRC / "moodlemate/testing/_server.py").read_text(encoding="utf-8"))
    listing = {
        id(node)
        for top in ast.walk(tree)
        if (isinstance(top, ast.AnnAssign) and ast.unparse(top.target) == "DEFAULT_MODELS")
        or isinstance(top, ast.Expr)
        for node in ast.walk(top)
    }
    assert len(listing) > 20
    family = re.compile(r"(?<![\w-])(o\d|gpt-\d)")
    named = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and family.search(node.value)
        and id(node) not in listing
    ]
    assert named == []


def test_core_carries_no_openai_emulation() -> None:
    for path in CORE_SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for marker in ("http.server", "BaseHTTPRequestHandler", "socketserver"):
            assert marker not in text, (path.name, marker)
