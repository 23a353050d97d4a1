"""docs/messages.md: every Python block runs as written against the test server (its
``http://127.0.0.1:8000/v1`` pointed at this test's server), unless marked not-run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from moodlemate.ai.testing import LoopbackServer
from support import REPO

PAGE = REPO / "docs" / "messages.md"
_BLOCK = re.compile(r"(<!-- docs: not-run \([^)]*\) -->\n)?```python\n(.*?)```", re.S)


def blocks() -> list[str]:
    return [code for marker, code in _BLOCK.findall(PAGE.read_text("utf-8")) if not marker]


def test_the_page_has_runnable_blocks() -> None:
    assert len(blocks()) >= 5


@pytest.mark.parametrize("index", range(len(blocks())))
def test_block_runs_against_the_test_server(
    index: int, server: LoopbackServer, tmp_path: Path
) -> None:
    code = blocks()[index].replace("http://127.0.0.1:8000/v1", server.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOODLEMATE_", "OPENAI_"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Echo:" in done.stdout
    assert server.chat_requests
