"""``moodlemate-ai providers`` and ``moodlemate-ai models`` through the installed console
script, in a subprocess, as a user runs them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import fake_dists
import pytest

SCRIPT = shutil.which("moodlemate-ai", path=str(Path(sys.executable).parent))


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT is not None, "console script moodlemate-ai is not installed"
    return subprocess.run(
        [SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def rows(stdout: str) -> list[list[str]]:
    """The table's rows, split on the two-space column gaps."""
    table = stdout.split("\n\n", 1)[0].splitlines()
    return [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in table]


WORKSPACE = ["ollama", "openai", "openrouter"]


def ours(names: list[str]) -> list[str]:
    """The workspace's plugins among ``names``: other installed plugins may be listed too."""
    return [name for name in names if name in WORKSPACE]


def left_out(stdout: str) -> set[str]:
    found = re.search(r"left out by MOODLEMATE_PLUGINS: (.*)", stdout)
    assert found is not None, stdout
    return set(found.group(1).split(", "))


def test_providers_lists_name_package_version_endpoint() -> None:
    out = run("providers")  # the plugins the tests load: tests/conftest.py pins them
    assert out.returncode == 0, out.stderr
    assert rows(out.stdout) == [
        ["NAME", "PACKAGE", "VERSION", "DEFAULT ENDPOINT"],
        ["ollama", "moodlemate-ai-ollama", "0.1.0", "http://localhost:11434/v1"],
        ["openai", "moodlemate-ai-openai", "0.1.0", "https://api.openai.com/v1"],
        ["openrouter", "moodlemate-ai-openrouter", "0.1.0", "https://openrouter.ai/api/v1"],
    ]
    assert "failed" not in out.stdout


@pytest.mark.all_plugins
def test_providers_reports_broken_plugins_and_still_lists_the_rest(tmp_path: Path) -> None:
    fake_dists.install_broken(tmp_path)
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    out = run("providers", PYTHONPATH=path)
    assert out.returncode == 1  # a deployment check can rely on it
    assert ours([row[0] for row in rows(out.stdout)[1:]]) == WORKSPACE
    failed = out.stdout.split("failed plugins:\n", 1)[1].splitlines()
    assert len(failed) == len(fake_dists.BROKEN_PLUGINS)
    for plugin, reason in fake_dists.BROKEN_REASONS.items():
        [line] = [line for line in failed if line.startswith(f"  {plugin}: ")]
        assert f"(package {fake_dists.dist_name(plugin)!r})" in line
        assert reason in line
    assert "Traceback" not in out.stderr


def test_providers_honours_the_restriction_variable() -> None:
    out = run("providers", MOODLEMATE_PLUGINS="ollama")
    assert out.returncode == 0, out.stderr
    assert [row[0] for row in rows(out.stdout)[1:]] == ["ollama"]
    assert {"openai", "openrouter"} <= left_out(out.stdout)


def test_providers_with_every_plugin_left_out_does_not_say_none_is_installed() -> None:
    out = run("providers", MOODLEMATE_PLUGINS="")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no providers loaded (MOODLEMATE_PLUGINS leaves out")
    assert "pip install" not in out.stdout
    assert set(WORKSPACE) <= left_out(out.stdout)


def test_models_lists_context_window_and_prices_per_million() -> None:
    out = run("models", "--known")
    assert out.returncode == 0, out.stderr
    table = rows(out.stdout)
    assert table[0] == [
        "PROVIDER",
        "MODEL",
        "CONTEXT",
        "MAX OUTPUT",
        "INPUT",
        "CACHED INPUT",
        "OUTPUT",
        "SOURCE",
    ]
    by_model = {row[1]: row for row in table[1:]}
    assert by_model["gpt-4o-mini"][:7] == [
        "openai",
        "gpt-4o-mini",
        "128000",
        "16384",
        "0.15",
        "0.075",
        "0.60",
    ]
    assert re.fullmatch(r"shipped \d{4}-\d\d-\d\d", by_model["gpt-4o-mini"][7])
    assert by_model["gpt-4"][5] == "-"  # no cached-input discount
    # One price format for every provider: at least two decimals, no float noise.
    assert by_model["anthropic/claude-3.5-haiku"][4:7] == ["0.80", "0.08", "4.00"]
    for row in table[1:]:
        for cell in row[4:7]:
            assert cell in {"-", "?"} or re.fullmatch(r"\d+\.\d{2,}", cell), row
    assert "prices in USD per 1M tokens" in out.stdout
    assert "ollama: lists no models" in out.stdout


@pytest.mark.parametrize("flag", ["--provider", "-p"])
def test_models_of_one_provider(flag: str) -> None:
    out = run("models", "--known", flag, "openai")
    assert out.returncode == 0, out.stderr
    assert {row[0] for row in rows(out.stdout)[1:]} == {"openai"}
    assert "ollama" not in out.stdout


def test_models_of_an_unknown_provider_fails_clearly() -> None:
    out = run("models", "--known", "--provider", "nope")
    assert out.returncode == 1
    assert out.stdout == ""
    assert "unknown provider 'nope' (installed providers: ollama, openai, openrouter)" in out.stderr


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    """`moodlemate-ai models | head -1`: the reader leaves early; no traceback, exit 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        out = subprocess.run(
            [str(SCRIPT), "models", "--known"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert out.returncode == 141
    assert "Traceback" not in out.stderr
