"""The reference server: nginx answering canned bodies on loopback, so the server is never the
bottleneck. Without nginx the project's LoopbackServer stands in (a Python server: slower,
so ratios are diluted toward 1.0, and the report says so).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payloads import REPLY, SHORT_STREAM_PIECES, STREAM_PIECES, completion_json, stream_sse

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")


@dataclass(frozen=True)
class Server:
    kind: str
    """"nginx" or "LoopbackServer (fallback)"."""
    url: str
    """Base URL whose /chat/completions answers a canned chat.completion."""
    stream_url: str
    """Base URL whose /chat/completions answers the canned SSE stream of STREAM_PIECES deltas."""
    short_stream_url: str
    """Base URL whose /chat/completions answers the canned stream of SHORT_STREAM_PIECES."""
    note: str = ""


def find_nginx() -> str | None:
    for candidate in NGINX_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quoted(text: str) -> str:
    """``text`` as an nginx single-quoted string; ``$`` would be read as a variable."""
    if "$" in text or len(text) > 3000:
        raise ValueError("a canned body for nginx must be short and hold no '$'")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def nginx_conf(root: Path, port: int) -> str:
    temp = {name: root / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    return f"""
daemon off;
worker_processes 1;
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        add_header x-request-id req_bench;
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 {_quoted(completion_json())};
        }}
        # A canned stream is too long for an nginx string, so it is a file; nginx refuses POST
        # to a static file (405), and error_page turns that into a GET of the file.
        location = /sse/v1/chat/completions {{
            error_page 405 =200 /canned/stream.sse;
            root {root / "www"};
        }}
        location = /sse13/v1/chat/completions {{
            error_page 405 =200 /canned/short.sse;
            root {root / "www"};
        }}
        location /canned/ {{
            internal;
            root {root};
            types {{ }}
            default_type text/event-stream;
        }}
    }}
}}
"""


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError("nginx did not start listening")


@contextlib.contextmanager
def nginx(binary: str) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="moodlemate-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx workers run as another user when started by root
        port = _free_port()
        conf = root / "nginx.conf"
        (root / "canned").mkdir()
        (root / "canned" / "stream.sse").write_text(stream_sse())
        (root / "canned" / "short.sse").write_text(stream_sse(SHORT_STREAM_PIECES))
        for prefix in ("sse", "sse13"):
            (root / "www" / prefix / "v1" / "chat").mkdir(parents=True)
            (root / "www" / prefix / "v1" / "chat" / "completions").write_text("")
        conf.write_text(nginx_conf(root, port))
        # -e: the built-in error log path (/var/log/nginx) may not be writable.
        cmd = [binary, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            try:
                _wait_for_port(port, proc)
            except RuntimeError as exc:
                err = (root / "error.log").read_text(errors="replace") if proc.poll() else ""
                raise RuntimeError(f"{exc}: {err.strip()[-500:]}") from None
            base = f"http://127.0.0.1:{port}"
            yield Server("nginx", f"{base}/v1", f"{base}/sse/v1", f"{base}/sse13/v1")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def loopback() -> Iterator[Server]:
    from moodlemate.ai.testing import LoopbackServer, Reply

    def responder(pieces: int) -> Any:
        chunks = [f" word{i}" for i in range(pieces)]

        def respond(body: dict[str, Any]) -> Reply:
            return Reply(chunks=chunks) if body.get("stream") else Reply(text=REPLY)

        return respond

    with LoopbackServer(strict=False) as server, LoopbackServer(strict=False) as short:
        server.responder = responder(STREAM_PIECES)
        short.responder = responder(SHORT_STREAM_PIECES)
        yield Server(
            "LoopbackServer (fallback)",
            server.url,
            server.url,
            short.url,
            note="no nginx (not installed, or --no-nginx): the reference server is the "
            "project's Python LoopbackServer, which adds its own time to every call, so ratios "
            "are diluted toward 1.0. Install nginx for meaningful ratios.",
        )


@contextlib.contextmanager
def reference_server(force_loopback: bool = False) -> Iterator[Server]:
    binary = None if force_loopback else find_nginx()
    if binary is None:
        with loopback() as server:
            yield server
        return
    with nginx(binary) as server:
        yield server
