"""Conversations keep structured turns: attachments go with the prompt and stay in the
history (sent again on the next turn), and save/load keeps them by reference or inline."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from moodlemate.ai import GPT, ImagePart, Message, TextPart, ToolCall, ValidationError
from moodlemate.ai.testing import LoopbackServer
from support import pdf_bytes, png_bytes

PNG = png_bytes(4, 4)
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def test_attachments_go_with_the_prompt_and_stay(
    gpt: GPT, server: LoopbackServer, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.bin"
    photo.write_bytes(PNG)
    chat = gpt.conversation("look", system_message="Be brief.", model="gpt-4o")
    assert chat.ask("What is this?", attachments=[photo]) == "Echo: What is this?"
    assert chat.ask("And now?") == "Echo: And now?"
    first_turn = server.chat_requests[-1].body["messages"][1]
    assert first_turn == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "auto"}},
        ],
    }
    assert [m.role for m in chat.history] == ["user", "assistant", "user", "assistant"]


def test_a_pdf_and_a_url_attach_by_their_kind(gpt: GPT, server: LoopbackServer) -> None:
    chat = gpt.conversation("docs", model="gpt-4o")
    chat.ask("Read", attachments=[pdf_bytes(), "https://example.org/a.png"])
    content = server.chat_requests[-1].body["messages"][-1]["content"]
    assert [p["type"] for p in content] == ["text", "file", "image_url"]
    with pytest.raises(ValidationError, match="not an image"):
        chat.ask("Read", attachments=[b"plain text"])
    assert len(server.chat_requests) == 1


def test_save_by_reference_and_inline_and_load_back(
    gpt: GPT, server: LoopbackServer, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(PNG)
    chat = gpt.conversation("keep", model="gpt-4o")
    chat.ask("What?", attachments=[photo, ImagePart(PNG, detail="low")])
    by_reference = tmp_path / "ref.json"
    inline = tmp_path / "inline.json"
    chat.save(by_reference)
    chat.save(inline, inline=True)
    saved = json.loads(by_reference.read_text())["turns"][0]["content"]
    assert saved[1] == {"type": "image_path", "path": str(photo), "detail": "auto"}
    assert saved[2]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert json.loads(inline.read_text())["turns"][0]["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    for path in (by_reference, inline):
        again = gpt.conversation(f"again-{path.stem}")
        again.load(path)
        assert again.history[0].content[1].data == PNG  # type: ignore[union-attr]
        again.ask("Still there?")
        sent = server.chat_requests[-1].body["messages"]
        assert sent[1]["content"][1]["image_url"]["url"] == PNG_URL
    photo.unlink()
    with pytest.raises(ValidationError, match="cannot read"):
        gpt.conversation("gone").load(by_reference)


def test_tool_turns_survive_save_and_load(gpt: GPT, server: LoopbackServer, tmp_path: Path) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    turns = [
        {"role": "user", "content": "Use f"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
        {"role": "assistant", "content": "f is done."},
    ]
    document = {"version": 1, "name": "t", "model": "gpt-4o", "system_message": "S", "turns": turns}
    chat = gpt.conversation("tools")
    chat.load_json(json.dumps(document))
    assert chat.history[1] == Message("assistant", "", tool_calls=(ToolCall("call_1", "f", "{}"),))
    chat.save(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["turns"] == turns
    chat.ask("Thanks")
    sent = server.chat_requests[-1].body["messages"]
    assert sent[1:4] == turns[:3]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]


def test_text_only_documents_load_as_before(gpt: GPT) -> None:
    document = {
        "version": 1,
        "name": "old",
        "model": None,
        "system_message": "S",
        "temperature": 0.7,
        "max_tokens": None,
        "turns": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    }
    chat = gpt.conversation("old")
    chat.load_json(json.dumps(document))
    assert chat.history == (Message("user", "a"), Message("assistant", "b"))
    assert json.loads(chat.to_json())["turns"] == document["turns"]
    assert TextPart("x").text == "x"
