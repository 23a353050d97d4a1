"""Named request options and the model rules for them: each option reaches the wire under
its own name, values out of range and options a model refuses fail before sending, and the
test server (taking the same rules from the provider) refuses what the real API refuses."""

from __future__ import annotations

import logging

import pytest
from moodlemate.ai import (
    GPT,
    AudioPart,
    BadRequestError,
    FilePart,
    ImagePart,
    Message,
    Options,
    TextPart,
    UnsupportedInputError,
    ValidationError,
)
from moodlemate.ai.testing import LoopbackServer
from support import pdf_bytes, png_bytes, wav_bytes

TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CLASSIC = {
    "top_p": 0.5,
    "seed": 7,
    "stop": ["END", "STOP"],
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "user": "user-1",
    "metadata": {"team": "docs"},
    "store": False,
    "service_tier": "default",
    "prompt_cache_key": "faq-v1",
    "parallel_tool_calls": False,
    "tool_choice": {"type": "function", "function": {"name": "weather"}},
    "tools": [TOOL],
    "response_format": {"type": "json_object"},
}


def test_every_classic_option_reaches_the_wire(gpt: GPT, server: LoopbackServer) -> None:
    gpt.complete("gpt-4o", "Be brief.", "Weather in Oslo?", options=CLASSIC)
    body = server.chat_requests[-1].body
    assert {k: body[k] for k in CLASSIC} == CLASSIC
    assert body["temperature"] == 0.7


def test_options_as_a_value_and_as_a_mapping_send_the_same(
    gpt: GPT, server: LoopbackServer
) -> None:
    gpt.complete("gpt-4o", user_message="x", options=Options(seed=1, stop=("a",), tools=(TOOL,)))
    gpt.complete("gpt-4o", user_message="x", options={"seed": 1, "stop": ["a"], "tools": [TOOL]})
    first, second = (r.body for r in server.chat_requests)
    assert first == second
    assert first["stop"] == ["a"]
    assert first["tools"] == [TOOL]


def test_reasoning_options_reach_the_wire(gpt: GPT, server: LoopbackServer) -> None:
    gpt.complete(
        "o3-mini",
        "Think.",
        "2+2?",
        max_tokens=50,
        options={"reasoning_effort": "low", "seed": 3, "tools": [TOOL], "tool_choice": "auto"},
    )
    body = server.chat_requests[-1].body
    assert body["reasoning_effort"] == "low"
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body
    assert (body["seed"], body["tool_choice"]) == (3, "auto")


def test_stream_sends_options_too(gpt: GPT, server: LoopbackServer) -> None:
    text = "".join(gpt.stream("gpt-4o-mini", user_message="hi", options={"seed": 5}))
    assert text == "Echo: hi"
    body = server.chat_requests[-1].body
    assert (body["seed"], body["stream"]) == (5, True)


def test_extra_passes_fields_through_over_the_named_ones(gpt: GPT, server: LoopbackServer) -> None:
    gpt.complete("gpt-4o", user_message="x", options={"seed": 1}, extra={"seed": 2, "n": 1})
    body = server.chat_requests[-1].body
    assert (body["seed"], body["n"]) == (2, 1)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"top_p": 1.5}, "top_p must be between 0 and 1"),
        ({"top_p": float("nan")}, "top_p must be between"),
        ({"presence_penalty": 3}, "presence_penalty must be between -2 and 2"),
        ({"seed": "7"}, "seed must be an int"),
        ({"seed": True}, "seed must be an int"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "1 to 4"),
        ({"stop": ""}, "stop must be"),
        ({"logit_bias": {"50256": 101}}, "between -100 and 100"),
        ({"logit_bias": {"dog": 1}}, "token ids"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "at most 16"),
        ({"metadata": {"k": "v" * 513}}, "at most 512"),
        ({"store": "yes"}, "store must be True or False"),
        ({"service_tier": "gold"}, "service_tier must be one of"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort must be one of"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "function name"),
        ({"tools": [TOOL, TOOL]}, "a second tool"),
        ({"tool_choice": "required"}, "needs tools"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "not among",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "json_schema with a name"),
        ({"modalities": ["text", "audio"]}, "need audio"),
        ({"colour": "red"}, "unknown option 'colour'"),
    ],
)
def test_bad_option_values_fail_before_sending(
    gpt: GPT, server: LoopbackServer, options: dict[str, object], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        gpt.complete("gpt-4o", user_message="x", options=options)
    assert server.chat_requests == []


@pytest.mark.parametrize(
    ("model", "options", "parts", "match"),
    [
        ("o3-mini", {"top_p": 0.5}, (), "reasoning model and does not accept top_p"),
        ("gpt-5", {"logit_bias": {"1": 1}}, (), "does not accept logit_bias"),
        ("o1", {"frequency_penalty": 1}, (), "does not accept frequency_penalty"),
        ("gpt-4o", {"reasoning_effort": "low"}, (), "not a reasoning model"),
        ("o1-mini", {"tools": [TOOL]}, (), "does not take tools"),
        ("o1-mini", {"response_format": {"type": "json_object"}}, (), "response_format"),
        ("gpt-3.5-turbo", None, ("image",), "does not take image input"),
        ("o3-mini", None, ("image",), "does not take image input"),
        ("gpt-4", None, ("file",), "does not take file input"),
        ("gpt-4o", None, ("audio",), "does not take audio input"),
        (
            "gpt-4o-mini",
            {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
            (),
            "does not produce audio",
        ),
    ],
)
def test_what_a_model_refuses_is_refused_before_sending(
    gpt: GPT,
    server: LoopbackServer,
    model: str,
    options: dict[str, object] | None,
    parts: tuple[str, ...],
    match: str,
) -> None:
    built = {
        "image": lambda: ImagePart(png_bytes()),
        "file": lambda: FilePart(pdf_bytes()),
        "audio": lambda: AudioPart(wav_bytes()),
    }
    content = (TextPart("x"), *(built[p]() for p in parts))
    with pytest.raises(UnsupportedInputError, match=match):
        gpt.complete(model, messages=[Message("user", content)], options=options)
    assert server.chat_requests == []


def test_models_that_take_the_input_send_it(gpt: GPT, server: LoopbackServer) -> None:
    gpt.complete("gpt-4o-mini", messages=[Message("user", (ImagePart(png_bytes()),))])
    gpt.complete("gpt-4o-audio-preview", messages=[Message("user", (AudioPart(wav_bytes()),))])
    gpt.complete("gpt-4.1", messages=[Message("user", (FilePart(pdf_bytes()),))])
    gpt.complete("openrouter-style/vendor-model", user_message="x", options={"top_p": 0.1})
    assert len(server.chat_requests) == 4


@pytest.mark.parametrize(
    ("model", "field", "value", "param"),
    [
        ("o3-mini", "top_p", 0.5, "top_p"),
        ("gpt-4o", "reasoning_effort", "low", "reasoning_effort"),
        ("o1-mini", "tools", [TOOL], "tools"),
    ],
)
def test_the_server_refuses_what_the_rules_refuse(
    gpt: GPT, server: LoopbackServer, model: str, field: str, value: object, param: str
) -> None:
    """Sent through ``extra`` (unchecked by the client), the server's 400 names the field."""
    with pytest.raises(BadRequestError) as caught:
        gpt.complete(model, user_message="x", max_tokens=None, extra={field: value})
    assert param in str(caught.value)
    assert len(server.chat_requests) == 1


def test_the_server_refuses_bad_turns(gpt: GPT, server: LoopbackServer) -> None:
    unanswered = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ]
    with pytest.raises(BadRequestError, match="c1"):
        gpt.complete("gpt-4o", extra={"messages": unanswered}, user_message="x")
    image_in_system = [
        {
            "role": "system",
            "content": [{"type": "image_url", "image_url": {"url": "https://a/b.png"}}],
        }
    ]
    with pytest.raises(BadRequestError, match="only allowed for messages with role 'user'"):
        gpt.complete("gpt-4o", extra={"messages": image_in_system}, user_message="x")
    image_on_text_model = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://a/b.png"}}],
        }
    ]
    with pytest.raises(BadRequestError, match="only supported by certain models"):
        gpt.complete("gpt-3.5-turbo", extra={"messages": image_on_text_model}, user_message="x")


def test_system_text_folds_into_a_user_turn_with_parts(
    gpt: GPT, server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    """o1-preview takes no system role (and no image): the system text becomes the first text
    part of the user turn, verbatim."""
    with caplog.at_level(logging.INFO, "moodlemate.ai"):
        gpt.complete(
            "o1-preview",
            "Be brief.",
            messages=[Message("user", (TextPart("Hi"), TextPart(" there")))],
        )
    (user,) = server.chat_requests[-1].body["messages"]
    assert user == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Be brief."},
            {"type": "text", "text": "Hi"},
            {"type": "text", "text": " there"},
        ],
    }
