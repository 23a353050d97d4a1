"""The deprecation rule: module paths that moved keep working, with a DeprecationWarning
naming the new place, for at least one minor version (moodlemate.ai.retry and the other
modules that became private in 0.1, the test server's old homes)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import moodlemate.ai
import moodlemate.ai.plugin
import pytest
from moodlemate.ai._moved_modules import MOVED, REMOVED_IN


def _import_fresh(name: str) -> object:
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_imports_with_a_warning_naming_the_new_place(old: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"^{old} is deprecated") as caught:
        module = _import_fresh(old)
    message = str(caught[0].message)
    assert message.startswith(f"{old} is deprecated and will be removed in {REMOVED_IN}: ")
    target = importlib.import_module(MOVED[old])
    assert "import " in message or MOVED[old] in message
    # every name the new module has is reachable, as the same object
    for name in getattr(target, "__all__", [n for n in vars(target) if not n.startswith("_")]):
        assert getattr(module, name) is getattr(target, name)


def test_retry_names_point_to_the_public_faces() -> None:
    with pytest.warns(DeprecationWarning, match="import RetryPolicy from moodlemate.ai;") as w:
        retry = _import_fresh("moodlemate.ai.retry")
    assert "retry_after_from_headers, should_retry_from_headers from moodlemate.ai.plugin" in str(
        w[0].message
    )
    assert retry.RetryPolicy is moodlemate.ai.RetryPolicy  # type: ignore[attr-defined]
    assert (
        retry.retry_after_from_headers  # type: ignore[attr-defined]
        is moodlemate.ai.plugin.retry_after_from_headers
    )


def test_from_import_of_an_old_name_works() -> None:
    sys.modules.pop("moodlemate.ai.gpt", None)
    with pytest.warns(DeprecationWarning, match="import GPT from moodlemate.ai"):
        from moodlemate.ai.gpt import GPT  # type: ignore[import-not-found]
    assert GPT is moodlemate.ai.GPT


def test_a_name_that_never_existed_still_fails() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("moodlemate.ai.no_such_module")


def test_a_script_shows_the_warning_at_its_import_line_by_default(tmp_path: Path) -> None:
    """Python shows DeprecationWarnings triggered in __main__: the warning must be attributed
    to the user's import statement, not to importlib's frames."""
    script = tmp_path / "app.py"
    script.write_text("from moodlemate.ai.retry import RetryPolicy\nprint(RetryPolicy())\n")
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert f"{script}:1: DeprecationWarning: moodlemate.ai.retry is deprecated" in out.stderr
    assert out.stdout.startswith("RetryPolicy(")


def test_importing_the_package_itself_warns_of_nothing() -> None:
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import moodlemate.ai; moodlemate.ai.GPT()"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
