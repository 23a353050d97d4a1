"""Swapping backends by configuration: environment, config-file profiles, arguments, model
strings; one resolution order; keys that stay with what they were configured for."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from moodlemate.ai import (
    GPT,
    ConfigurationError,
    InvalidEndpointError,
    MissingAPIKeyError,
    ProviderNotInstalledError,
    UnknownProviderError,
)
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.testing import LoopbackServer
from support import FAST_RETRY, TEST_KEY

OR_KEY = "sk-or-v1-5e2a9c0d7b1f4e3a8c6d"
OPENAI_KEY = "sk-proj-openai-3c9e1a7f5b2d4c6e"
ATTRIBUTION = {"http-referer", "x-title", "x-openrouter-title"}


@pytest.fixture
def router() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


def or_url(server: LoopbackServer) -> str:
    return f"{server.origin}/api/v1"


def user_code(**kwargs: object) -> str:
    """What an application writes once; configuration decides where it goes."""
    gpt = GPT(retry=FAST_RETRY, **kwargs)  # type: ignore[arg-type]
    return gpt.chat_completion(gpt.model, "Be brief.", "Hi")


def trust_project_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ./moodlemate.toml of these tests is the user's own: trusted (an untrusted one is
    tested in test_project_trust.py)."""
    monkeypatch.setenv("MOODLEMATE_TRUST_PROJECT_CONFIG", "1")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- the same code, three ways to switch ------------------------------------------------------


def test_environment_alone_switches_openai_to_openrouter(
    server: LoopbackServer, router: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", server.url)
    assert user_code() == "Echo: Hi"
    assert server.chat_requests[0].body["model"] == "gpt-4o-mini"

    monkeypatch.setenv("MOODLEMATE_PROVIDER", "openrouter")
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", or_url(router))
    monkeypatch.setenv("MOODLEMATE_MODEL", "anthropic/claude-sonnet-4")
    monkeypatch.setenv("MOODLEMATE_APP_TITLE", "Env App")
    assert user_code() == "Echo: Hi"
    (request,) = router.chat_requests
    assert request.path == "/api/v1/chat/completions"
    assert request.body["model"] == "anthropic/claude-sonnet-4"
    assert request.headers["x-openrouter-title"] == "Env App"
    assert len(server.chat_requests) == 1


def test_a_config_file_profile_switches_openai_to_openrouter(
    server: LoopbackServer, router: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENROUTER_API_KEY", OR_KEY)
    trust_project_files(monkeypatch)
    write(
        Path("moodlemate.toml"),
        f"""
profile = "local"
app_title = "Config App"

[profiles.local]
endpoint = "{server.url}"
model = "gpt-4o-mini"

[profiles.router]
provider = "openrouter"
endpoint = "{or_url(router)}"
model = "openai/gpt-4o-mini"
api_key_env = "OPENROUTER_API_KEY"
app_url = "https://example.org/app"

[profiles.router.headers]
X-Team = "research"
""",
    )
    assert user_code() == "Echo: Hi"
    assert server.chat_requests[0].body["model"] == "gpt-4o-mini"
    assert not ATTRIBUTION & set(server.chat_requests[0].headers)

    monkeypatch.setenv("MOODLEMATE_PROFILE", "router")
    assert user_code() == "Echo: Hi"
    (request,) = router.chat_requests
    assert request.body["model"] == "openai/gpt-4o-mini"
    assert request.headers["authorization"] == f"Bearer {OR_KEY}"  # the profile's key, there
    assert request.headers["http-referer"] == "https://example.org/app"
    assert request.headers["x-openrouter-title"] == "Config App"  # inherited from the top
    assert request.headers["x-team"] == "research"
    for sent in [*server.requests, *router.requests]:
        assert OPENAI_KEY.encode() not in sent.raw
        assert OPENAI_KEY not in str(sent.headers)


def test_arguments_switch_openai_to_openrouter_over_env_and_file(
    server: LoopbackServer, router: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(Path("moodlemate.toml"), f'endpoint = "{server.url}"\nmodel = "gpt-4o"\n')
    monkeypatch.setenv("MOODLEMATE_PROVIDER", "openai")
    monkeypatch.setenv("MOODLEMATE_MODEL", "gpt-4o-mini")
    assert user_code() == "Echo: Hi"
    assert server.chat_requests[0].body["model"] == "gpt-4o-mini"  # env beats file

    assert (
        user_code(provider="openrouter", endpoint=or_url(router), model="openai/gpt-4o-mini")
        == "Echo: Hi"
    )
    assert router.chat_requests[0].body["model"] == "openai/gpt-4o-mini"
    assert len(server.chat_requests) == 1


# -- one resolution order ---------------------------------------------------------------------


@pytest.fixture
def three() -> Iterator[dict[str, LoopbackServer]]:
    """One OpenRouter-like server per configuration level."""
    with LoopbackServer() as a, LoopbackServer() as e, LoopbackServer() as f:
        yield {"argument": a, "environment": e, "file": f}


@pytest.mark.parametrize("level", ["argument", "environment", "file", "default"])
def test_every_setting_resolves_argument_then_env_then_file_then_default(
    three: dict[str, LoopbackServer], monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    levels = ["argument", "environment", "file", "default"]
    present = levels[levels.index(level) :]
    if "file" in present:
        write(
            Path("moodlemate.toml"),
            f'provider = "openrouter"\nmodel = "file-model"\n'
            f'endpoint = "{or_url(three["file"])}"\napp_title = "file-title"\n',
        )
    if "environment" in present:
        monkeypatch.setenv("MOODLEMATE_PROVIDER", "openrouter")
        monkeypatch.setenv("MOODLEMATE_MODEL", "environment-model")
        monkeypatch.setenv("MOODLEMATE_ENDPOINT", or_url(three["environment"]))
        monkeypatch.setenv("MOODLEMATE_APP_TITLE", "environment-title")
    kwargs: dict[str, str] = {}
    if "argument" in present:
        kwargs = {
            "provider": "openrouter",
            "model": "argument-model",
            "endpoint": or_url(three["argument"]),
            "app_title": "argument-title",
        }
    gpt = GPT(retry=FAST_RETRY, **kwargs)  # type: ignore[arg-type]
    if level == "default":
        assert (gpt.provider.name, gpt.model, gpt.endpoint) == (
            "openai",
            "gpt-4o-mini",
            "https://api.openai.com/v1",
        )
        return
    assert gpt.provider.name == "openrouter"
    assert gpt.model == f"{level}-model"
    gpt.chat_completion(gpt.model, "", "Hi")
    (request,) = [r for srv in three.values() for r in srv.chat_requests]
    assert three[level].chat_requests == [request]
    assert request.body["model"] == f"{level}-model"
    assert request.headers["x-openrouter-title"] == f"{level}-title"


def test_the_project_file_overrides_the_user_file_and_an_explicit_file_replaces_both(
    router: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "xdg-config" / "moodlemate-ai" / "config.toml",
        f'provider = "openrouter"\nendpoint = "{or_url(router)}"\nmodel = "user-model"\n'
        'app_title = "User"\n[profiles.work]\nmodel = "user-work"\n',
    )
    assert GPT().model == "user-model"
    assert GPT(profile="work").model == "user-work"
    write(Path("moodlemate.toml"), 'model = "project-model"\n')
    assert user_code() == "Echo: Hi"
    (request,) = router.chat_requests
    assert request.body["model"] == "project-model"
    assert request.headers["x-openrouter-title"] == "User"  # other keys still from the user

    explicit = write(tmp_path / "elsewhere.toml", 'model = "explicit-model"\n')
    monkeypatch.setenv("MOODLEMATE_CONFIG", str(explicit))
    gpt = GPT()
    assert (gpt.model, gpt.provider.name) == ("explicit-model", "openai")
    assert GPT(model="arg").model == "arg"


def test_a_profile_named_default_applies_when_none_is_chosen() -> None:
    write(Path("moodlemate.toml"), '[profiles.default]\nmodel = "d"\n[profiles.x]\nmodel = "x"\n')
    assert GPT().model == "d"
    assert GPT(profile="x").model == "x"


# -- keys stay where they were configured -----------------------------------------------------


def test_a_profile_key_does_not_follow_an_endpoint_set_elsewhere(
    server: LoopbackServer, router: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        Path("moodlemate.toml"),
        f'provider = "openrouter"\nendpoint = "{or_url(router)}"\napi_key = "{OR_KEY}"\n'
        '[headers]\nX-Proxy-Token = "file-token-1234567"\n',
    )
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", server.url)
    gpt = GPT(retry=FAST_RETRY)
    assert gpt.api_key is None
    gpt.chat_completion("gpt-4o-mini", "", "Hi")
    assert "authorization" not in server.chat_requests[0].headers
    assert "x-proxy-token" not in server.chat_requests[0].headers
    assert OR_KEY not in repr(gpt)


def test_a_profile_key_does_not_follow_a_provider_set_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write(Path("moodlemate.toml"), f'provider = "openrouter"\napi_key = "{OR_KEY}"\n')
    assert GPT().api_key == OR_KEY
    monkeypatch.setenv("MOODLEMATE_PROVIDER", "openai")
    assert GPT().api_key is None  # an sk-or- key would pass OpenAI's 'sk-' check: never sent


def test_keys_follow_the_same_order_argument_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    trust_project_files(monkeypatch)
    other = "sk-or-v1-from-the-file-0a1b2c3d"
    write(Path("moodlemate.toml"), f'provider = "openrouter"\napi_key = "{other}"\n')
    assert GPT().api_key == other  # file
    monkeypatch.setenv("OPENROUTER_API_KEY", OR_KEY)
    assert GPT().api_key == OR_KEY  # environment beats file
    arg = "sk-or-v1-from-the-argument-9f8e"
    assert GPT(api_key=arg).api_key == arg  # argument beats environment
    # A profile naming its own variable is the environment level, and the more specific one.
    write(Path("moodlemate.toml"), 'provider = "openrouter"\napi_key_env = "TEAM_OR_KEY"\n')
    monkeypatch.setenv("TEAM_OR_KEY", other)
    assert GPT().api_key == other


def test_keys_in_config_files_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    path = write(Path("moodlemate.toml"), f'provider = "openrouter"\napi_key = "{OR_KEY}"\n')
    path.chmod(0o644)
    gpt = GPT()
    assert OR_KEY not in repr(gpt)
    assert "chmod 600" in caplog.text
    import logging

    logging.getLogger("moodlemate.ai").warning("key is %s", OR_KEY)
    assert OR_KEY not in caplog.text


def test_credential_like_headers_are_sent_to_their_endpoint_and_redacted(
    server: LoopbackServer, router: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = "proxy-token-7d1e2f3a4b5c"
    write(
        Path("moodlemate.toml"),
        f'endpoint = "{server.url}"\n[headers]\nX-Proxy-Token = "{token}"\n',
    )
    gpt = GPT(retry=FAST_RETRY)
    gpt.chat_completion("gpt-4o-mini", "", "Hi")
    assert server.chat_requests[0].headers["x-proxy-token"] == token
    gpt.endpoint = or_url(router)  # another endpoint: the profile's headers stay behind
    gpt.chat_completion("gpt-4o-mini", "", "Hi")
    assert "x-proxy-token" not in router.chat_requests[0].headers
    GPT(headers={"X-Api-Key": "argument-secret-12345"})
    import logging

    logging.getLogger("moodlemate.ai").warning("%s %s", token, "argument-secret-12345")
    assert token not in caplog.text
    assert "argument-secret-12345" not in caplog.text


@pytest.mark.parametrize("name", ["Authorization", "authorization"])
def test_a_configured_authorization_header_is_sent_when_no_api_key_is_set(
    server: LoopbackServer, name: str
) -> None:
    gateway = "Bearer gateway-token-7d1e2f3a4b5c"
    gpt = GPT("openai", endpoint=server.url, retry=FAST_RETRY, headers={name: gateway})
    gpt.chat_completion("gpt-4o-mini", "", "Hi")
    "".join(gpt.stream("gpt-4o-mini", "", "Hi"))
    assert [r.headers.get("authorization") for r in server.chat_requests] == [gateway] * 2


@pytest.mark.parametrize(
    ("provider", "variable", "key", "endpoint"),
    [
        ("openai", "OPENAI_API_KEY", OPENAI_KEY, "http://api.openai.com/v1"),
        ("openrouter", "OPENROUTER_API_KEY", OR_KEY, "http://openrouter.ai/api/v1"),
    ],
)
def test_an_environment_key_is_not_sent_over_plain_http_to_its_providers_host(
    monkeypatch: pytest.MonkeyPatch, provider: str, variable: str, key: str, endpoint: str
) -> None:
    monkeypatch.setenv(variable, key)
    assert GPT(provider).api_key == key
    assert GPT(provider, endpoint=endpoint.replace("http:", "https:")).api_key == key
    assert GPT(provider, endpoint=endpoint).api_key is None


def test_a_profile_reading_an_unset_key_variable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trust_project_files(monkeypatch)
    write(Path("moodlemate.toml"), 'provider = "openrouter"\napi_key_env = "WORK_OR_KEY"\n')
    with pytest.raises(MissingAPIKeyError, match=r"\$WORK_OR_KEY, which is not set"):
        GPT()


# -- provider:model strings -------------------------------------------------------------------


def test_a_provider_prefix_routes_the_call_and_is_stripped(router: LoopbackServer) -> None:
    gpt = GPT("openrouter", endpoint=or_url(router), retry=FAST_RETRY)
    gpt.chat_completion("openrouter:openai/gpt-4o-mini", "", "Hi")
    assert router.chat_requests[0].body["model"] == "openai/gpt-4o-mini"
    assert gpt.count_tokens("hello world", "openrouter:openai/gpt-4o") == gpt.count_tokens(
        "hello world", "gpt-4o"
    )


def test_a_provider_prefix_overrides_the_instance_provider(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    # Routed to openrouter.ai, which needs OPENROUTER_API_KEY: refused before anything is sent.
    with pytest.raises(MissingAPIKeyError, match="OPENROUTER_API_KEY"):
        gpt.chat_completion("openrouter:openai/gpt-4o-mini", "", "Hi")
    assert server.chat_requests == []


@pytest.mark.parametrize("model", ["llama3:8b", "qwen2.5:0.5b", "openai/gpt-4o:free"])
def test_names_with_colons_that_are_not_providers_pass_unchanged(
    server: LoopbackServer, model: str
) -> None:
    GPT(endpoint=server.url, retry=FAST_RETRY).chat_completion(model, "", "Hi")
    assert server.chat_requests[0].body["model"] == model


@pytest.mark.all_plugins  # a registry of its own, with no plugin at all: no pin applies
def test_a_prefix_naming_a_missing_provider_package_says_what_to_install() -> None:
    nothing_installed = PluginRegistry(group="moodlemate.ai.tests.no-such-group")
    gpt = GPT(plugins=nothing_installed)
    with pytest.raises(ProviderNotInstalledError, match=r"moodlemate-ai\[openrouter\]"):
        gpt.chat_completion("openrouter:openai/gpt-4o-mini", "", "Hi")
    with pytest.raises(ProviderNotInstalledError, match=r"moodlemate-ai\[openrouter\]"):
        _ = GPT("openrouter", plugins=nothing_installed).provider


def test_a_prefix_naming_a_provider_left_out_by_the_plugin_filter_is_not_sent_on(
    monkeypatch: pytest.MonkeyPatch, server: LoopbackServer
) -> None:
    monkeypatch.setenv("MOODLEMATE_PLUGINS", "openai")
    gpt = GPT(endpoint=server.url, plugins=PluginRegistry())
    with pytest.raises(UnknownProviderError, match="installed but not loaded"):
        gpt.chat_completion("openrouter:openai/gpt-4o-mini", "", "Hi")
    assert server.requests == []


# -- clear errors -----------------------------------------------------------------------------


def test_an_unknown_provider_lists_the_installed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOODLEMATE_PROVIDER", "openruoter")
    with pytest.raises(UnknownProviderError, match=r"'openruoter'.*openai, openrouter"):
        GPT().chat_completion("m", "", "Hi")


def test_malformed_toml_names_the_file_and_line() -> None:
    path = write(Path("moodlemate.toml"), '[profiles.work]\nprovider = "openrouter"\nmodel = \n')
    with pytest.raises(ConfigurationError) as info:
        GPT()
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ('[profiles.work]\nprovider = "openrouter"\nmodle = "x"\n', 3, "did you mean 'model'"),
        ('model = "m"\ntemperature = 0.5\n', 2, "unknown key"),
        ("model = 4\n", 1, "must be a model name (a string), not int"),
        ('[profiles.w]\nendpoint = "ftp://x"\n', 2, "must use http or https"),
        ('[profiles.w]\napi_key = "sk-or-1234567890"\napi_key_env = "K"\n', 3, "not both"),
        ('[profiles.w.headers]\n"Bad Header" = "x"\n', 2, "not a valid HTTP header name"),
        ('profiles = "work"\n', 1, "must be a table"),
    ],
)
def test_bad_config_keys_and_values_are_named_with_file_and_line(
    text: str, line: int, problem: str
) -> None:
    path = write(Path("moodlemate.toml"), text)
    with pytest.raises(ConfigurationError) as info:
        GPT()
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:")
    assert problem in message


def test_unknown_profiles_and_missing_files_are_configuration_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="no config file found"):
        GPT(profile="work")
    write(Path("moodlemate.toml"), "[profiles.home]\n[profiles.work]\n")
    with pytest.raises(ConfigurationError, match=r"no profile 'play'.*profiles: home, work"):
        GPT(profile="play")
    monkeypatch.setenv("MOODLEMATE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match="MOODLEMATE_CONFIG"):
        GPT()


def test_a_bad_endpoint_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", "localhost:11434")
    with pytest.raises(InvalidEndpointError, match="MOODLEMATE_ENDPOINT"):
        GPT()


# -- cost of configuration --------------------------------------------------------------------


def _tomllib_loaded(cwd: Path) -> bool:
    code = "import sys; from moodlemate.ai import GPT; GPT(); print('tomllib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True
    )
    return out.stdout.strip() == "True"


def test_tomllib_is_imported_only_when_a_config_file_exists(tmp_path: Path) -> None:
    assert not _tomllib_loaded(tmp_path)
    write(tmp_path / "moodlemate.toml", 'model = "gpt-4o"\n')
    assert _tomllib_loaded(tmp_path)
