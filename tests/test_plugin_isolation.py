"""A third-party moodlemate plugin installed beside the workspace's own changes no test's
outcome: tests pin the plugins they load (tests/conftest.py, ``all_plugins`` for discovery
tests, which then tolerate extra plugins). The plugin here is well-formed but in the way: a
provider of its own and call hooks that print and log on every call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fake_dists
import pytest

ROOT = Path(__file__).resolve().parents[1]

# The modules that broke with such a plugin installed (11 tests), and the ones that load
# plugins, run hooks or compare the command line's output exactly.
MODULES = [
    "tests/core/test_cli_listings.py",
    "tests/core/test_call_hooks.py",
    "tests/core/test_plugin_loading.py",
    "tests/core/test_seed_contract.py",
    "tests/core/test_cli_spend.py",
    "tests/core/test_plugin_guide.py",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_dists.install_third_party(tmp_path_factory.mktemp("third-party-site"))


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOODLEMATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return env


@pytest.mark.all_plugins
def test_the_third_party_plugin_is_really_installed(site: Path) -> None:
    """Without a pin, the command line loads it: the test below can fail."""
    out = subprocess.run(
        [sys.executable, "-m", "moodlemate.ai.cli", "providers"],
        capture_output=True,
        text=True,
        env=_env(site),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:2] == ["noisy", "mmtest-noisy"] for line in out.stdout.splitlines()), (
        out.stdout
    )


def test_the_suite_passes_beside_a_third_party_plugin(site: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *MODULES],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(site),
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout.splitlines()[-1]
