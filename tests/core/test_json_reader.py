"""What servers send is parsed the same with and without the ``fast`` extra (orjson).

CI runs the suite once with orjson installed (the SDK-transport pass) and once without (the
default pass), so every test that reads a reply runs on both parsers; the corpus here is what
the two disagree on, where the standard library's reading must win.
"""

from __future__ import annotations

import importlib.util
import json
import math
from typing import Any

import pytest
from moodlemate.ai import GPT
from moodlemate.ai._json_reader import parser
from moodlemate.ai.plugin import json_loads
from moodlemate.ai.testing import LoopbackServer, Reply
from support import TEST_KEY

READ_BY_BOTH: list[str | bytes] = [
    '{"a": 1, "b": [true, false, null], "c": "ü€😀"}',
    '{"a": 1, "a": 2}',  # a repeated key: the last wins
    '{"n": NaN, "i": Infinity, "m": -Infinity}',  # JSON has none; json reads them
    '{"small": -9223372036854775808, "large": 18446744073709551615}',  # 64 bits, both ends
    '{"id": "chatcmpl-1234567890123456789012", "n": 5}',
    '{"s": "\\ud800 lone surrogate"}',
    "[" * 200 + "]" * 200,
    '{"x": 1.5e308, "y": -0.0, "z": 1e-400}',
    '"just a string"',
    "  \n 42 \t",
    '{"a": 1}'.encode("utf-16"),  # bytes json detects as UTF-16
    '{"k": "v"}'.encode("utf-8-sig"),
]

REFUSED_BY_BOTH: list[str | bytes] = [
    "",
    "{",
    '{"a": 1,}',
    "[1, 2] trailing",
    b"\xff\xfe\x00garbage",
    "{'single': 'quotes'}",
]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_the_parser_in_use_is_the_one_installed() -> None:
    expected = "orjson" if importlib.util.find_spec("orjson") else "json"
    assert parser() == expected


@pytest.mark.parametrize("document", READ_BY_BOTH, ids=range(len(READ_BY_BOTH)))
def test_documents_are_read_as_the_standard_library_reads_them(document: str | bytes) -> None:
    assert _same(json_loads(document), json.loads(document))


@pytest.mark.parametrize("document", REFUSED_BY_BOTH, ids=range(len(REFUSED_BY_BOTH)))
def test_documents_the_standard_library_refuses_are_refused(document: str | bytes) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        json.loads(document)
    with pytest.raises(ValueError, match=r"\w"):
        json_loads(document)


def test_an_integer_beyond_64_bits_is_a_number_beyond_them_on_either_parser() -> None:
    """orjson reads it as a float, json as the exact integer; through int(), as every count
    is read, both are at least 2**64, far past any plausibility bound."""
    value = json_loads('{"prompt_tokens": 123456789012345678901234567890}')["prompt_tokens"]
    assert int(value) >= 2**64
    assert int(value) == pytest.approx(123456789012345678901234567890, rel=1e-15)


def test_nesting_too_deep_for_either_is_the_recursion_error_callers_expect() -> None:
    document = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json_loads(document)


def test_a_reply_and_a_stream_read_the_same_on_either_parser() -> None:
    """Through the whole stack: a reply whose usage carries a count beyond 64 bits (a lying
    server) is judged by the same rules whichever parser read it."""
    with LoopbackServer(api_key=TEST_KEY) as server:
        gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY)
        server.enqueue(Reply(text="naïve ☃ 😀"))
        assert gpt.chat_completion("gpt-4o-mini", "", "hi") == "naïve ☃ 😀"
        server.enqueue(Reply(text="streamed ☃ 😀"))
        assert "".join(gpt.stream("gpt-4o-mini", "", "hi")) == "streamed ☃ 😀"
