"""Which key goes where (moodlemate.ai._credentials): one test per row of its table, the
documented key-then-endpoint order, and a snapshot that holds under concurrent changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moodlemate.ai import GPT, AuthenticationError, InvalidAPIKeyError, MissingAPIKeyError
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.testing import LoopbackServer
from moodlemate.providers.openai import OpenAIProvider
from support import FAST_RETRY, TEST_KEY

OR_KEY = "sk-or-v1-5e2a9c0d7b1f4e3a8c6d"
ENV_KEY = "sk-proj-from-the-environment-77aa11"


@pytest.fixture
def keyed() -> Iterator[LoopbackServer]:
    """A server that wants TEST_KEY, as a vLLM or a proxy started with a key does."""
    with LoopbackServer(api_key=TEST_KEY) as srv:
        yield srv


def auth(server: LoopbackServer) -> list[str | None]:
    return [r.headers.get("authorization") for r in server.chat_requests]


# -- a key given in code follows the instance ------------------------------------------------


def test_the_documented_order_key_first_then_endpoint_sends_the_key(
    keyed: LoopbackServer,
) -> None:
    gpt = GPT()
    gpt.api_key = TEST_KEY
    gpt.endpoint = keyed.url + "/"
    text = gpt.chat_completion(model="gpt-4o-mini", system_message="Be brief.", user_message="Hi")
    assert text == "Echo: Hi"
    assert auth(keyed) == [f"Bearer {TEST_KEY}"]
    assert gpt.api_key == TEST_KEY


def test_endpoint_first_then_key_and_the_constructor_send_the_key(keyed: LoopbackServer) -> None:
    gpt = GPT()
    gpt.endpoint = keyed.url
    gpt.api_key = TEST_KEY
    gpt.chat_completion("gpt-4o-mini", "", "Hi")
    GPT(api_key=TEST_KEY, endpoint=keyed.url).chat_completion("gpt-4o-mini", "", "Hi")
    assert auth(keyed) == [f"Bearer {TEST_KEY}"] * 2


def test_the_key_follows_when_the_endpoint_changes_between_calls(keyed: LoopbackServer) -> None:
    with LoopbackServer(api_key=TEST_KEY) as other:
        gpt = GPT(api_key=TEST_KEY, endpoint=keyed.url, retry=FAST_RETRY)
        gpt.chat_completion("gpt-4o-mini", "", "one")
        gpt.endpoint = other.url
        "".join(gpt.stream("gpt-4o-mini", "", "two"))
        assert auth(keyed) == [f"Bearer {TEST_KEY}"]
        assert auth(other) == [f"Bearer {TEST_KEY}"]


def test_the_openrouter_provider_sends_its_key_to_a_proxy_endpoint() -> None:
    with LoopbackServer(api_key=OR_KEY) as proxy:
        gpt = GPT(provider="openrouter")
        gpt.api_key = OR_KEY
        gpt.endpoint = proxy.url
        assert gpt.provider.name == "openrouter"
        gpt.chat_completion("openai/gpt-4o-mini", "", "Hi")
        assert auth(proxy) == [f"Bearer {OR_KEY}"]


@pytest.mark.parametrize("key", ["ollama", "token-abc123", "lm-studio", "EMPTY"])
def test_local_servers_own_key_formats_set_before_the_endpoint_work(key: str) -> None:
    with LoopbackServer(api_key=key) as local:
        gpt = GPT()
        gpt.api_key = key  # not an OpenAI key: not judged until the endpoint is known
        gpt.endpoint = local.url
        assert gpt.chat_completion("llama3.2", "", "Hi") == "Echo: Hi"
        assert auth(local) == [f"Bearer {key}"]


# -- format checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("sk-abc\tdef-0123456789", "whitespace"),
        ("sk-abc\x00def-0123456789", "printable"),
        ("sk-abcdéf-0123456789", "printable ASCII"),
        ("sk-" + "a" * 10_000_000, "characters long"),
    ],
)
def test_the_setter_always_rejects_what_no_server_accepts(key: str, why: str) -> None:
    gpt = GPT()  # nothing known about the endpoint yet: these fail all the same
    with pytest.raises(InvalidAPIKeyError, match=why) as info:
        gpt.api_key = key
    assert len(str(info.value)) < 200
    assert gpt.api_key is None


@pytest.mark.parametrize(("provider", "bare"), [("openai", "sk-"), ("openrouter", "sk-or-")])
def test_a_bare_prefix_is_refused_at_assignment_when_the_provider_is_known(
    provider: str, bare: str
) -> None:
    gpt = GPT(provider)
    with pytest.raises(InvalidAPIKeyError, match="truncated"):
        gpt.api_key = bare


def test_a_key_set_before_the_endpoint_is_judged_before_the_first_request(
    keyed: LoopbackServer,
) -> None:
    gpt = GPT()
    gpt.api_key = "sk-"  # api.openai.com would be the destination: checked before sending
    with pytest.raises(InvalidAPIKeyError, match="truncated"):
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
    gpt.api_key = "ollama"
    with pytest.raises(InvalidAPIKeyError, match="'sk-'"):
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
    # Moving to OpenRouter's own service with an OpenAI key: refused at the assignment.
    gpt.api_key = "sk-proj-an-openai-key-0123456789"
    with pytest.raises(InvalidAPIKeyError, match="'sk-or-'"):
        gpt.endpoint = "https://openrouter.ai/api/v1"
    assert gpt.provider.name == "openai"  # the refused change was not applied


# -- keys from the environment ----------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint", ["http://api.openai.com/v1", "HTTP://API.OpenAI.com/v1", "Http://api.OPENAI.com"]
)
def test_an_env_key_never_goes_over_plain_http_whatever_the_case(
    monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    gpt = GPT(endpoint=endpoint)
    assert gpt.api_key is None
    with pytest.raises(MissingAPIKeyError, match="plain http") as info:
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
    assert ENV_KEY not in str(info.value)
    assert GPT(endpoint="HTTPS://API.OpenAI.com/v1").api_key == ENV_KEY


def test_openai_base_url_is_the_endpoint_and_may_receive_openai_api_key(
    keyed: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LoopbackServer(api_key=ENV_KEY) as vllm:
        monkeypatch.setenv("OPENAI_BASE_URL", vllm.url + "/")
        monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
        gpt = GPT()
        assert gpt.endpoint == vllm.url
        assert gpt.chat_completion("gpt-4o-mini", "", "Hi") == "Echo: Hi"
        assert auth(vllm) == [f"Bearer {ENV_KEY}"]
        # MOODLEMATE_ENDPOINT ranks above OPENAI_BASE_URL, and does not get the env key.
        monkeypatch.setenv("MOODLEMATE_ENDPOINT", keyed.url)
        ranked = GPT(retry=FAST_RETRY)
        assert ranked.endpoint == keyed.url
        assert ranked.api_key is None


def test_openai_base_url_outranks_a_config_files_endpoint_and_that_files_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with LoopbackServer(api_key=ENV_KEY) as vllm, LoopbackServer() as filed:
        Path("moodlemate.toml").write_text(
            f'endpoint = "{filed.url}"\napi_key_env = "FILE_KEY"\n', encoding="utf-8"
        )
        Path("moodlemate.toml").chmod(0o600)
        monkeypatch.setenv("FILE_KEY", "file-key-0123456789")
        monkeypatch.setenv("OPENAI_BASE_URL", vllm.url)
        monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
        gpt = GPT()
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
        assert auth(vllm) == [f"Bearer {ENV_KEY}"]  # the file's key stayed with its endpoint
        assert filed.chat_requests == []


@pytest.mark.all_plugins  # a registry of its own: no pin applies
def test_openai_base_url_is_the_openai_providers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert GPT("openrouter").endpoint == "https://openrouter.ai/api/v1"

    class Lab(OpenAIProvider):  # a subclass for another service inherits neither variable
        name = "lab"
        default_endpoint = "http://127.0.0.1:8/v1"
        requires_key = False

    plugins = PluginRegistry(group="moodlemate.ai.none")
    plugins.register_provider(Lab())
    assert GPT("lab", plugins=plugins).endpoint == "http://127.0.0.1:8/v1"


def test_a_bad_openai_base_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from moodlemate.ai import InvalidEndpointError

    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:8000/v1")
    with pytest.raises(InvalidEndpointError, match="OPENAI_BASE_URL"):
        GPT().chat_completion("gpt-4o-mini", "", "Hi")


def test_an_env_key_withheld_from_a_custom_endpoint_is_named_in_the_servers_401(
    keyed: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    gpt = GPT(endpoint=keyed.url, retry=FAST_RETRY)
    with pytest.raises(AuthenticationError) as info:
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
    message = str(info.value)
    assert "OPENAI_API_KEY is set but was not sent" in message
    assert "GPT.api_key" in message
    assert TEST_KEY not in message
    assert auth(keyed) == [None]
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY is set"):
        "".join(gpt.stream("gpt-4o-mini", "", "Hi"))


def test_openrouter_on_a_proxy_with_its_env_key_says_how_to_send_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", OR_KEY)
    with LoopbackServer(api_key=OR_KEY) as proxy:
        gpt = GPT(provider="openrouter", endpoint=proxy.url, retry=FAST_RETRY)
        with pytest.raises(AuthenticationError, match="OPENROUTER_API_KEY is set but was not"):
            gpt.chat_completion("openai/gpt-4o-mini", "", "Hi")
        gpt.api_key = OR_KEY  # the documented way to send it there
        gpt.chat_completion("openai/gpt-4o-mini", "", "Hi")
        assert auth(proxy) == [None, f"Bearer {OR_KEY}"]


def test_moodlemate_api_key_goes_with_moodlemate_endpoint_only(
    keyed: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODLEMATE_API_KEY", TEST_KEY)
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", keyed.url)
    gpt = GPT(retry=FAST_RETRY)
    gpt.chat_completion("gpt-4o-mini", "", "Hi")
    with LoopbackServer() as elsewhere:
        gpt.endpoint = elsewhere.url  # moved away in code: the environment's key stays behind
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
        assert GPT(endpoint=elsewhere.url).api_key is None  # an argument chose the endpoint
        assert [r.headers.get("authorization") for r in elsewhere.chat_requests] == [None]
    assert auth(keyed) == [f"Bearer {TEST_KEY}"]


# -- routed calls -------------------------------------------------------------------------------


@pytest.mark.all_plugins  # a registry of its own: no pin applies
def test_a_routed_call_carries_its_own_providers_key_never_the_instances(
    keyed: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LoopbackServer() as foreign:

        class Foreign(OpenAIProvider):
            name = "foreign"
            default_endpoint = foreign.url
            key_env = "FOREIGN_API_KEY"
            requires_key = False

        plugins = PluginRegistry(group="moodlemate.ai.none")
        plugins.register_provider(OpenAIProvider())
        plugins.register_provider(Foreign())
        gpt = GPT("openai", endpoint=keyed.url, api_key=TEST_KEY, plugins=plugins)
        gpt.chat_completion("foreign:some-model", "", "Hi")
        monkeypatch.setenv("FOREIGN_API_KEY", "fk-foreign-0123456789")
        gpt.chat_completion("foreign:some-model", "", "Hi")
        assert auth(foreign) == [None, "Bearer fk-foreign-0123456789"]
        assert all(TEST_KEY.encode() not in r.raw for r in foreign.requests)
        assert keyed.chat_requests == []


def test_a_routed_call_to_openrouter_gets_no_openai_key(keyed: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=keyed.url, api_key=TEST_KEY)
    with pytest.raises(MissingAPIKeyError, match="OPENROUTER_API_KEY"):
        gpt.chat_completion("openrouter:openai/gpt-4o-mini", "", "Hi")
    assert keyed.requests == []


# -- the snapshot -------------------------------------------------------------------------------


def test_a_call_sees_the_old_or_the_new_endpoint_key_and_headers_never_a_mix() -> None:
    """16 threads call while another switches the instance between two servers, each with
    its own key and header: every request a server saw carried that server's own pair."""
    key_a, key_b = "sk-server-a-0123456789abcdef", "sk-server-b-fedcba9876543210"
    with LoopbackServer(api_key=key_a) as a, LoopbackServer(api_key=key_b) as b:
        gpt = GPT(retry=FAST_RETRY)
        gpt.configure(endpoint=a.url, api_key=key_a, headers={"X-Server": "a"})
        # Until each server has seen 50 requests (at least 3 s; at most 60 s on a loaded box).
        started = time.monotonic()
        failures: list[BaseException] = []
        flips = 0

        def running() -> bool:
            elapsed = time.monotonic() - started
            enough = len(a.requests) > 50 and len(b.requests) > 50
            return not failures and elapsed < 60.0 and (elapsed < 3.0 or not enough)

        def flipper() -> None:
            nonlocal flips
            while running():
                gpt.configure(endpoint=b.url, api_key=key_b, headers={"X-Server": "b"})
                time.sleep(0.001)  # each setting stands long enough for calls to catch it
                gpt.configure(endpoint=a.url, api_key=key_a, headers={"X-Server": "a"})
                time.sleep(0.001)
                flips += 2

        def caller() -> None:
            while running():
                try:
                    gpt.chat_completion("gpt-4o-mini", "", "Hi")
                except Exception as exc:  # any failure is a cross-keyed request
                    failures.append(exc)
                    return

        threads = [threading.Thread(target=caller) for _ in range(16)]
        threads.append(threading.Thread(target=flipper))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        seen = {
            "a": [(r.headers.get("authorization"), r.headers.get("x-server")) for r in a.requests],
            "b": [(r.headers.get("authorization"), r.headers.get("x-server")) for r in b.requests],
        }
    assert flips > 100
    assert len(seen["a"]) > 50
    assert len(seen["b"]) > 50
    assert set(seen["a"]) == {(f"Bearer {key_a}", "a")}
    assert set(seen["b"]) == {(f"Bearer {key_b}", "b")}
    assert failures == []


def test_headers_given_in_code_follow_the_instance_and_a_files_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with LoopbackServer() as first, LoopbackServer() as second:
        gpt = GPT(endpoint=first.url, headers={"X-Gateway": "code-0123456789"})
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
        gpt.endpoint = second.url
        gpt.chat_completion("gpt-4o-mini", "", "Hi")
        assert [r.headers.get("x-gateway") for r in (*first.requests, *second.requests)] == [
            "code-0123456789"
        ] * 2
        Path("moodlemate.toml").write_text(
            f'endpoint = "{first.url}"\n[headers]\nX-Gateway = "file-0123456789"\n',
            encoding="utf-8",
        )
        filed = GPT()
        filed.chat_completion("gpt-4o-mini", "", "Hi")
        filed.endpoint = second.url
        filed.chat_completion("gpt-4o-mini", "", "Hi")
        assert first.requests[-1].headers.get("x-gateway") == "file-0123456789"
        assert "x-gateway" not in second.requests[-1].headers
