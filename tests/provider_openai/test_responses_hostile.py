"""A Responses event stream from a server that lies or misbehaves: what the user saw is what
the completion says, unknown events pass by, and every bound holds."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from adversarial import AdversarialServer, sse_events
from moodlemate.ai import GPT, ResponseTooLargeError, StreamInterruptedError
from support import FAST_RETRY, TEST_KEY


def _event(kind: str, **fields: Any) -> bytes:
    return b"data: " + json.dumps({"type": kind, **fields}).encode() + b"\n\n"


def _delta(text: str) -> bytes:
    return _event("response.output_text.delta", delta=text)


def _completed(text: str, usage: dict[str, Any] | None = None) -> bytes:
    response = {
        "id": "resp_hostile",
        "object": "response",
        "status": "completed",
        "model": "o3-pro",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text}],
            }
        ],
        "usage": usage or {"input_tokens": 5, "output_tokens": 2},
    }
    return _event("response.completed", response=response)


def _stream(*events: bytes) -> tuple[list[str], Any]:
    with AdversarialServer({"/responses": sse_events(*events)}) as server:
        gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
        stream = gpt.stream("o3-pro", user_message="hi")
        pieces = list(stream)
        return pieces, stream.completion


def test_the_completion_holds_the_text_that_was_streamed() -> None:
    pieces, completion = _stream(_delta("hel"), _delta("lo"), _completed("something else"))
    assert "".join(pieces) == "hello"
    assert completion.text == "hello"


def test_unknown_events_and_events_after_the_end_pass_by() -> None:
    pieces, completion = _stream(
        _event("response.brand_new_kind", payload=[1, 2, 3]),
        b'data: {"type": 42}\n\n',
        b'data: {"no_type": true}\n\n',
        _delta("hi"),
        _completed("hi"),
        _delta(" again"),
        _completed("hi again", {"input_tokens": 9000, "output_tokens": 9000}),
    )
    assert "".join(pieces) == "hi"
    assert completion.text == "hi"
    assert completion.usage.prompt_tokens == 5


def test_a_stream_that_never_completes_is_interrupted() -> None:
    with pytest.raises(StreamInterruptedError, match=r"no response\.completed"):
        _stream(_delta("hi"), _delta(" there"))


def test_a_two_megabyte_delta_is_refused() -> None:
    with pytest.raises(ResponseTooLargeError, match="max_event_bytes"):
        _stream(_delta("x" * 2_000_000), _completed("x"))


def test_usage_a_request_could_not_produce_is_not_priced_as_reported() -> None:
    """10**12 tokens claimed for "hi": the counts are held to what the request could produce
    (or dropped as unknown), never priced as claimed."""
    lie = {"input_tokens": 10**12, "output_tokens": 10**12}
    _, completion = _stream(_delta("hi"), _completed("hi", lie))
    assert completion.usage.prompt_tokens < 10**6
    assert completion.usage.completion_tokens < 10**6
    assert completion.cost is None or completion.cost < Decimal("10")
