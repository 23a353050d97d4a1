"""Every command in docs/cli.md runs as written, in order, in one shell, against the test
server (a block marked ``<!-- docs: not-run (reason) -->`` is skipped, and says why)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from moodlemate.ai.testing import LoopbackServer
from support import REPO

DOC = REPO / "docs" / "cli.md"
DOCUMENTED_URL = "http://127.0.0.1:8000/v1"
_BLOCK = re.compile(r"(<!-- docs: not-run \([^)]+\) -->\n)?```console\n(.*?)```", re.S)


def documented_commands() -> list[str]:
    commands = []
    for skipped, body in _BLOCK.findall(DOC.read_text(encoding="utf-8")):
        if not skipped:
            commands += [line[2:] for line in body.splitlines() if line.startswith("$ ")]
    return commands


def test_every_command_in_the_cli_guide_runs(server: LoopbackServer, tmp_path: Path) -> None:
    commands = documented_commands()
    assert len(commands) >= 30
    script = "set -euo pipefail\n" + "\n".join(
        f"echo '>>> {i}' >&2\n{command.replace(DOCUMENTED_URL, server.url)}"
        for i, command in enumerate(commands)
    )
    bin_dir = str(Path(sys.executable).parent)  # the installed moodlemate-ai
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    failed = done.stderr.rsplit(">>> ", 1)[-1].split("\n", 1)[0]
    assert done.returncode == 0, f"{commands[int(failed)]!r} failed:\n{done.stderr[-3000:]}"
    assert "Echo: Name three primes." in done.stdout
    assert server.chat_requests  # the exported endpoint was the one used
