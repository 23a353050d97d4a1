"""A hostile HTTP server on 127.0.0.1 for the hard-bounds tests: it drips, floods and lies.

Each behaviour is a function that gets the socket after the request was read and writes
whatever it likes; every one of them stops by itself (after ``MAX_SECONDS`` or when the
client hangs up), so a failing test cannot leave a thread spinning.
"""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Self

MAX_SECONDS = 20.0
Behaviour = Callable[[socket.socket], None]


def completion_body(text: str = "ok") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-adv",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    ).encode()


def sse_event(text: str) -> bytes:
    chunk = {
        "id": "chatcmpl-adv",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def head(status: str = "200 OK", content_type: str = "application/json", **headers: str) -> bytes:
    # One request per connection: without this header a client may reuse the connection
    # after the handler has closed it, and see a disconnect instead of the behaviour.
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _until_gone(sock: socket.socket, pieces: Iterator[bytes], pause: float) -> None:
    """Send ``pieces`` with ``pause`` between them until the client goes or time runs out."""
    stop = time.monotonic() + MAX_SECONDS
    for piece in pieces:
        if time.monotonic() > stop:
            return
        try:
            sock.sendall(piece)
        except OSError:
            return
        if pause:
            time.sleep(pause)


def _forever(piece: bytes) -> Iterator[bytes]:
    while True:
        yield piece


# -- behaviours ----------------------------------------------------------------------------


def drip_headers(pause: float = 0.3) -> Behaviour:
    """A status line and headers that never end, one byte at a time."""

    def run(sock: socket.socket) -> None:
        first = b"HTTP/1.1 200 OK\r\n"
        pieces = iter([bytes([b]) for b in first])
        filler = (b"X" for _ in iter(int, 1))
        _until_gone(sock, _chain(pieces, _chain(iter([b"X-Slow: "]), filler)), pause)

    return run


def drip_body(pause: float = 0.3) -> Behaviour:
    """Honest headers, then a body of one byte per ``pause`` seconds."""

    def run(sock: socket.socket) -> None:
        body = completion_body()
        start = head(content_length=str(len(body) + 10_000))
        _until_gone(sock, _chain(iter([start]), (bytes([b]) for b in body * 1000)), pause)

    return run


def instant(body: bytes | None = None) -> Behaviour:
    def run(sock: socket.socket) -> None:
        payload = completion_body() if body is None else body
        _until_gone(sock, iter([head(content_length=str(len(payload))) + payload]), 0)

    return run


def sse_then(after_first: Iterator[bytes], pause: float) -> Behaviour:
    """A stream: one text delta at once, then ``after_first`` with ``pause`` between."""

    def run(sock: socket.socket) -> None:
        start = head(content_type="text/event-stream", cache_control="no-cache")
        # Close-delimited body (no length, not chunked): every byte is data as sent.
        _until_gone(sock, _chain(iter([start, sse_event("first")]), after_first), pause)

    return run


def sse_events(*events: bytes) -> Behaviour:
    """A stream of exactly ``events`` (each a whole ``data:`` event), then the connection closed."""

    def run(sock: socket.socket) -> None:
        start = head(content_type="text/event-stream", cache_control="no-cache")
        _until_gone(sock, iter([start, *events]), 0)

    return run


def keepalive_forever(pause: float = 0.2) -> Behaviour:
    return sse_then(_forever(b": keep-alive\n\n"), pause)


def deltas_forever(pause: float = 0.2) -> Behaviour:
    return sse_then(_forever(sse_event("more ")), pause)


def huge_body(total: int, chunk: int = 1 << 20) -> Behaviour:
    """A declared body of ``total`` bytes (spaces inside a JSON string), sent fast."""

    def run(sock: socket.socket) -> None:
        opening = b'{"choices": [{"message": {"content": "'
        start = head(content_length=str(total)) + opening
        filler = (b" " * chunk for _ in range((total - len(opening)) // chunk + 1))
        _until_gone(sock, _chain(iter([start]), filler), 0)

    return run


def endless_chunked(chunk: int = 1 << 20) -> Behaviour:
    """Chunked transfer encoding that never sends the last chunk."""

    def run(sock: socket.socket) -> None:
        start = head(transfer_encoding="chunked")
        piece = f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"
        _until_gone(sock, _chain(iter([start]), _forever(piece)), 0)

    return run


def gzip_bomb(inflated_mib: int) -> Behaviour:
    """A valid gzip body of ~1 KB per MiB it inflates to (spaces). Built from one
    compressed block repeated: after a full flush, deflate compresses the same block to the
    same bytes, so a 1 GiB bomb takes a fraction of a second to make."""
    block = b" " * (1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated_mib):
        crc = zlib.crc32(block, crc)
    data = b"".join(
        [
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff",
            first,
            again * (inflated_mib - 1),
            deflate.flush(),
            struct.pack("<II", crc, (inflated_mib << 20) & 0xFFFFFFFF),
        ]
    )

    def run(sock: socket.socket) -> None:
        start = head(content_encoding="gzip", content_length=str(len(data)))
        _until_gone(sock, iter([start + data]), 0)

    return run


def endless_sse_line(chunk: int = 1 << 20) -> Behaviour:
    """An event stream whose first line never ends."""
    return sse_then(_forever(b"x" * chunk), 0)


def endless_text(chunk_text: str = "y" * 4000) -> Behaviour:
    """A stream of well-formed text deltas that never ends, sent fast."""
    return sse_then(_forever(sse_event(chunk_text)), 0)


def _chain(*iterators: Iterator[bytes]) -> Iterator[bytes]:
    for iterator in iterators:
        yield from iterator


# -- the server ----------------------------------------------------------------------------


class LoopbackSocketServer:
    """A threaded TCP server on 127.0.0.1 handing each connection's socket to ``_serve``:
    what the hostile server here and the forwarding proxy (forward_proxy.py) share."""

    def __init__(self) -> None:
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            # socketserver's default backlog is 5: with more clients connecting at once
            # (8 threads in the catalog test) a busy machine overflows it, and Linux resends
            # the refused SYN only after 1 s, which a timing assertion then reads as ours.
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, sock: socket.socket) -> None:
        raise NotImplementedError


class AdversarialServer(LoopbackSocketServer):
    """Routes by path suffix: ``routes`` maps e.g. ``"/chat/completions"`` to a behaviour."""

    def __init__(self, routes: dict[str, Behaviour]) -> None:
        super().__init__()
        self.routes = routes
        self.hits: list[str] = []
        self.hit_times: list[float] = []
        """When each hit's request had arrived (monotonic, as every process reads it)."""

    @property
    def url(self) -> str:
        return f"{self.origin}/v1"

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        try:
            path = _read_request(sock)
        except OSError:
            return
        self.hit_times.append(time.monotonic())
        self.hits.append(path)
        for suffix, behaviour in self.routes.items():
            if path.endswith(suffix):
                behaviour(sock)
                return


def _read_request(sock: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise OSError("client left")
        data += piece
    header, _, body = data.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return lines[0].split(" ")[1]
