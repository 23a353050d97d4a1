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
from support import REPO

GUIDE = REPO / "docs" / "plugins.md"
# A fenced block whose first line names its file: "# pyproject.toml", "# moodlemate_groq.py".
FILE_BLOCK = re.compile(r"```(?:toml|python)\n# ([\w.-]+\.(?:toml|py))\n(.*?)```", re.DOTALL)


def guide_files() -> dict[str, str]:
    return {name: body for name, body in FILE_BLOCK.findall(GUIDE.read_text())}


def test_guide_is_linked_from_the_readme_and_the_site() -> None:
    assert "[writing a plugin](docs/plugins.md)" in (REPO / "README.md").read_text()
    assert "Writing a plugin: plugins.md" in (REPO / "mkdocs.yml").read_text()


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


def test_the_guides_dependency_line_installs_from_a_clone_without_an_index(
    tmp_path: Path,
) -> None:
    """With the clone's packages installed (as the guide says), pip resolves
    ``moodlemate-ai[openai]`` with no index at all and builds the plugin."""
    project = tmp_path / "moodlemate-groq"
    project.mkdir()
    for name, body in guide_files().items():
        if name != "test_groq.py":
            (project / name).write_text(body)
    prefix = tmp_path / "prefix"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation"),
            *("--disable-pip-version-check", "--prefix", str(prefix), str(project)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    installed = list(prefix.rglob("moodlemate_groq.py"))
    assert len(installed) == 1
