"""Canned OpenAI responses and deterministic texts the benchmarks send and count."""

from __future__ import annotations

import json
import random

MODEL = "gpt-4o-mini"
SYSTEM = "You are terse."
USER = "Name three primes."
TEMPERATURE = 0.7
REPLY = "2, 3 and 5."
STREAM_PIECES = 100
"""Content deltas in the long canned stream: a reply of about a hundred tokens."""
SHORT_STREAM_PIECES = 10
"""Content deltas in the short canned stream: 13 chunks with the role, finish and usage ones."""


def completion_json() -> str:
    """A /chat/completions body shaped like api.openai.com's, usage details included."""
    body = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": REPLY,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 21,
            "completion_tokens": 7,
            "total_tokens": 28,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    }
    return json.dumps(body, separators=(",", ":"))


def stream_text(pieces: int = STREAM_PIECES) -> str:
    """The text a canned stream of ``pieces`` deltas carries."""
    return "".join(f" word{i}" for i in range(pieces))


def stream_sse(pieces: int = STREAM_PIECES) -> str:
    """A whole chat.completion.chunk stream of ``pieces`` content deltas, with the role
    chunk first, then the finish chunk and include_usage's usage chunk."""
    base = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_bench",
    }

    def chunk(delta: dict[str, object], finish: str | None) -> dict[str, object]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], "usage": None}

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events += [chunk({"content": f" word{i}"}, None) for i in range(pieces)]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 21, "completion_tokens": pieces, "total_tokens": 21 + pieces}
    events.append({**base, "choices": [], "usage": usage})
    lines = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events]
    return "".join(lines) + "data: [DONE]\n\n"


_VOCABULARY = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "token model request latency throughput benchmark server client retry policy budget ledger "
    "Paris Tokyo 2024 3.14 naïve café résumé 東京 数据 🙂 def return {x: y} [1, 2] <div> http://"
)
_WORDS = _VOCABULARY.split()


def english_like_text(size: int, seed: int = 1) -> str:
    """About ``size`` characters of word-salad mixing English, numbers, code, CJK and emoji."""
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
        if rng.random() < 0.06:
            words.append(".\n" if rng.random() < 0.3 else ",")
    return " ".join(words)[:size]


def chat_messages(count: int, seed: int = 2) -> list[str]:
    """``count`` short chat turns (3 to 40 words), as a conversation log would hold."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 40))) for _ in range(count)]
