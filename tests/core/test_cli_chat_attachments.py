"""``moodlemate-ai chat -a/--at/-o`` in a real subprocess against the test server:
attachments typed by their bytes (files, URLs, standard input), options typed by their
schema, and bad input refused before anything is sent."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from moodlemate.ai.testing import LoopbackServer
from support import TEST_KEY, pdf_bytes, png_bytes, wav_bytes

COMMAND = [sys.executable, "-m", "moodlemate.ai.cli"]
PNG = png_bytes(3, 3)
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture
def env(server: LoopbackServer, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MOODLEMATE_ENDPOINT": server.url,
        "OPENAI_API_KEY": TEST_KEY,
        "MOODLEMATE_API_KEY": TEST_KEY,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "MOODLEMATE_MODEL": "gpt-4o",
    }


def chat(env: dict[str, str], *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*COMMAND, "chat", *args], input=stdin, capture_output=True, env=env, timeout=60
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def test_attachments_from_files_urls_and_stdin(
    server: LoopbackServer, env: dict[str, str], tmp_path: Path
) -> None:
    photo = tmp_path / "photo.dat"
    photo.write_bytes(PNG)
    (tmp_path / "r.pdf").write_bytes(pdf_bytes())
    out = chat(
        env,
        *("-a", str(photo), "-a", "https://example.org/c.png", "-a", str(tmp_path / "r.pdf")),
        "What is this?",
    )
    assert (out.returncode, out.stdout) == (0, "Echo: What is this?\n"), out.stderr
    content = server.chat_requests[-1].body["messages"][-1]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "image_url", "file"]
    assert content[1]["image_url"]["url"] == PNG_URL
    out = chat(env, "--at", "-", "image", "Read it.", stdin=PNG)
    assert out.returncode == 0, out.stderr
    assert (
        server.chat_requests[-1].body["messages"][-1]["content"][1]["image_url"]["url"] == PNG_URL
    )


def test_audio_on_an_audio_model(server: LoopbackServer, env: dict[str, str]) -> None:
    out = chat(env, "-m", "gpt-4o-audio-preview", "-a", "-", "Transcribe", stdin=wav_bytes())
    assert out.returncode == 0, out.stderr
    part = server.chat_requests[-1].body["messages"][-1]["content"][1]
    assert part["input_audio"]["format"] == "wav"


def test_options_are_typed_by_their_schema(server: LoopbackServer, env: dict[str, str]) -> None:
    out = chat(
        env,
        *("-o", "seed", "7", "-o", "top_p", "0.5", "-o", "store", "false"),
        *("-o", "stop", "END", "-o", "stop", "STOP"),
        *("-o", "response_format", '{"type": "json_object"}', "-o", "n", "1"),
        "Hi",
    )
    assert out.returncode == 0, out.stderr
    body = server.chat_requests[-1].body
    assert (body["seed"], body["top_p"], body["store"]) == (7, 0.5, False)
    assert body["stop"] == ["END", "STOP"]
    assert body["response_format"] == {"type": "json_object"}
    assert body["n"] == 1


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("-a", "/nonexistent/photo.png", "Hi"), b"", "cannot read"),
        (("--at", "-", "image", "Hi"), b"%PDF-1.4\n", "application/pdf, not image"),
        (("-a", "-", "Hi"), b"just text", "not an image"),
        (("-a", "ftp://example.org/a.png", "Hi"), b"", "not allowed"),
        (("-o", "seed", "seven", "Hi"), b"", "not an integer"),
        (("-o", "top_p", "3", "Hi"), b"", "top_p must be between"),
        (("-m", "gpt-3.5-turbo", "-a", "-", "Hi"), PNG, "does not take image input"),
        (("-m", "o3-mini", "-o", "top_p", "0.5", "Hi"), b"", "does not accept top_p"),
        (("-a", "-"), PNG, "give the prompt as PROMPT"),
    ],
)
def test_bad_input_sends_nothing(
    server: LoopbackServer, env: dict[str, str], args: tuple[str, ...], stdin: bytes, message: str
) -> None:
    out = chat(env, *args, stdin=stdin)
    assert out.returncode != 0
    assert message in out.stderr
    assert server.chat_requests == []
