"""Inputs that used to slip past validation: each is now a ValidationError raised before
anything is sent, and the server's request log stays empty."""

from __future__ import annotations

import asyncio

import pytest
from moodlemate.ai import GPT, ChatRequest, InvalidEndpointError, Message, ValidationError
from moodlemate.ai.testing import LoopbackServer
from support import FAST_RETRY, TEST_KEY

HOSTILE_MODELS = [
    pytest.param("gpt-4o\x00mini", id="nul"),
    pytest.param("gpt-4o\r\nX-Evil: 1", id="crlf-header-injection"),
    pytest.param("gpt-4o\nmini", id="inner-newline"),
    pytest.param("gpt-4o\tmini", id="inner-tab"),
    pytest.param("gpt-4o\u200bmini", id="zero-width-space"),
    pytest.param("gpt\u20284o", id="line-separator"),
    pytest.param("\ufeffgpt-4o", id="byte-order-mark"),
    pytest.param("g" * 100_001, id="100k-characters"),
]


@pytest.mark.parametrize("model", HOSTILE_MODELS)
def test_a_hostile_model_name_is_refused_on_every_call_path(
    gpt: GPT, server: LoopbackServer, model: str
) -> None:
    calls = [
        lambda: gpt.chat_completion(model, "", "hi"),
        lambda: gpt.complete(model, "", "hi"),
        lambda: next(gpt.stream(model, "", "hi")),
        lambda: asyncio.run(gpt.achat_completion(model, "", "hi")),
        lambda: gpt.send(ChatRequest(model=model, messages=(Message("user", "hi"),))),
        lambda: gpt.count_tokens("hi", model),
    ]
    for call in calls:
        with pytest.raises(ValidationError) as caught:
            call()
        assert len(str(caught.value)) < 300  # the message never quotes a 100k-char name
        assert "\n" not in str(caught.value)
    assert server.requests == []


@pytest.mark.parametrize(
    "model", ["llama3:8b", "openai/gpt-4o:free", "/models/Qwen2.5-7B", "m" * 1024]
)
def test_real_model_names_still_pass(gpt: GPT, server: LoopbackServer, model: str) -> None:
    assert gpt.chat_completion(model, "", "hi") == "Echo: hi"
    assert server.chat_requests[-1].body["model"] == model


@pytest.mark.parametrize(
    "temperature", [10**400, -(10**400), 10**5000], ids=["1e400", "-1e400", "1e5000"]
)
def test_an_astronomic_temperature_is_a_validation_error_not_an_overflow(
    gpt: GPT, server: LoopbackServer, temperature: int
) -> None:
    with pytest.raises(ValidationError, match="between 0 and 2"):
        gpt.chat_completion("gpt-4o-mini", "", "hi", temperature=temperature)
    with pytest.raises(ValidationError, match="between 0 and 2"):
        gpt.send(
            ChatRequest(
                model="gpt-4o-mini", messages=(Message("user", "hi"),), temperature=temperature
            )
        )
    assert server.requests == []


BAD_ENDPOINTS = [
    pytest.param("http://127.0.0.1\x00.evil/v1", id="nul-in-host"),
    pytest.param("http://localhost:8000/v1\x00", id="nul-in-path"),
    pytest.param("http://" + "a" * 64 + ".example/v1", id="label-over-63"),
    pytest.param("http://" + ".".join(["a" * 63] * 4) + ".example/v1", id="host-over-253"),
    pytest.param("http://" + "ü" * 64 + ".example/v1", id="idna-label-over-63"),
    pytest.param("http://localhost:0/v1", id="port-0"),
    pytest.param("http://a..example/v1", id="empty-label"),
    pytest.param("http://exa$mple.com/v1", id="bad-host-character"),
]


@pytest.mark.parametrize("url", BAD_ENDPOINTS)
def test_an_endpoint_no_client_can_reach_is_refused_when_set(url: str) -> None:
    with pytest.raises(InvalidEndpointError):
        GPT(endpoint=url)
    gpt = GPT()
    with pytest.raises(InvalidEndpointError):
        gpt.endpoint = url
    assert "\x00" not in repr(gpt)


@pytest.mark.parametrize("url", [p for p in BAD_ENDPOINTS if "\x00" not in str(p.values[0])])
def test_an_unreachable_endpoint_from_the_environment_is_refused_with_its_name(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", url)
    with pytest.raises(InvalidEndpointError, match="MOODLEMATE_ENDPOINT"):
        GPT()


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:8080/v1",
        "http://bücher.example/v1",
        "http://my_gpu_box:8000/v1",
        "http://x.example./v1",
        "http://" + "a" * 63 + ".example/v1",
        "http://localhost:65535/v1",
    ],
)
def test_reachable_endpoints_still_pass(url: str) -> None:
    assert GPT(endpoint=url).endpoint == url


def test_a_valid_endpoint_still_reaches_the_server(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url + "/", api_key=TEST_KEY, retry=FAST_RETRY)
    assert gpt.chat_completion("gpt-4o-mini", "", "hi") == "Echo: hi"


def _nested(depth: int) -> list[object]:
    outer: list[object] = []
    inner = outer
    for _ in range(depth):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    return outer


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        pytest.param({"metadata": object()}, "cannot be sent as JSON", id="object"),
        pytest.param({"logit_bias": {"1": float("nan")}}, "cannot be sent as JSON", id="nan"),
        pytest.param({"x": {1, 2}}, "cannot be sent as JSON", id="set"),
        pytest.param({"deep": _nested(100_000)}, "nested too deeply", id="deep"),
    ],
)
def test_extra_that_json_cannot_carry_is_refused_before_sending(
    gpt: GPT, server: LoopbackServer, extra: dict[str, object], says: str
) -> None:
    calls = [
        lambda: gpt.complete("gpt-4o-mini", "", "hi", extra=extra),
        lambda: next(gpt.stream("gpt-4o-mini", "", "hi", extra=extra)),
        lambda: asyncio.run(gpt.acomplete("gpt-4o-mini", "", "hi", extra=extra)),
        lambda: gpt.send(
            ChatRequest(model="gpt-4o-mini", messages=(Message("user", "hi"),), extra=extra)
        ),
    ]
    for call in calls:
        with pytest.raises(ValidationError, match=says):
            call()
    assert server.requests == []
