"""count_tokens against raw tiktoken on the very same Encoding object, after warm-up."""

from __future__ import annotations

from measure import Row, Target, interleaved, median, timed
from payloads import MODEL, chat_messages, english_like_text

SECTION = "count_tokens (raw: len(enc.encode(...)) on the same tiktoken Encoding)"
TEXT_BYTES = 1_000_000
MESSAGES = 10_000


def run(rounds: int) -> list[Row]:
    import tiktoken
    from moodlemate.ai import GPT

    gpt = GPT()
    enc = tiktoken.encoding_for_model(MODEL)
    text = english_like_text(TEXT_BYTES)
    size_mb = len(text.encode()) / 1e6
    messages = chat_messages(MESSAGES)

    def ours_text() -> int:
        return int(gpt.count_tokens(text, MODEL))

    def raw_text() -> int:
        return len(enc.encode(text))

    def ours_messages() -> int:
        count = gpt.count_tokens
        return sum(count(m, MODEL) for m in messages)

    def raw_messages() -> int:
        encode = enc.encode
        return sum(len(encode(m)) for m in messages)

    def ordinary_messages() -> int:
        encode = enc.encode_ordinary
        return sum(len(encode(m)) for m in messages)

    # The first call loads the BPE file; warm-up keeps that out of the figures.
    counts = {
        "text": (ours_text(), raw_text()),
        "messages": (ours_messages(), raw_messages()),
        "messages (encode_ordinary)": (ours_messages(), ordinary_messages()),
    }
    for what, (ours, raw) in counts.items():
        if ours != raw:
            raise RuntimeError(
                f"count_tokens disagrees with tiktoken on the {what}: {ours} != {raw}"
            )
    text_s = interleaved(
        rounds, {"ours": lambda: timed(ours_text, 1), "raw": lambda: timed(raw_text, 1)}
    )
    msg_s = interleaved(
        rounds,
        {
            "ours": lambda: timed(ours_messages, 1),
            "raw": lambda: timed(raw_messages, 1),
            "ordinary": lambda: timed(ordinary_messages, 1),
        },
    )
    return [
        Row(
            SECTION,
            f"throughput on one {size_mb:.1f} MB text",
            "MB/s",
            size_mb / median(text_s["ours"]),
            size_mb / median(text_s["raw"]),
            Target("ratio>=", 0.95),
            detail={"rounds": rounds, "tokens": counts["text"][0]},
        ),
        Row(
            SECTION,
            f"time for {MESSAGES:,} short chat messages",
            "ms",
            median(msg_s["ours"]) * 1000,
            median(msg_s["raw"]) * 1000,
            Target("ratio<=", 1.2),
            detail={"rounds": rounds, "tokens": counts["messages"][0]},
        ),
        # count_tokens counts special-token text as plain text (encode_ordinary), which skips
        # the special-token scan encode() does: this row compares like with like.
        Row(
            SECTION,
            "the same, raw: len(enc.encode_ordinary(m))",
            "ms",
            median(msg_s["ours"]) * 1000,
            median(msg_s["ordinary"]) * 1000,
            detail={"rounds": rounds},
        ),
    ]


# -- in a fresh process: the first count, and chat messages by the cookbook's formula -------

FIRST_TEXT = "How many tokens does this short prompt take, counted the first time?"


def _first_child(kind: str) -> None:
    """Time, from before the first import, one count_tokens (raw: tiktoken's own)."""
    import time

    start = time.perf_counter()
    if kind == "ours":
        from moodlemate.ai import GPT

        GPT().count_tokens(FIRST_TEXT, MODEL)
    else:
        import tiktoken

        len(tiktoken.encoding_for_model(MODEL).encode(FIRST_TEXT))
    print(time.perf_counter() - start)


def _fresh(kind: str) -> list[float]:
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), kind],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [float(out.split()[-1])]


def first_count(rounds: int) -> list[Row]:
    import tiktoken
    from moodlemate.ai import GPT

    first = interleaved(rounds, {"ours": lambda: _fresh("ours"), "raw": lambda: _fresh("raw")})
    gpt = GPT()
    enc = tiktoken.encoding_for_model(MODEL)
    conversation = [
        {"role": "system" if i == 0 else ("user" if i % 2 else "assistant"), "content": m}
        for i, m in enumerate(chat_messages(200))
    ]

    def ours() -> int:
        return gpt.count_message_tokens(conversation, MODEL).tokens

    def raw() -> int:  # OpenAI's cookbook formula for gpt-4o-class models
        total = 3
        encode = enc.encode
        for message in conversation:
            total += 3
            for value in message.values():
                total += len(encode(value))
        return total

    if ours() != raw():
        raise RuntimeError(f"message counts disagree: {ours()} != {raw()}")
    counted = interleaved(rounds, {"ours": lambda: timed(ours, 20), "raw": lambda: timed(raw, 20)})
    return [
        Row(
            SECTION,
            "first count_tokens in a fresh process (tokenizer load included)",
            "ms",
            median(first["ours"]) * 1000,
            median(first["raw"]) * 1000,
            Target("ratio<=", 1.05),
            detail={"rounds": rounds},
        ),
        Row(
            SECTION,
            "count_message_tokens, 200 messages (raw: the cookbook formula)",
            "us",
            median(counted["ours"]) * 1e6,
            median(counted["raw"]) * 1e6,
            Target("ratio<=", 1.0),
            detail={"rounds": rounds},
        ),
    ]


if __name__ == "__main__":
    import sys

    _first_child(sys.argv[1])
