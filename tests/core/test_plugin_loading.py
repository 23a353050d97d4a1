"""Plugin discovery as users meet it: real installed distributions with entry points,
broken ones among them, the MOODLEMATE_PLUGINS restriction, and registration in code."""

from __future__ import annotations

import importlib
import sys
import textwrap
import types
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import fake_dists
import pytest
from moodlemate.ai import GPT, PluginError, Provider, UnknownProviderError, hookimpl
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.testing import LoopbackServer, Reply
from moodlemate.providers.openai import OpenAIProvider
from support import FAST_RETRY, TEST_KEY


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site folder holding every broken plugin package, installed once per module."""
    return fake_dists.install_broken(tmp_path_factory.mktemp("broken-site"))


@pytest.fixture
def with_broken(broken_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(broken_site))
    return broken_site


class LocalProvider(OpenAIProvider):
    """A provider written in a script: an OpenAI-compatible server without key."""

    name = "local"
    default_endpoint = "http://127.0.0.1:9/v1"
    key_env = None
    key_prefixes = ()
    requires_key = False


def _plugin(**hooks: Callable[..., None]) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


# -- broken plugins ------------------------------------------------------------------------


@pytest.mark.all_plugins
@pytest.mark.usefixtures("with_broken")
def test_each_broken_plugin_is_reported_by_name_package_and_reason() -> None:
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning) as caught:
        failures = registry.failures
    assert set(failures) == set(fake_dists.BROKEN_PLUGINS)
    warned = "\n".join(str(w.message) for w in caught)
    for plugin, reason in fake_dists.BROKEN_REASONS.items():
        message = failures[plugin]
        assert f"plugin {plugin!r}" in message
        assert f"(package {fake_dists.dist_name(plugin)!r})" in message
        assert reason in message
        assert message in warned


@pytest.mark.all_plugins
@pytest.mark.usefixtures("with_broken")
def test_other_providers_keep_working_beside_broken_plugins(server: LoopbackServer) -> None:
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning):
        assert set(registry.names()) >= {
            "ollama",
            "openai",
            "openrouter",
        }  # others may be installed
    assert not set(registry.names()) & {"halfdone", "noscheme"}
    # The impostor claiming "openai" did not replace the real one.
    assert registry.entries()["openai"].package == "moodlemate-ai-openai"
    server.enqueue(Reply(text="from openai"), Reply(text="from ollama"))
    openai = GPT("openai", endpoint=server.url, api_key=TEST_KEY, plugins=registry)
    assert openai.chat_completion("gpt-4o-mini", "", "hi") == "from openai"
    ollama = GPT("ollama", endpoint=server.url, plugins=registry)
    assert ollama.chat_completion("llama3.2", "", "hi") == "from ollama"


@pytest.mark.all_plugins
@pytest.mark.usefixtures("with_broken")
def test_selecting_a_broken_provider_says_why() -> None:
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning):
        registry.names()
    with pytest.raises(UnknownProviderError, match="No module named 'mmtest_dependency"):
        GPT("import_error", plugins=registry).endpoint  # noqa: B018


@pytest.mark.all_plugins
def test_a_plugin_named_like_its_provider_keeps_the_name_in_either_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entry points load in sys.path order; the squatter loses whether it comes first or last."""
    fake_dists.install(tmp_path, "duplicate", fake_dists.BROKEN_PLUGINS["duplicate"])
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])  # openai now loads first
    importlib.invalidate_caches()
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning, match="registers provider 'openai', a name already taken"):
        assert registry.entries()["openai"].package == "moodlemate-ai-openai"
    assert list(registry.failures) == ["duplicate"]


@pytest.mark.all_plugins
def test_reload_discovers_a_package_installed_at_run_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = PluginRegistry()
    assert "echo" not in registry.names()
    fake_dists.install(
        tmp_path,
        "echo",
        """
        from moodlemate.ai import hookimpl
        from moodlemate.providers.openai import OpenAIProvider

        class Echo(OpenAIProvider):
            name = "echo"
            default_endpoint = "http://127.0.0.1:9/v1"

        @hookimpl
        def register_providers(register):
            register(Echo())
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "echo" not in registry.names()  # loaded once: no rescans on the hot path
    registry.reload()
    entry = registry.entries()["echo"]
    assert (entry.plugin, entry.package, entry.version) == ("echo", "mmtest-echo", "1.2.3")


# -- MOODLEMATE_PLUGINS --------------------------------------------------------------------


@pytest.mark.all_plugins
def test_restriction_loads_only_the_named_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOODLEMATE_PLUGINS", " ollama ")
    registry = PluginRegistry()
    assert registry.names() == ["ollama"]
    assert registry.excluded >= {"openai", "openrouter"}  # and any other installed plugin
    with pytest.raises(UnknownProviderError, match="installed but not loaded: MOODLEMATE_PLUGINS"):
        GPT("openai", plugins=registry).endpoint  # noqa: B018


@pytest.mark.all_plugins
def test_restriction_keeps_broken_plugins_from_loading(
    monkeypatch: pytest.MonkeyPatch, with_broken: Path
) -> None:
    """A broken plugin the variable leaves out is never imported, so it cannot warn."""
    monkeypatch.setenv("MOODLEMATE_PLUGINS", "openai,ollama")
    registry = PluginRegistry()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.names() == ["ollama", "openai"]
    assert registry.failures == {}
    assert registry.excluded >= {*fake_dists.BROKEN_PLUGINS, "openrouter"}


def test_empty_restriction_loads_no_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOODLEMATE_PLUGINS", "")
    registry = PluginRegistry()
    assert registry.names() == []
    registry.register_provider(LocalProvider())  # code registration is not restricted
    assert registry.names() == ["local"]


def test_restriction_naming_a_missing_plugin_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOODLEMATE_PLUGINS", "ollama,olama")
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning, match="names plugin 'olama', which no installed package"):
        assert registry.names() == ["ollama"]


# -- registration in code ------------------------------------------------------------------


def test_provider_registered_in_code_serves_calls(server: LoopbackServer) -> None:
    registry = PluginRegistry()
    registry.register_provider(LocalProvider())
    entry = registry.entries()["local"]
    assert (entry.package, entry.from_code) == (None, True)
    server.enqueue(Reply(text="local answer"))
    gpt = GPT("local", endpoint=server.url, plugins=registry, retry=FAST_RETRY)
    assert gpt.chat_completion("my-model", "", "hi") == "local answer"
    assert "authorization" not in server.chat_requests[0].headers


def test_plugin_module_registered_in_code() -> None:
    module = types.ModuleType("my_notebook_plugin")
    module.register_providers = hookimpl(lambda register: register(LocalProvider()))  # type: ignore[attr-defined]
    registry = PluginRegistry()
    registry.register(module)
    assert registry.entries()["local"].plugin == "my_notebook_plugin"


def test_registering_again_in_code_replaces_the_earlier_registration() -> None:
    """A notebook cell run twice (after an edit) must not fail or keep the stale object."""
    registry = PluginRegistry()
    first, second = LocalProvider(), LocalProvider()
    registry.register_provider(first)
    registry.register_provider(second)
    assert registry.get("local") is second
    registry.register(_plugin(register_providers=lambda register: register(first)), "cell")
    registry.register(_plugin(register_providers=lambda register: register(second)), "cell")
    assert registry.get("local") is second


def test_code_cannot_take_an_installed_provider_name() -> None:
    class Impostor(LocalProvider):
        name = "openai"

    registry = PluginRegistry()
    with pytest.raises(
        PluginError, match="already taken by plugin 'openai' \\(package 'moodlemate"
    ):
        registry.register_provider(Impostor())
    with pytest.raises(PluginError, match="plugin 'ollama' \\(package 'moodlemate-ai-ollama'\\)"):
        registry.register(_plugin(register_providers=lambda register: None), "ollama")
    assert type(registry.get("openai")) is OpenAIProvider


def test_code_registration_that_breaks_the_contract_raises() -> None:
    class HalfDone(Provider):
        name = "halfdone"
        default_endpoint = "http://127.0.0.1:9/v1"

    class Nameless(LocalProvider):
        name = ""

    registry = PluginRegistry()
    with pytest.raises(PluginError, match="Can't instantiate abstract class HalfDone"):
        registry.register(
            _plugin(register_providers=lambda register: register(HalfDone())),  # type: ignore[abstract]
            "half",
        )
    with pytest.raises(PluginError, match="registered Nameless with name ''"):
        registry.register_provider(Nameless())
    with pytest.raises(PluginError, match=r"which is not a moodlemate\.ai\.plugin\.Provider"):
        registry.register(_plugin(register_providers=lambda register: register(object())), "x")
    with pytest.raises(PluginError, match="unknown hook 'after_reponse'"):
        registry.register(_plugin(after_reponse=lambda: None), "typo")
    assert registry.names() == ["ollama", "openai", "openrouter"]
    assert registry.failures == {}
    assert registry.call_hooks() is None  # the rejected "typo" plugin left nothing behind


def test_code_registrations_survive_reload() -> None:
    registry = PluginRegistry()
    registry.register_provider(LocalProvider())
    registry.reload()
    assert registry.names() == ["local", "ollama", "openai", "openrouter"]


def test_public_register_functions_in_a_script(server: LoopbackServer, tmp_path: Path) -> None:
    """``moodlemate.ai.register`` / ``register_provider`` on the process-wide registry, as a
    script or notebook uses them (in a subprocess: the global registry must not leak)."""
    import subprocess

    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import moodlemate.ai
            from moodlemate.ai import GPT, hookimpl
            from moodlemate.providers.openai import OpenAIProvider

            class Mine(OpenAIProvider):
                name = "mine"
                default_endpoint = {server.url!r}
                key_env = None
                key_prefixes = ()
                requires_key = False

            class Logger:
                @hookimpl
                def after_response(self, completion):
                    print("hook saw", completion.text)

            moodlemate.ai.register_provider(Mine())
            moodlemate.ai.register(Logger())
            print(GPT("mine").chat_completion("m", "", "hi"))
            """
        )
    )
    server.enqueue(Reply(text="scripted"))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.splitlines() == ["hook saw scripted", "scripted"]


@pytest.mark.all_plugins
def test_a_plugin_that_registers_itself_while_imported(tmp_path: Path) -> None:
    """Registration in code from inside an entry-point import re-enters the loading registry;
    it must neither recurse nor deadlock."""
    import os
    import subprocess

    fake_dists.install(
        tmp_path,
        "eager",
        """
        import moodlemate.ai
        from moodlemate.providers.openai import OpenAIProvider

        class Eager(OpenAIProvider):
            name = "eager"
            default_endpoint = "http://127.0.0.1:9/v1"

        moodlemate.ai.register_provider(Eager())
        """,
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = "from moodlemate.ai import registry; print(registry.names(), registry.failures)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['eager', 'ollama', 'openai', 'openrouter'] {}"


def test_zero_price_provider_costs_zero_not_unknown(server: LoopbackServer) -> None:
    server.enqueue(Reply(text="x", prompt_tokens=10, completion_tokens=5))
    gpt = GPT("ollama", endpoint=server.url)
    gpt.chat_completion("llama3.2", "", "hi")
    assert gpt.last_result is not None
    assert gpt.last_result.cost == Decimal(0)


def test_a_provider_without_hosts_recognises_only_its_own_server() -> None:
    """A local server's provider must not claim every other server on localhost."""

    class LMStudio(LocalProvider):
        default_endpoint = "http://localhost:1234/v1"

    class Hosted(LocalProvider):
        default_endpoint = "https://api.example.com/v1"
        hosts = ("example.com",)

    lmstudio, hosted = LMStudio(), Hosted()
    assert lmstudio.recognises("http://localhost:1234/v1/")
    assert not lmstudio.recognises("http://localhost:8000/v1")
    assert not lmstudio.recognises("https://localhost:1234/v1")
    assert hosted.recognises("https://eu.api.example.com/v1")
    assert not hosted.recognises("https://example.org/v1")


def test_a_subclass_for_another_server_does_not_inherit_the_parents_key(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPENAI_API_KEY belongs to api.openai.com: a subclass with its own default endpoint
    neither reads it nor claims api.openai.com, unless it says so itself."""

    class Lab(OpenAIProvider):
        name = "lab"
        default_endpoint = server.url
        requires_key = False

    assert (Lab.key_env, Lab.key_prefixes, Lab.hosts) == (None, (), ())
    assert not Lab().recognises("https://api.openai.com/v1")
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    registry = PluginRegistry()
    registry.register_provider(Lab())
    server.enqueue(Reply(text="ok"))
    gpt = GPT("lab", plugins=registry)
    assert gpt.chat_completion("m", "", "hi") == "ok"
    assert "authorization" not in server.chat_requests[0].headers


@pytest.mark.all_plugins
def test_two_packages_with_one_entry_point_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = """
        from moodlemate.ai import hookimpl
        from moodlemate.providers.openai import OpenAIProvider

        class Twin(OpenAIProvider):
            name = "twin"
            default_endpoint = "http://127.0.0.1:9/v1"

        @hookimpl
        def register_providers(register):
            register(Twin())
    """
    for dist in ("mmtest-twin-a", "mmtest-twin-b"):
        module = dist.replace("-", "_")
        fake_dists.install_distribution(
            tmp_path, dist, "1.0", {f"{module}.py": source}, {"twin": module}
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning, match="is a name another installed package already uses"):
        first = registry.entries()["twin"].package
    assert first in {"mmtest-twin-a", "mmtest-twin-b"}
    second = ({"mmtest-twin-a", "mmtest-twin-b"} - {first}).pop()
    assert f"(package {second!r})" in registry.failures["twin"]
    assert f"({first!r}); it was not loaded" in registry.failures["twin"]
