"""Every code block of the README and the documentation site runs against
``moodlemate-ai serve``, unless it is marked not runnable with a reason (tests/doc_blocks.py
says how blocks are found and run). The run's summary prints how many blocks were executed
and how many are marked not-run (tests/conftest.py)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import doc_blocks
import pytest
from doc_blocks import DEFAULT_PORT, REPO, Block

BLOCKS = doc_blocks.all_blocks()
RUN = [block for block in BLOCKS if block.not_run is None]
BIN = Path(sys.executable).parent


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def serve_port() -> Iterator[int]:
    """``moodlemate-ai serve`` as a user starts it: port 8000, else any free port."""
    port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else 0
    process = subprocess.Popen(
        [str(BIN / "moodlemate-ai"), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:(\d+)/v1", first)
    assert found, first + (process.stderr.read() if process.stderr else "")
    yield int(found.group(1))
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)


def _run(block: Block, port: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    script = block.script(port)
    if block.kind == "python":
        (cwd / "example.py").write_text(script, encoding="utf-8")
        command = [sys.executable, "example.py"]
    else:
        env["MOODLEMATE_ENDPOINT"] = f"http://127.0.0.1:{port}/v1"
        command = ["bash", "-e", "-o", "pipefail", "-c", script]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_doc_block_runs(block: Block, serve_port: int, tmp_path: Path) -> None:
    out = _run(block, serve_port, tmp_path)
    assert out.returncode == 0, (
        f"{block.id} ({block.kind}) exited {out.returncode}\n--- block\n{block.source}"
        f"--- stdout\n{out.stdout[-3000:]}--- stderr\n{out.stderr[-3000:]}"
    )


def test_every_not_run_marker_gives_a_reason_and_stands_before_a_block() -> None:
    for path in doc_blocks.documents():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if "docs: not-run" in line:
                assert doc_blocks.NOT_RUN.match(line), f"{path}:{number}: malformed marker"
                following = lines[number] if number < len(lines) else ""
                assert following.lstrip().startswith("```"), f"{path}:{number}: no block follows"


def test_the_readme_stays_short_and_gives_the_command_ci_runs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = ci.strip().splitlines()[-1]
    assert command == "python -m pytest"
    assert f"\n{command}\n" in readme  # "the exact test command the README gives"


def test_blocks_give_the_key_before_the_endpoint() -> None:
    """The documented order: ``gpt.api_key = ...`` then ``gpt.endpoint = ...``, and
    ``api_key=`` before ``endpoint=`` in one call."""
    keyword_order = re.compile(r"\(([^()]*\bendpoint=[^()]*\bapi_key=)")
    for block in BLOCKS:
        if block.kind != "python":
            continue
        lines = block.source.splitlines()
        keys = [n for n, line in enumerate(lines) if re.search(r"\.api_key = ", line)]
        endpoints = [n for n, line in enumerate(lines) if re.search(r"\.endpoint = ", line)]
        if keys and endpoints:
            assert keys[0] < endpoints[0], f"{block.id}: the endpoint is set before the key"
        assert not keyword_order.search(block.source), f"{block.id}: endpoint= before api_key="
