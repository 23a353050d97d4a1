"""count_tokens equals tiktoken's own count, with the right encoding per model family."""

from __future__ import annotations

import pytest
from moodlemate.ai import GPT
from support import tiktoken_encoding

TEXTS = [
    "",
    "Hello, world!",
    "東京は日本の首都です。",
    "emoji: 🎉🚀👩‍💻",
    "def f(x):\n    return x ** 2  # square\n",
    "<|endoftext|> is plain text here",
]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o1-mini-2024-09-12", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
    ],
)
@pytest.mark.parametrize("text", TEXTS)
def test_count_matches_tiktoken(model: str, encoding: str, text: str) -> None:
    expected = len(tiktoken_encoding(encoding).encode(text, disallowed_special=()))
    assert GPT().count_tokens(text, model) == expected


def test_default_model_is_gpt_4o_mini() -> None:
    text = "a" * 1000 + " some words"
    expected = len(tiktoken_encoding("o200k_base").encode(text))
    assert GPT().count_tokens(text) == expected


def test_encodings_differ_so_the_choice_matters() -> None:
    text = "東京は日本の首都です。" * 5
    assert GPT().count_tokens(text, "gpt-4o") != GPT().count_tokens(text, "gpt-4")


def test_non_string_text_is_rejected() -> None:
    from moodlemate.ai import ValidationError

    with pytest.raises(ValidationError):
        GPT().count_tokens(None)  # type: ignore[arg-type]
