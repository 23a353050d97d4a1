"""The plugin guide's minimal plugin works as written: its pyproject's entry point and its
module, installed as a distribution, pass the guide's own test file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import fake_dists
from conftest import REPO

GUIDE = REPO / "docs" / "plugins.md"
# A fenced block whose first line names its file: "# pyproject.toml", "# moodlemate_groq.py".
FILE_BLOCK = re.compile(r"```(?:toml|python)\n# ([\w.-]+\.(?:toml|py))\n(.*?)```", re.DOTALL)


def guide_files() -> dict[str, str]:
    return {name: body for name, body in FILE_BLOCK.findall(GUIDE.read_text())}


def test_guide_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    plugins_section = readme.split("\n## Plugins", 1)[1]
    assert "](docs/plugins.md)" in plugins_section.split("\n## ", 1)[0]


def test_the_minimal_plugin_passes_the_guides_tests(tmp_path: Path) -> None:
    files = guide_files()
    assert set(files) == {"pyproject.toml", "moodlemate_groq.py", "test_groq.py"}
    project = tomllib.loads(files["pyproject.toml"])["project"]
    entry_points = project["entry-points"]["moodlemate.ai"]
    site = tmp_path / "site"
    site.mkdir()
    modules = {f"{value}.py": files[f"{value}.py"] for value in entry_points.values()}
    fake_dists.install_distribution(
        site, project["name"], project["version"], modules, entry_points
    )
    (tmp_path / "test_groq.py").write_text(files["test_groq.py"])

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOODLEMATE_", "GROQ_"))}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_groq.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 passed" in out.stdout
