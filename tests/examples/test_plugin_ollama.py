"""The example plugin package, installed (not editable) as a third-party package would be,
used by provider name and by its endpoint alone against the loopback server."""

from __future__ import annotations

from decimal import Decimal
from importlib.metadata import distribution
from pathlib import Path

import pytest
from moodlemate.ai import GPT
from moodlemate.ai._plugins import PluginRegistry, registry
from moodlemate.ai.testing import LoopbackServer, Reply
from moodlemate.providers.ollama import OllamaProvider
from moodlemate.providers.ollama.provider import endpoint_from_host
from support import REPO, TEST_KEY, tiktoken_encoding


def test_installed_as_a_package_with_its_entry_point() -> None:
    dist = distribution("moodlemate-ai-ollama")
    [entry_point] = [ep for ep in dist.entry_points if ep.group == "moodlemate.ai"]
    assert (entry_point.name, entry_point.value) == ("ollama", "moodlemate.providers.ollama.plugin")
    import moodlemate.providers.ollama as package

    installed = Path(package.__file__ or "").resolve()
    assert not installed.is_relative_to(REPO / "examples"), "installed editable, not as a package"
    entry = registry.entries()["ollama"]
    assert (entry.package, entry.version) == ("moodlemate-ai-ollama", dist.version)
    assert isinstance(entry.provider, OllamaProvider)


def test_by_provider_name(server: LoopbackServer) -> None:
    server.enqueue(Reply(text="Hi from llama.", prompt_tokens=12, completion_tokens=4))
    gpt = GPT(provider="ollama", endpoint=server.url)
    assert gpt.api_key is None
    assert gpt.chat_completion("llama3.2", "Be brief.", "Hi") == "Hi from llama."
    [request] = server.chat_requests
    assert request.body["model"] == "llama3.2"
    assert request.body["temperature"] == 0.7
    assert "authorization" not in request.headers  # no key needed, none sent
    result = gpt.last_result
    assert result is not None
    assert (result.provider, result.usage.prompt_tokens, result.cost) == ("ollama", 12, Decimal(0))
    assert gpt.ledger.as_dict()["total"]["cost"] == Decimal(0)


def test_default_endpoint_is_the_local_server() -> None:
    gpt = GPT(provider="ollama")
    assert gpt.endpoint == "http://localhost:11434/v1"
    assert gpt.provider.requires_key is False


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://localhost:11434/v1",
        "http://localhost:11434/v1/",
        "http://127.0.0.1:11434/v1",
        "http://[::1]:11434/v1",
        "http://LOCALHOST:11434",
    ],
)
def test_its_endpoint_alone_selects_it(endpoint: str) -> None:
    gpt = GPT(endpoint=endpoint)
    assert gpt.provider.name == "ollama"
    assert gpt.api_key is None


@pytest.mark.parametrize(
    "endpoint",
    ["http://localhost:8000/v1", "http://127.0.0.1:1234/v1", "http://example.com:11434/v1"],
)
def test_other_local_servers_are_not_taken_for_ollama(endpoint: str) -> None:
    assert GPT(endpoint=endpoint).provider.name == "openai"


def test_its_endpoint_alone_makes_the_call(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Port 11434 cannot be bound reliably in tests, so the server is named as Ollama's own
    tools name it: OLLAMA_HOST. A fresh registry builds the provider with it."""
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)  # must not leak to a local server
    plugins = PluginRegistry()
    server.enqueue(Reply(text="by endpoint"), Reply(text="by name"))

    by_endpoint = GPT(endpoint=server.url, plugins=plugins)
    assert by_endpoint.provider.name == "ollama"
    assert by_endpoint.chat_completion("qwen2.5:7b", "", "hi") == "by endpoint"

    by_name = GPT(provider="ollama", plugins=plugins)  # no endpoint: OLLAMA_HOST's server
    assert by_name.endpoint == server.url
    assert by_name.chat_completion("qwen2.5:7b", "", "hi") == "by name"

    assert [r.headers.get("authorization") for r in server.chat_requests] == [None, None]
    assert by_name.last_result is not None
    assert by_name.last_result.cost == Decimal(0)


def test_a_key_set_for_it_is_sent(server: LoopbackServer) -> None:
    """Behind an authenticating proxy: any well-formed token, sent only where it was set."""
    server.api_key = "proxy-token-123"
    server.enqueue(Reply(text="ok"))
    gpt = GPT(provider="ollama", endpoint=server.url, api_key="proxy-token-123")
    assert gpt.chat_completion("llama3.2", "", "hi") == "ok"
    assert server.chat_requests[0].headers["authorization"] == "Bearer proxy-token-123"


@pytest.mark.parametrize(
    ("host", "endpoint"),
    [
        ("example.com", "http://example.com:11434/v1"),
        ("0.0.0.0", "http://localhost:11434/v1"),
        ("0.0.0.0:5000", "http://localhost:5000/v1"),
        ("http://example.com", "http://example.com/v1"),
        ("https://ollama.example.com:8443/", "https://ollama.example.com:8443/v1"),
        ("[::1]:11434", "http://[::1]:11434/v1"),
        ("127.0.0.1:8080/proxy/", "http://127.0.0.1:8080/proxy/v1"),
    ],
)
def test_ollama_host_spellings(host: str, endpoint: str) -> None:
    assert endpoint_from_host(host) == endpoint


def test_token_count_is_an_o200k_estimate() -> None:
    """Ollama models bring their own tokenizers; the count is o200k_base's, for any model."""
    text = "Wie viele Tokens hat dieser Satz? 🦙"
    expected = len(tiktoken_encoding("o200k_base").encode_ordinary(text))
    gpt = GPT(provider="ollama")
    assert gpt.count_tokens(text, "llama3.2") == expected
    assert gpt.count_tokens(text, "gpt-4:latest") == expected  # not cl100k, whatever the name


def test_every_model_is_free_but_none_is_listed() -> None:
    provider = registry.get("ollama")
    price = provider.price("any-model:70b")
    assert price is not None
    assert (price.input, price.cached_input, price.output) == (Decimal(0),) * 3
    assert provider.models() == []


def test_a_malformed_ollama_host_is_reported_as_a_broken_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "localhost:eleven")
    plugins = PluginRegistry()
    with pytest.warns(RuntimeWarning, match="OLLAMA_HOST='localhost:eleven' is not host"):
        assert plugins.names() == ["openai", "openrouter"]
    assert "(package 'moodlemate-ai-ollama')" in plugins.failures["ollama"]


def test_images_go_inline_and_urls_are_refused(server: LoopbackServer) -> None:
    import base64

    from moodlemate.ai import ImagePart, Message, TextPart, UnsupportedInputError
    from support import pdf_bytes, png_bytes

    png = png_bytes(2, 2)
    gpt = GPT(provider="ollama", endpoint=server.url)
    question = Message("user", (TextPart("What is this?"), ImagePart(png)))
    assert gpt.complete("llava", messages=[question]).text == "Echo: What is this?"
    [request] = server.chat_requests
    assert request.body["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(png).decode(),
            "detail": "auto",
        },
    }
    from moodlemate.ai import FilePart

    for part in (ImagePart("https://example.org/a.png"), FilePart(pdf_bytes())):
        with pytest.raises(UnsupportedInputError, match="Ollama"):
            gpt.complete("llava", messages=[Message("user", (TextPart("x"), part))])
    assert len(server.chat_requests) == 1
