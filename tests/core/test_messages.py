"""The message model over real HTTP: parts, tool turns and OpenAI-shaped dicts reach the test
server in the wire shape OpenAI documents, and every bad input is refused before sending."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from pathlib import Path

import pytest
from moodlemate.ai import (
    GPT,
    AudioPart,
    FilePart,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    ValidationError,
)
from moodlemate.ai.testing import LoopbackServer, Reply
from support import (
    gif_bytes,
    jpeg_bytes,
    mp3_bytes,
    pdf_bytes,
    png_bytes,
    wav_bytes,
    webp_bytes,
)

PNG = png_bytes(2, 3)
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def sent_messages(server: LoopbackServer, index: int = -1) -> list[dict[str, object]]:
    messages = server.chat_requests[index].body["messages"]
    assert isinstance(messages, list)
    return messages


# -- the values ------------------------------------------------------------------------------


def test_plain_message_constructs_as_before() -> None:
    message = Message("user", "Hi")
    assert (message.role, message.content, message.text) == ("user", "Hi", "Hi")
    assert (message.name, message.tool_call_id, message.tool_calls, message.refusal) == (
        None,
        None,
        (),
        None,
    )
    assert message == Message("user", "Hi")


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (png_bytes(), "image/png"),
        (jpeg_bytes(), "image/jpeg"),
        (gif_bytes(), "image/gif"),
        (webp_bytes(), "image/webp"),
    ],
)
def test_image_type_is_sniffed_from_the_bytes_not_the_name(
    tmp_path: Path, data: bytes, media_type: str
) -> None:
    path = tmp_path / "named-wrongly.txt"
    path.write_bytes(data)
    part = ImagePart(path)
    assert (part.media_type, part.data, part.path) == (media_type, data, str(path))
    assert ImagePart(data).media_type == media_type


def test_a_renamed_non_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_text("not an image at all")
    with pytest.raises(ValidationError, match="read from the bytes"):
        ImagePart(path)
    with pytest.raises(ValidationError, match="application/pdf"):
        ImagePart(pdf_bytes())


def test_a_data_url_that_lies_about_its_type_is_refused() -> None:
    lying = "data:image/jpeg;base64," + base64.b64encode(PNG).decode()
    with pytest.raises(ValidationError, match="says image/jpeg but holds image/png"):
        ImagePart(lying)
    with pytest.raises(ValidationError, match="base64"):
        ImagePart("data:image/png;base64,***")


def test_urls_only_https_http_and_data() -> None:
    assert ImagePart("https://example.org/cat.png").url == "https://example.org/cat.png"
    assert ImagePart("http://example.org/cat.png").data is None
    for url in ("ftp://example.org/cat.png", "file:///etc/passwd", "javascript://x"):
        with pytest.raises(ValidationError, match="not allowed"):
            ImagePart(url)


def test_missing_path_directory_and_fifo_fail_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read"):
        ImagePart(tmp_path / "absent.png")
    with pytest.raises(ValidationError, match="directory"):
        ImagePart(tmp_path)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ValidationError, match="not a regular file"):
        ImagePart(fifo)
    assert time.monotonic() - started < 1


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "secret.png"
    path.write_bytes(PNG)
    path.chmod(0)
    with pytest.raises(ValidationError, match="cannot read"):
        ImagePart(path)


def test_file_and_audio_parts(tmp_path: Path) -> None:
    (tmp_path / "report.bin").write_bytes(pdf_bytes())
    document = FilePart(tmp_path / "report.bin")
    assert (document.media_type, document.filename) == ("application/pdf", "report.bin")
    assert FilePart(file_id="file-abc").file_id == "file-abc"
    with pytest.raises(ValidationError, match="either"):
        FilePart(pdf_bytes(), file_id="file-abc")
    with pytest.raises(ValidationError, match="not one of application/pdf"):
        FilePart(PNG)
    assert AudioPart(wav_bytes()).format == "wav"
    assert AudioPart(mp3_bytes()).format == "mp3"
    with pytest.raises(ValidationError, match="audio"):
        AudioPart(PNG)


def test_reprs_show_sizes_not_bytes() -> None:
    assert "bytes>" in repr(ImagePart(PNG))
    assert "\\x89" not in repr(ImagePart(PNG))
    assert "bytes>" in repr(AudioPart(wav_bytes()))


# -- over HTTP -------------------------------------------------------------------------------


def test_every_part_type_reaches_the_wire(gpt: GPT, server: LoopbackServer) -> None:
    wav = wav_bytes()
    completion = gpt.complete(
        "local-omni",  # a model no rule knows takes whatever it is given
        "Be brief.",
        messages=[
            Message(
                "user",
                (
                    TextPart("What is this?"),
                    ImagePart(PNG, detail="low"),
                    ImagePart("https://example.org/cat.png", detail="high"),
                    FilePart(pdf_bytes(), filename="a.pdf"),
                    AudioPart(wav),
                ),
            )
        ],
    )
    assert completion.text == "Echo: What is this?"
    system, user = sent_messages(server)
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}},
        {
            "type": "image_url",
            "image_url": {"url": "https://example.org/cat.png", "detail": "high"},
        },
        {
            "type": "file",
            "file": {
                "filename": "a.pdf",
                "file_data": "data:application/pdf;base64,"
                + base64.b64encode(pdf_bytes()).decode(),
            },
        },
        {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"},
        },
    ]


def test_openai_shaped_dicts_send_what_values_send(gpt: GPT, server: LoopbackServer) -> None:
    values = [
        Message("user", (TextPart("Describe"), ImagePart(PNG, detail="high"))),
        Message("assistant", "", tool_calls=(ToolCall("call_1", "zoom", '{"x": 1}'),)),
        Message("tool", "zoomed", tool_call_id="call_1"),
        Message("user", "And now?", name="ann"),
    ]
    dicts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "high"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "zoom", "arguments": '{"x": 1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "zoomed"},
        {"role": "user", "content": "And now?", "name": "ann"},
    ]
    gpt.complete("gpt-4o", messages=values)
    gpt.complete("gpt-4o", messages=dicts)
    assert sent_messages(server, 0) == sent_messages(server, 1) == dicts


def test_completion_message_appends_to_the_history(gpt: GPT, server: LoopbackServer) -> None:
    call = {"id": "call_9", "type": "function", "function": {"name": "now", "arguments": "{}"}}
    server.enqueue(Reply(tool_calls=[call], finish_reason="tool_calls"), Reply(text="It is noon."))
    history: list[Message | dict[str, object]] = [{"role": "user", "content": "Time?"}]
    first = gpt.complete("gpt-4o-mini", messages=history)
    assert first.message == Message("assistant", "", tool_calls=(ToolCall("call_9", "now", "{}"),))
    history += [first.message, Message("tool", "12:00", tool_call_id="call_9")]
    second = gpt.complete("gpt-4o-mini", messages=history)
    assert second.text == "It is noon."
    assert sent_messages(server)[1:] == [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "12:00", "tool_call_id": "call_9"},
    ]


def test_refusal_and_audio_replies(gpt: GPT, server: LoopbackServer) -> None:
    audio = {"id": "audio_1", "data": "UklGRg==", "transcript": "Hi", "expires_at": 1}
    server.enqueue(Reply(refusal="I can't help with that."), Reply(text="Hi", audio=audio))
    refused = gpt.complete("gpt-4o", "", "Do something bad")
    assert refused.message.refusal == "I can't help with that."
    spoken = gpt.complete(
        "gpt-4o-audio-preview",
        user_message="Say hi",
        options={"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
    )
    assert spoken.audio == audio
    body = server.chat_requests[-1].body
    assert body["modalities"] == ["text", "audio"]
    assert body["audio"] == {"voice": "alloy", "format": "wav"}


def test_stream_and_async_carry_parts(gpt: GPT, server: LoopbackServer) -> None:
    messages = [Message("user", (TextPart("Look"), ImagePart(PNG)))]
    assert "".join(gpt.stream("gpt-4o", messages=messages)) == "Echo: Look"

    async def run() -> str:
        completion = await gpt.acomplete("gpt-4o", messages=messages)
        pieces = [piece async for piece in gpt.astream("gpt-4o", messages=messages)]
        return completion.text + "|" + "".join(pieces)

    assert asyncio.run(run()) == "Echo: Look|Echo: Look"
    assert len(server.chat_requests) == 3
    for request in server.chat_requests:
        assert request.body["messages"][0]["content"][1]["type"] == "image_url"


# -- refused before sending: the server sees nothing ------------------------------------------


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        (
            [
                Message("assistant", "", tool_calls=(ToolCall("call_1", "f"),)),
                Message("user", "hi"),
            ],
            "has no tool message answering it",
        ),
        (
            [Message("user", "hi"), Message("tool", "x", tool_call_id="call_7")],
            "answers no tool call",
        ),
        ([Message("tool", "x")], "needs the tool_call_id"),
        ([Message("system", (ImagePart(PNG),))], "only in user messages"),
        ([Message("assistant", (TextPart("a"), ImagePart(PNG)))], "only in user messages"),
        ([Message("user", "x", tool_calls=(ToolCall("c", "f"),))], "only assistant messages"),
        ([{"role": "robot", "content": "x"}], "role must be one of"),
        ([{"role": "user", "content": [{"type": "video", "video": {}}]}], "type must be"),
        ([{"role": "user", "content": "x", "colour": "red"}], "unknown field 'colour'"),
        ([Message("user", "\ud800")], "lone surrogate"),
        (
            [
                Message("assistant", "", tool_calls=(ToolCall("c", "f"), ToolCall("d", "g"))),
                Message("tool", "1", tool_call_id="c"),
            ],
            "'d'",
        ),
    ],
)
def test_bad_turns_are_refused_before_sending(
    gpt: GPT, server: LoopbackServer, messages: list[object], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        gpt.complete("gpt-4o", messages=messages)  # type: ignore[arg-type]
    assert server.chat_requests == []


def test_request_size_limits(gpt: GPT, server: LoopbackServer) -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(26 * 1024 * 1024)
    two = Message("user", (ImagePart(big), ImagePart(big)))
    with pytest.raises(ValidationError, match="50 MB of images"):
        gpt.complete("gpt-4o", messages=[two])
    pdf = b"%PDF-1.4\n" + bytes(17 * 1024 * 1024)
    files = Message("user", (FilePart(pdf), FilePart(pdf)))
    with pytest.raises(ValidationError, match="32 MB of files"):
        gpt.complete("gpt-4o", messages=[files])
    assert server.chat_requests == []


def test_parts_read_once_from_a_file_that_changes(
    gpt: GPT, server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    part = ImagePart(path)
    path.write_text("replaced")
    gpt.complete("gpt-4o", messages=[Message("user", (part,))])
    assert sent_messages(server)[0]["content"] == [
        {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "auto"}}
    ]


def test_send_checks_a_hand_built_request_the_same_way(gpt: GPT, server: LoopbackServer) -> None:
    from moodlemate.ai import ChatRequest

    request = ChatRequest(
        "gpt-4o",
        ({"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG_URL}}]},),
    )  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="only in user messages"):
        gpt.send(request)
    assert server.chat_requests == []


def test_parts_are_built_in_any_thread(gpt: GPT, server: LoopbackServer) -> None:
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            gpt.complete("gpt-4o", messages=[Message("user", (TextPart("x"), ImagePart(PNG)))])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(server.chat_requests) == 4


def test_a_streamed_reply_gives_its_message_too(gpt: GPT, server: LoopbackServer) -> None:
    call = {"id": "call_3", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    server.enqueue(Reply(tool_calls=[call], finish_reason="tool_calls"), Reply(refusal="No."))
    from moodlemate.ai import EmptyReplyError, RefusalError

    # A text stream with no text raises at its end, the Completion (and its message) attached.
    with pytest.raises(EmptyReplyError) as calls:
        "".join(gpt.stream("gpt-4o", messages=[{"role": "user", "content": "go"}]))
    assert calls.value.completion.message.tool_calls == (ToolCall("call_3", "f", '{"a": 1}'),)
    with pytest.raises(RefusalError) as refused:
        "".join(gpt.stream("gpt-4o", user_message="bad"))
    assert refused.value.completion.message.refusal == "No."
