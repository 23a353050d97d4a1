"""Plugin discovery reads the last scan of the installed distributions while nothing was
installed or removed, so a process start does not import importlib.metadata and read every
distribution's metadata; an install or a removal is seen by the next process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import fake_dists
import pytest

pytestmark = pytest.mark.all_plugins  # it counts every installed plugin, as discovery does

PROBE = """
import sys
from moodlemate.ai._plugins import PluginRegistry
registry = PluginRegistry()
print(",".join(sorted(registry.names())))
print("scanned" if "importlib.metadata" in sys.modules else "cached")
"""

PLUGIN = (
    fake_dists.PROVIDER_BASE
    + """
        class Cached(OpenAIProvider):
            name = "cachedprov"
            default_endpoint = "http://127.0.0.1:9/v1"

        @hookimpl
        def register_providers(register):
            register(Cached())
"""
)


def _probe(site: Path, cache: Path) -> tuple[set[str], str]:
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(cache),
        # A first import writes __pycache__ into the site folder, which changes its mtime
        # once (one more scan in real life); kept out so each step shows one effect.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return set(out[0].split(",")), out[1]


def test_a_second_process_reads_the_scan_and_an_install_or_removal_is_seen(
    tmp_path: Path,
) -> None:
    site, cache = tmp_path / "site", tmp_path / "cache"
    site.mkdir()
    names, how = _probe(site, cache)
    assert "openai" in names
    assert how == "scanned"
    assert (cache / "moodlemate-ai" / "entry-points.json").is_file()

    names_again, how_again = _probe(site, cache)
    assert (names_again, how_again) == (names, "cached")

    fake_dists.install(site, "cachedprov", PLUGIN)
    installed, how_installed = _probe(site, cache)
    assert installed == names | {"cachedprov"}
    assert how_installed == "scanned"
    assert _probe(site, cache) == (installed, "cached")

    for path in site.glob("mmtest_cachedprov*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    removed, how_removed = _probe(site, cache)
    assert removed == names
    assert how_removed == "scanned"


def test_processes_of_different_layouts_taking_turns_each_read_their_scan(
    tmp_path: Path,
) -> None:
    # Two virtualenvs (here: two sys.path layouts) sharing one user cache, as on a machine
    # several people or projects use: neither evicts the other's scan.
    first, second, cache = tmp_path / "first", tmp_path / "second", tmp_path / "cache"
    first.mkdir()
    second.mkdir()
    assert _probe(first, cache)[1] == "scanned"
    assert _probe(second, cache)[1] == "scanned"
    for _ in range(2):
        assert _probe(first, cache)[1] == "cached"
        assert _probe(second, cache)[1] == "cached"


def test_an_unreadable_cache_is_no_cache(tmp_path: Path) -> None:
    site, cache = tmp_path / "site", tmp_path / "cache"
    site.mkdir()
    (cache / "moodlemate-ai").mkdir(parents=True)
    (cache / "moodlemate-ai" / "entry-points.json").write_text("{not json")
    names, how = _probe(site, cache)
    assert "openai" in names
    assert how == "scanned"
    assert _probe(site, cache) == (names, "cached")  # and it was written afresh
