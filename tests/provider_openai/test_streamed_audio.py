"""A spoken reply streamed (``modalities: ["text", "audio"]``, ``stream: true``): its
``delta.audio`` pieces put together into ``Completion.audio``, its transcript streamed as
the text, and a bound that endless audio hits; on each HTTP transport, over loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from moodlemate.ai import GPT, ResponseLimits, ResponseTooLargeError
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

SPOKEN = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}
CLIP = base64.b64encode(b"RIFF" + bytes(range(256)) * 400).decode()  # ~136 KB: 5 data pieces
AUDIO = {"id": "audio_7", "data": CLIP, "transcript": "Hello there, Ada.", "expires_at": 1767225600}


def _gpt(server: LoopbackServer, **kwargs: Any) -> GPT:
    return GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, **kwargs)


def test_a_streamed_spoken_reply_is_put_together(
    server: LoopbackServer, each_transport: str
) -> None:
    server.enqueue(Reply(text="Hello there, Ada.", audio=AUDIO, audio_completion_tokens=90))
    gpt = _gpt(server)
    with gpt.stream("gpt-4o-audio-preview", "", "Say hello", options=SPOKEN) as stream:
        deltas = list(stream)
    assert len(deltas) > 1  # the transcript arrives in pieces, as the clip does
    assert "".join(deltas) == "Hello there, Ada." == stream.text
    completion = stream.completion
    assert completion is not None
    assert completion.audio == AUDIO
    assert completion.text == ""  # content is null in a spoken reply, as when not streamed
    assert completion.usage.audio_completion_tokens == 90
    body = server.chat_requests[-1].body
    assert body["stream"] is True
    assert body["modalities"] == ["text", "audio"]
    # Streamed or not, the same reply gives the same audio.
    server.enqueue(Reply(text="Hello there, Ada.", audio=AUDIO))
    whole = gpt.complete("gpt-4o-audio-preview", "", "Say hello", options=SPOKEN)
    assert whole.audio == completion.audio


def test_an_async_streamed_spoken_reply_is_put_together(
    server: LoopbackServer, each_transport: str
) -> None:
    server.enqueue(Reply(text="Hi.", audio={**AUDIO, "transcript": "Hi."}))
    gpt = _gpt(server)

    async def main() -> Any:
        stream = gpt.astream("gpt-4o-audio-preview", "", "Say hi", options=SPOKEN)
        async with stream:
            text = "".join([delta async for delta in stream])
        await gpt.aclose()
        return text, stream.completion

    text, completion = asyncio.run(main())
    assert text == "Hi."
    assert completion.audio == {**AUDIO, "transcript": "Hi."}


def test_a_text_reply_has_no_audio(server: LoopbackServer) -> None:
    server.enqueue(Reply(text="Just text."))
    with _gpt(server).stream("gpt-4o-mini", "", "Hi") as stream:
        assert "".join(stream) == "Just text."
    assert stream.completion is not None
    assert stream.completion.audio is None


def test_streamed_audio_over_the_limit_is_cut_off(
    server: LoopbackServer, each_transport: str
) -> None:
    server.enqueue(Reply(text="Hi.", audio=AUDIO))
    gpt = _gpt(server, limits=ResponseLimits(max_stream_text=50_000))
    with pytest.raises(ResponseTooLargeError, match="max_stream_text"):
        list(gpt.stream("gpt-4o-audio-preview", "", "Say hi", options=SPOKEN))
    assert gpt.ledger.reserved == 0


class EndlessAudio:
    """A raw HTTP server that answers a stream with audio pieces that never end."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.sent = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            piece = {
                "choices": [{"index": 0, "delta": {"audio": {"id": "a", "data": "QUFB" * 4096}}}]
            }
            event = b"data: " + json.dumps(piece).encode() + b"\n\n"
            frame = f"{len(event):x}\r\n".encode() + event + b"\r\n"
            try:
                while self.sent < 100_000:  # far past any bound: ~1.6 GB
                    conn.sendall(frame)
                    self.sent += 1
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def endless() -> Iterator[EndlessAudio]:
    server = EndlessAudio()
    yield server
    server.close()


def test_a_server_streaming_endless_audio_hits_the_bound(
    endless: EndlessAudio, each_transport: str
) -> None:
    gpt = GPT(
        "openai",
        endpoint=endless.url,
        api_key=TEST_KEY,
        retry=dataclasses.replace(FAST_RETRY, attempts=1),
        limits=ResponseLimits(max_stream_text=1_000_000),
    )
    with pytest.raises(ResponseTooLargeError, match="streamed audio"):
        list(gpt.stream("gpt-4o-audio-preview", "", "Talk forever", options=SPOKEN))
    assert endless.sent < 1_000  # stopped after about 1 MB of data, not 1.6 GB
