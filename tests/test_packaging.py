"""Package shape: lazy import, the OpenAI provider found through its entry point."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO
from moodlemate.ai.plugins import registry


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    return {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}


def test_import_does_not_load_openai_or_tiktoken() -> None:
    modules = _modules_after("import moodlemate.ai")
    assert "moodlemate.ai" in modules
    assert not {m for m in modules if m.split(".")[0] in {"openai", "tiktoken", "httpx2", "httpx"}}


def test_constructing_gpt_does_not_load_openai_or_tiktoken() -> None:
    modules = _modules_after("from moodlemate.ai import GPT; g = GPT(); g.endpoint")
    assert "moodlemate.providers.openai.provider" in modules  # the plugin was loaded ...
    assert not {m for m in modules if m.split(".")[0] in {"openai", "tiktoken"}}  # ... lazily


def test_openai_provider_comes_from_its_entry_point() -> None:
    entry = registry.entries()["openai"]
    assert entry.package == "moodlemate-ai-openai"
    assert entry.plugin == "openai"
    assert entry.provider.default_endpoint == "https://api.openai.com/v1"


def test_core_names_no_vendor() -> None:
    """Nothing in the core package imports a provider package."""
    from pathlib import Path

    import moodlemate.ai as core

    root = Path(core.__file__).parent
    offenders = [
        p.name
        for p in root.rglob("*.py")
        if "moodlemate.providers" in p.read_text() or "import openai" in p.read_text()
    ]
    assert offenders == []


def test_py_typed_is_shipped() -> None:
    from importlib.resources import files

    assert files("moodlemate.ai").joinpath("py.typed").is_file()
    assert files("moodlemate.providers.openai").joinpath("py.typed").is_file()


def _wheel(package: str, into: Path) -> zipfile.ZipFile:
    """Build ``package``'s wheel as pip would, offline (the backend is a dev requirement)."""
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--disable-pip-version-check", str(REPO / package), "-w", str(into)),
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    (wheel,) = into.glob("*.whl")
    return zipfile.ZipFile(wheel)


def test_the_openai_wheel_ships_the_verified_bpe_files(tmp_path: Path) -> None:
    from moodlemate.providers.openai.tiktoken_cache import BPE_FILES

    with _wheel("packages/provider-openai", tmp_path) as wheel:
        for encoding in ("o200k_base", "cl100k_base"):
            data = wheel.read(f"moodlemate/providers/openai/_bpe/{encoding}.tiktoken")
            assert hashlib.sha256(data).hexdigest() == BPE_FILES[encoding][0].sha256
