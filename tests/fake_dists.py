"""Installs tiny plugin packages the way pip lays them out (a module plus a ``.dist-info``
folder with ``entry_points.txt``) into a folder, so ``importlib.metadata`` finds them as it
finds any installed distribution once the folder is on ``sys.path`` or ``PYTHONPATH``."""

from __future__ import annotations

import textwrap
from pathlib import Path

PROVIDER_BASE = """
        from moodlemate.ai import hookimpl
        from moodlemate.providers.openai import OpenAIProvider
"""

# entry-point name -> module source. Each is broken in one way the registry must report.
BROKEN_PLUGINS: dict[str, str] = {
    "import_error": "import mmtest_dependency_that_is_not_installed\n",
    "abstract": """
        from moodlemate.ai import Provider, hookimpl

        class HalfDone(Provider):  # complete() and count_tokens() not implemented
            name = "halfdone"
            default_endpoint = "http://127.0.0.1:9/v1"

        @hookimpl
        def register_providers(register):
            register(HalfDone())
    """,
    "nameless": PROVIDER_BASE
    + """
        class Nameless(OpenAIProvider):
            name = None

        @hookimpl
        def register_providers(register):
            register(Nameless())
    """,
    "bad_endpoint": PROVIDER_BASE
    + """
        class NoScheme(OpenAIProvider):
            name = "noscheme"
            default_endpoint = "localhost:8080/v1"

        @hookimpl
        def register_providers(register):
            register(NoScheme())
    """,
    "duplicate": PROVIDER_BASE
    + """
        class Impostor(OpenAIProvider):
            name = "openai"
            default_endpoint = "http://127.0.0.1:9/v1"

        @hookimpl
        def register_providers(register):
            register(Impostor())
    """,
    "typo_hook": """
        from moodlemate.ai import hookimpl

        @hookimpl
        def register_provider(register):  # no such hook: register_providers
            pass
    """,
    "wrong_argument": """
        from moodlemate.ai import hookimpl

        @hookimpl
        def register_providers(add):  # the spec's argument is `register`
            pass
    """,
}

# What each failure message must say (besides the plugin and package names).
BROKEN_REASONS: dict[str, str] = {
    "import_error": "failed to import",
    "abstract": "Can't instantiate abstract class HalfDone",
    "nameless": "registered Nameless with name None",
    "bad_endpoint": "without a valid `default_endpoint`",
    "duplicate": "plugin 'openai' (package 'moodlemate-ai-openai')",
    "typo_hook": "unknown hook 'register_provider'",
    "wrong_argument": "hook 'register_providers'",
}


def module_name(plugin: str) -> str:
    return f"mmtest_{plugin}"


def dist_name(plugin: str) -> str:
    return f"mmtest-{plugin.replace('_', '-')}"


def install_distribution(
    site: Path, dist: str, version: str, files: dict[str, str], entry_points: dict[str, str]
) -> None:
    """Lay out files plus ``<dist>-<version>.dist-info`` with the ``moodlemate.ai`` entry points."""
    for name, source in files.items():
        (site / name).write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[moodlemate.ai]\n{lines}")
    (info / "RECORD").write_text("")


def install(site: Path, plugin: str, source: str, version: str = "1.2.3") -> None:
    """Install one distribution ``mmtest-<plugin>`` with entry point ``<plugin>``."""
    module = module_name(plugin)
    install_distribution(
        site, dist_name(plugin), version, {f"{module}.py": source}, {plugin: module}
    )


def install_broken(site: Path) -> Path:
    for plugin, source in BROKEN_PLUGINS.items():
        install(site, plugin, source)
    return site


THIRD_PARTY = "noisy"
"""A plausible third-party plugin, well-formed but in the way: a provider of its own, call
hooks that log a WARNING for every call, and an ``openai:``-looking model alias. The suite
must pass with it installed (tests pin the plugins they load: tests/conftest.py)."""

THIRD_PARTY_SOURCE = """
    import logging

    from moodlemate.ai import hookimpl
    from moodlemate.providers.openai import OpenAIProvider

    log = logging.getLogger("mmtest_noisy")


    class Noisy(OpenAIProvider):
        name = "noisy"
        default_endpoint = "http://127.0.0.1:9/v1"


    @hookimpl
    def register_providers(register):
        register(Noisy())


    @hookimpl
    def before_request(request, provider, endpoint):
        log.warning("noisy plugin saw a request to %s", endpoint)
        print("noisy plugin: before_request")


    @hookimpl
    def after_response(request, completion, error):
        log.warning("noisy plugin saw the end of a call")
"""


def install_third_party(site: Path) -> Path:
    """Install the noisy third-party plugin (distribution mmtest-noisy) into ``site``."""
    install(site, THIRD_PARTY, THIRD_PARTY_SOURCE)
    return site
