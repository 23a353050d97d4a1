"""What the tests share besides fixtures: the repository's root, the test key, a fast retry
policy and tiktoken's own encodings. Test modules import it as ``support`` (this folder is
on ``sys.path`` through the conftest beside it), never from ``conftest``."""

from __future__ import annotations

import os
import tempfile
import typing
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
SHARED_TIKTOKEN_CACHE = REPO.parent / "shared" / "tiktoken-cache"

# Offline token counting: tiktoken reads this at load time. Set before any test imports it.
if "TIKTOKEN_CACHE_DIR" not in os.environ and SHARED_TIKTOKEN_CACHE.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED_TIKTOKEN_CACHE)

from moodlemate.ai import RetryPolicy  # noqa: E402

if TYPE_CHECKING:
    import tiktoken

BUNDLED_BPE = REPO / "packages" / "provider-openai" / "src" / "moodlemate" / "providers"
BUNDLED_BPE = BUNDLED_BPE / "openai" / "_bpe"
"""The BPE files moodlemate-ai-openai ships (o200k_base.tiktoken, cl100k_base.tiktoken)."""


@cache
def tiktoken_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's own Encoding, the reference counts are checked against: built by tiktoken's
    constructor (its split pattern and special tokens) from its cache, else from a private
    cache seeded with the shipped file, so the suite needs neither ../shared nor a network."""
    import tiktoken
    import tiktoken_ext.openai_public
    from moodlemate.providers.openai.tiktoken_cache import is_cached, seed_tiktoken_cache

    if is_cached(name):
        return tiktoken.get_encoding(name)
    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    with tempfile.TemporaryDirectory() as private:
        seed_tiktoken_cache(BUNDLED_BPE / f"{name}.tiktoken", name, cache_dir=private)
        os.environ["TIKTOKEN_CACHE_DIR"] = private
        try:
            return tiktoken.Encoding(**tiktoken_ext.openai_public.ENCODING_CONSTRUCTORS[name]())
        finally:
            if before is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = before


TEST_KEY = "sk-test-4f1c2e9b7a6d5c3e"
FAST_RETRY = RetryPolicy(
    attempts=4,
    deadline=20.0,
    attempt_timeout=5.0,
    wait_initial=0.01,
    wait_max=0.05,
    wait_jitter=0.0,
)


# -- media: real file headers, built here so no binary fixture is checked in ---------------


def png_bytes(width: int = 1, height: int = 1) -> bytes:
    """A valid PNG of ``width`` x ``height`` grey pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(width: int = 1, height: int = 1) -> bytes:
    """The markers of a baseline JPEG (SOI, APP0, SOF0 with the size, EOI): enough for
    sniffing and for reading the dimensions."""
    import struct

    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def gif_bytes(width: int = 1, height: int = 1) -> bytes:
    import struct

    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def webp_bytes(width: int = 1, height: int = 1) -> bytes:
    """A RIFF/WEBP container with a VP8X header carrying the canvas size."""
    import struct

    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def wav_bytes(seconds: float = 0.1) -> bytes:
    """A valid 8 kHz mono 16-bit WAV of silence."""
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00\x00" * int(8000 * seconds))
    return out.getvalue()


def mp3_bytes() -> bytes:
    """An ID3v2 tag followed by one MPEG-1 Layer III frame header."""
    return b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\x00" * 413


def pdf_bytes() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


def suite_transport() -> str:
    """The HTTP transport this test runs on: ``MOODLEMATE_TRANSPORT`` as tests/conftest.py
    set it (the whole suite's, or one of each_transport's), else the default."""
    return os.environ.get("MOODLEMATE_TRANSPORT") or "lean"


# -- OpenAI's cookbook "How to count tokens with tiktoken": the function-calling example ----
# The API reported 101 prompt tokens for it on gpt-4o and gpt-4o-mini, 105 on gpt-4 and
# gpt-3.5-turbo.

WEATHER_TOOL: dict[str, typing.Any] = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {
                    "type": "string",
                    "description": "The city and state, e.g. San Francisco, CA",
                },
                "unit": {
                    "type": "string",
                    "description": "The unit of temperature to return",
                    "enum": ["celsius", "fahrenheit"],
                },
            },
            "required": ["location"],
        },
    },
}
WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]
