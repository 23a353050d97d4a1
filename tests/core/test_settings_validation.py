"""api_key and endpoint: validated on assignment, typed errors, keys never in messages."""

from __future__ import annotations

import pytest
from moodlemate.ai import GPT, InvalidAPIKeyError, InvalidEndpointError, ValidationError
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.testing import LoopbackServer
from moodlemate.providers.openai import OpenAIProvider
from support import TEST_KEY

BAD_KEYS = [
    ("", "empty"),
    ("   ", "whitespace"),
    ("sk-abc def-1234567890", "whitespace"),
    ("sk-secret-value-123456\n", "whitespace"),
    ("pk-not-an-openai-key-9876", "start with"),
]


@pytest.mark.parametrize(("key", "why"), BAD_KEYS)
def test_bad_api_keys_raise_a_typed_error_without_the_key(key: str, why: str) -> None:
    gpt = GPT("openai")  # the provider is chosen: its key format is checked at assignment
    with pytest.raises(InvalidAPIKeyError) as info:
        gpt.api_key = key
    message = str(info.value)
    assert why in message
    if key.strip():
        assert key.strip() not in message
        assert key.strip() not in repr(info.value)
    assert isinstance(info.value, ValidationError)
    assert gpt.api_key is None


@pytest.mark.parametrize("key", [None, 12345, b"sk-bytes-key-123456"])
def test_non_string_api_key_is_rejected(key: object) -> None:
    with pytest.raises(InvalidAPIKeyError, match="must be a string"):
        GPT().api_key = key  # type: ignore[assignment]


def test_valid_key_is_kept_and_never_shown() -> None:
    gpt = GPT()
    gpt.api_key = TEST_KEY
    assert gpt.api_key == TEST_KEY
    assert TEST_KEY not in repr(gpt)
    assert TEST_KEY not in str(gpt)


def test_repr_names_the_provider_the_endpoint_selected() -> None:
    gpt = GPT()
    gpt.endpoint = "https://openrouter.ai/api/v1"
    assert repr(gpt).startswith(
        "GPT(provider='openrouter', endpoint='https://openrouter.ai/api/v1'"
    )
    assert gpt.provider.name == "openrouter"
    assert repr(GPT("openai", endpoint="https://openrouter.ai/api/v1")).startswith(
        "GPT(provider='openai', "
    )


def test_custom_endpoint_accepts_any_well_formed_key(server: LoopbackServer) -> None:
    gpt = GPT(endpoint=server.url)
    gpt.api_key = "vllm-token-abcdef"
    gpt.chat_completion("my-model", "", "hi")
    assert server.chat_requests[0].headers["authorization"] == "Bearer vllm-token-abcdef"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/v1",
        "http://",
        "https:///v1",
        "not a url",
        "localhost:11434/v1",
        "",
        "http://exa mple.com",
        "http://user:pw@example.com/v1",
        "http://host:99999/v1",
    ],
)
def test_bad_endpoints_raise(url: str) -> None:
    gpt = GPT()
    with pytest.raises(InvalidEndpointError):
        gpt.endpoint = url
    assert gpt.endpoint == "https://api.openai.com/v1"


@pytest.mark.parametrize("url", ["localhost:11434/v1", "127.0.0.1:8000/v1", "api.example.com"])
def test_an_endpoint_without_scheme_says_what_to_write(url: str) -> None:
    with pytest.raises(InvalidEndpointError, match="must start with http:// or https://") as info:
        GPT().endpoint = url
    assert f"'http://{url}'" in str(info.value)


def test_non_string_endpoint_raises() -> None:
    with pytest.raises(InvalidEndpointError):
        GPT().endpoint = 8080  # type: ignore[assignment]


@pytest.mark.parametrize("suffix", ["", "/"])
def test_trailing_slash_or_not_reaches_chat_completions(
    server: LoopbackServer, suffix: str
) -> None:
    gpt = GPT()
    gpt.endpoint = server.url + suffix
    gpt.api_key = TEST_KEY
    assert gpt.endpoint == server.url
    gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert [r.path for r in server.chat_requests] == ["/v1/chat/completions"]


def test_openai_env_key_is_not_sent_to_a_custom_endpoint(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-openai-key-000111")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-should-not-leak")
    gpt = GPT()
    gpt.endpoint = server.url
    gpt.chat_completion("gpt-4o-mini", "", "hi")
    headers = server.chat_requests[0].headers
    assert "authorization" not in headers
    assert "openai-organization" not in headers
    assert all("sk-env-openai-key-000111" not in v for v in headers.values())


def test_missing_key_for_openai_is_a_clear_error_before_sending() -> None:
    from moodlemate.ai import MissingAPIKeyError

    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        GPT().chat_completion("gpt-4o-mini", "", "hi")


class _KeyedLoopback(OpenAIProvider):
    """A provider whose own service is the loopback server, with a key variable of its own."""

    name = "keyed"
    default_endpoint = "http://127.0.0.1:9/v1"
    key_env = "KEYED_API_KEY"
    key_prefixes = ("kd-",)
    hosts = ("127.0.0.1",)


@pytest.mark.all_plugins  # a registry of its own: no pin applies
@pytest.mark.parametrize(
    ("key", "why"),
    [("kd-secret-value-123456\n", "whitespace"), ("sk-secret-value-123456", "start with")],
)
def test_a_bad_key_from_the_environment_is_refused_before_sending(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, key: str, why: str
) -> None:
    plugins = PluginRegistry(group="moodlemate.ai.none")
    plugins.register_provider(_KeyedLoopback())
    monkeypatch.setenv("KEYED_API_KEY", key)
    gpt = GPT("keyed", endpoint=server.url, plugins=plugins)
    with pytest.raises(InvalidAPIKeyError) as info:
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert "KEYED_API_KEY" in str(info.value)
    assert why in str(info.value)
    assert key.strip() not in str(info.value)
    assert server.chat_requests == []
    monkeypatch.setenv("KEYED_API_KEY", "kd-secret-value-123456")
    gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert server.chat_requests[0].headers["authorization"] == "Bearer kd-secret-value-123456"
