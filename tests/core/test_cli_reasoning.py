"""``moodlemate-ai chat --api`` and ``--reasoning`` in a real subprocess against the test server:
the API chosen on the command line or by ``MOODLEMATE_API``, and the returned reasoning shown on
standard error, never in the reply on standard output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from moodlemate.ai.testing import LoopbackServer, Reply
from support import TEST_KEY

COMMAND = [sys.executable, "-m", "moodlemate.ai.cli"]


@pytest.fixture
def env(server: LoopbackServer, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MOODLEMATE_ENDPOINT": server.url,
        "MOODLEMATE_API_KEY": TEST_KEY,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "MOODLEMATE_MODEL": "gpt-4o",
    }


def chat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "chat", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_api_flag_and_reasoning_on_stderr(server: LoopbackServer, env: dict[str, str]) -> None:
    server.enqueue(Reply(text="Rome.", reasoning="Rome is further south."))
    out = chat(env, "--api", "responses", "-o", "reasoning_summary", "auto", "--reasoning", "Hi")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Rome.\n"  # only the reply: safe to pipe
    assert "reasoning:\nRome is further south." in out.stderr
    assert "\x1b[" not in out.stderr  # not dimmed when standard error is not a terminal
    (request,) = server.response_requests
    assert request.body["reasoning"] == {"summary": "auto"}
    assert server.chat_requests == []


def test_the_environment_chooses_the_api_and_json_carries_the_reasoning(
    server: LoopbackServer, env: dict[str, str]
) -> None:
    server.enqueue(Reply(text="42", reasoning="six sevens"))
    out = chat(
        {**env, "MOODLEMATE_API": "responses"}, "-o", "reasoning_summary", "auto", "--json", "Hi"
    )
    assert out.returncode == 0, out.stderr
    fields = json.loads(out.stdout)
    assert (fields["text"], fields["reasoning"]) == ("42", "six sevens")
    assert len(server.response_requests) == 1
    out = chat({**env, "MOODLEMATE_API": "responses"}, "--api", "chat", "Hi")
    assert out.returncode == 0, out.stderr
    assert len(server.chat_requests) == 1  # the flag beats the environment


def test_reasoning_says_when_none_came_back(server: LoopbackServer, env: dict[str, str]) -> None:
    out = chat(env, "--reasoning", "Hi")
    assert (out.returncode, out.stdout) == (0, "Echo: Hi\n"), out.stderr
    assert "no reasoning came back" in out.stderr
    out = chat(env, "--api", "legacy", "Hi")
    assert out.returncode == 2
    assert "invalid choice: 'legacy'" in out.stderr
