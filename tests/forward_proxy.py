"""A forwarding HTTP proxy on 127.0.0.1 for the proxy tests: what ``HTTP_PROXY`` points at.

A client sends it each request in absolute form (``POST http://host:port/v1/... HTTP/1.1``);
it connects to that origin, rewrites the request line to the origin's form and relays the
replies back, counting the requests it carried. One upstream connection per client
connection, kept while the client keeps its own, as a real forward proxy does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit

from adversarial import LoopbackSocketServer


class ForwardProxy(LoopbackSocketServer):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.origin

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    piece = client.recv(65536)
                    if not piece:
                        return
                    buffer += piece
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                line, _, fields = head.partition(b"\r\n")
                method, target, version = line.split(b" ", 2)
                parts = urlsplit(target.decode("ascii"))
                length = 0
                for field in fields.split(b"\r\n"):
                    name, _, value = field.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    piece = client.recv(65536)
                    if not piece:
                        return
                    buffer += piece
                body, buffer = buffer[:length], buffer[length:]
                with self._lock:
                    self.requests.append(f"{method.decode()} {target.decode()}")
                if upstream is None:
                    upstream = socket.create_connection((parts.hostname, parts.port or 80))
                    threading.Thread(target=_relay, args=(upstream, client), daemon=True).start()
                origin_form = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                upstream.sendall(
                    b" ".join((method, origin_form.encode(), version))
                    + b"\r\n"
                    + fields
                    + b"\r\n\r\n"
                    + body
                )
        except OSError:
            return
        finally:
            if upstream is not None:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_RDWR)
                upstream.close()


def _relay(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
