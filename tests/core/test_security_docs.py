"""The security page's Python examples run as copied (against the test server instead of
``moodlemate-ai serve``), and say what the page says they do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from moodlemate.ai.testing import LoopbackServer

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "security.md"
SERVE_URL = "http://127.0.0.1:8000/v1"


def python_blocks(text: str) -> list[str]:
    """The page's ```python blocks, except those marked ``<!-- docs: not-run (...) -->``."""
    blocks = []
    for match in re.finditer(r"(?m)^```python\n(.*?)^```", text, re.S):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        if not before.startswith("<!-- docs: not-run"):
            blocks.append(match.group(1))
    return blocks


def test_every_python_example_runs_as_copied(server: LoopbackServer, tmp_path: Path) -> None:
    blocks = python_blocks(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) == 2
    outputs = []
    for block in blocks:
        assert SERVE_URL in block
        done = subprocess.run(
            [sys.executable, "-c", block.replace(SERVE_URL, server.url)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=dict(os.environ),
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0].strip() == "Echo: Hi"
    refused, answered = outputs[1].strip().splitlines()
    assert refused.startswith("refused: not sending the API key set in code")
    assert "moodlemate-ai config trust" in refused
    assert answered == "Echo: Hi"
    assert len(server.chat_requests) == 2  # the refused call sent nothing


def test_security_policy_links_the_page() -> None:
    policy = (REPO / "SECURITY.md").read_text(encoding="utf-8")
    assert "](docs/security.md)" in policy
    assert "moodlemate-ai config trust" in policy
