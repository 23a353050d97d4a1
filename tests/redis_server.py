"""A real redis-server (the Debian package) on a free 127.0.0.1 port, for the tests of shared
budgets and pacing. Each test session starts its own and stops it at the end.

``MOODLEMATE_REDIS=require`` (set by ``.ci/run``) turns a missing ``redis-server`` binary
into a failure; otherwise the Redis tests skip on a machine without it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

MODE = os.environ.get("MOODLEMATE_REDIS", "auto")  # read before the tests clear MOODLEMATE_*


class RedisServer:
    """A running redis-server: its URL, and ways to make it misbehave."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        folder: Path,
        options: tuple[str, ...] = (),
    ) -> None:
        self.process = process
        self.port = port
        self.folder = folder
        self.options = options

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def restart(self, down: float = 0.0) -> None:
        """Stop the server and start it again on the same port, after ``down`` seconds:
        without persistence it comes back empty, as a real one configured so would."""
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        self.process.wait(10)
        time.sleep(down)
        self.process = _launch(self.port, self.folder, self.options)
        _wait_until_up(self)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        if MODE == "require":
            pytest.fail("MOODLEMATE_REDIS=require but redis-server is not installed")
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    return found


def start(*options: str) -> RedisServer:
    """Start a private redis-server without persistence, and wait until it answers;
    ``options`` are more redis-server arguments (``"--requirepass", "..."``)."""
    binary()  # skips (or fails) here when there is none
    folder = Path(tempfile.mkdtemp(prefix="moodlemate-redis-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = RedisServer(_launch(port, folder, options), port, folder, options)
    _wait_until_up(server)
    return server


def _launch(port: int, folder: Path, options: tuple[str, ...]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(folder),
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_until_up(server: RedisServer) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                    return
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server did not start on port {server.port}")
