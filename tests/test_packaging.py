"""Package shape: lazy import, the OpenAI provider found through its entry point."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from moodlemate.ai._plugins import registry
from support import REPO


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
    assert files("moodlemate.testing").joinpath("py.typed").is_file()


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


DISTRIBUTIONS = {
    "packages/core": "moodlemate_ai",
    "packages/provider-openai": "moodlemate_ai_openai",
    "packages/provider-openrouter": "moodlemate_ai_openrouter",
    "packages/testing": "moodlemate_ai_testing",
}


def test_every_distribution_has_real_metadata_and_a_readme_that_stands_alone(
    tmp_path: Path,
) -> None:
    from email.parser import Parser

    for folder, stem in DISTRIBUTIONS.items():
        with _wheel(folder, tmp_path / stem) as wheel:
            metadata = Parser().parsestr(wheel.read(f"{stem}-0.1.0.dist-info/METADATA").decode())
        classifiers = metadata.get_all("Classifier") or []
        assert "Typing :: Typed" in classifiers, folder
        assert "Programming Language :: Python :: 3.11" in classifiers, folder
        assert metadata["License-Expression"] == "MIT"
        assert metadata["Keywords"], folder
        readme = metadata.get_payload()
        assert isinstance(readme, str)
        assert len(readme) > 1000, f"{folder}'s README says too little"
        assert "see the repository README" not in readme
        # Links must work on PyPI too: no paths into the repository.
        links = re.findall(r"\]\(([^)]+)\)", readme)
        assert all(link.startswith("https://") for link in links), (folder, links)
        assert "pip install ./packages/" in readme  # how to install it today, from a clone


def test_the_testing_wheel_declares_the_pytest_plugin_and_ships_the_server(
    tmp_path: Path,
) -> None:
    with _wheel("packages/testing", tmp_path) as wheel:
        entry_points = wheel.read("moodlemate_ai_testing-0.1.0.dist-info/entry_points.txt")
        names = set(wheel.namelist())
        requires = wheel.read("moodlemate_ai_testing-0.1.0.dist-info/METADATA").decode()
    assert "[pytest11]\nmoodlemate-ai = moodlemate.testing.pytest_plugin" in entry_points.decode()
    assert {
        "moodlemate/testing/__init__.py",
        "moodlemate/testing/_server.py",
        "moodlemate/testing/_batches.py",
        "moodlemate/testing/pytest_plugin.py",
        "moodlemate/testing/py.typed",
    } <= names
    assert not any(name.startswith(("moodlemate/ai/", "moodlemate/__init__")) for name in names)
    assert "Requires-Dist: moodlemate-ai>=0.1.0" in requires
    assert "Requires-Dist: moodlemate-ai-openai>=0.1.0" in requires


def test_the_core_wheel_carries_no_openai_emulation(tmp_path: Path) -> None:
    """The server lives in moodlemate-ai-testing: core ships only a re-export module, no
    pytest plugin, and offers the server through its ``testing`` extra."""
    with _wheel("packages/core", tmp_path) as wheel:
        names = set(wheel.namelist())
        dist_info = "moodlemate_ai-0.1.0.dist-info"
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
        metadata = wheel.read(f"{dist_info}/METADATA").decode().replace('"', "'")
        reexport = wheel.read("moodlemate/ai/testing.py").decode()
    assert "pytest11" not in entry_points
    assert not {n for n in names if "pytest_plugin" in n or "testing_batches" in n}
    assert "moodlemate/testing/__init__.py" not in names
    # The re-export module holds no server: no HTTP, no sockets, no chat completion shapes.
    for server_code in ("http.server", "socket", "chat.completion", "class ", "def "):
        assert server_code not in reexport, server_code
    assert len(reexport.splitlines()) < 50
    assert "Requires-Dist: moodlemate-ai-testing>=0.1.0; extra == 'testing'" in metadata
    assert "Requires-Dist: moodlemate-ai-testing>=0.1.0; extra == 'all'" in metadata


@pytest.mark.all_plugins  # a registry of its own: no pin applies
def test_a_missing_provider_says_how_to_install_it_from_a_clone_and_from_pypi() -> None:
    from moodlemate.ai import ProviderNotInstalledError
    from moodlemate.ai._plugins import PluginRegistry

    empty = PluginRegistry(group="moodlemate.ai.none")
    try:
        empty.get("openrouter")
    except ProviderNotInstalledError as exc:
        message = str(exc)
    folders = re.search(r"from a clone of the repository: pip install ([^;]+);", message)
    assert folders is not None, message
    for folder in folders.group(1).split():
        assert (REPO / folder).is_dir(), folder  # works as written from a clone
    assert "once published on PyPI: pip install 'moodlemate-ai[openrouter]'" in message


def test_every_local_install_path_in_the_docs_exists() -> None:
    for doc in (REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))):
        for command in re.findall(r"pip install ([^`\n]+)", doc.read_text()):
            for word in command.split():
                if word.startswith(("./", "-r")):
                    path = word.removeprefix("-r").strip() or "requirements-dev.txt"
                    assert (REPO / path).exists(), f"{doc.name}: pip install {command}"
