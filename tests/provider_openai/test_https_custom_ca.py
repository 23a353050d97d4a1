"""An HTTPS call succeeds against a server whose certificate a private CA signed, when the
user names that CA as the SDK takes one (``SSL_CERT_FILE``, ``SSL_CERT_DIR``), on the sync
and the async network code; without it, the same server is a TLS failure.

The server is the project's LoopbackServer behind a TLS-terminating relay on 127.0.0.1, its
certificate issued by a CA that ``openssl`` makes for this test (no system store trusts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from moodlemate.ai import GPT, APIConnectionError, RetryPolicy
from moodlemate.ai.testing import LoopbackServer
from support import TEST_KEY

pytestmark = [
    pytest.mark.usefixtures("each_transport"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]

ONE_TRY = RetryPolicy(attempts=1, attempt_timeout=10.0)


@dataclass(frozen=True)
class Authority:
    ca_file: Path
    ca_dir: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """A private CA and a certificate it signed for 127.0.0.1 and localhost."""
    work = tmp_path_factory.mktemp("ca")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=moodlemate test CA", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=work,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr", cwd=work,
    )  # fmt: skip
    (work / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem", cwd=work,
    )  # fmt: skip
    ca_dir = work / "certs"  # OpenSSL's hashed-directory layout, as SSL_CERT_DIR expects
    ca_dir.mkdir()
    digest = _openssl("x509", "-hash", "-noout", "-in", "ca.pem", cwd=work).strip()
    shutil.copy(work / "ca.pem", ca_dir / f"{digest}.0")
    return Authority(work / "ca.pem", ca_dir, work / "server.pem", work / "server.key")


def _relay(client: ssl.SSLSocket, upstream: socket.socket) -> None:
    """Both directions from one thread: an SSL socket must not be read and written at once."""
    with contextlib.suppress(OSError):
        while True:
            if client.pending():
                readable: list[socket.socket] = [client]
            else:
                readable = select.select([client, upstream], [], [], 30)[0]
            if not readable:
                return
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return  # either side closed: so does the other
                (upstream if source is client else client).sendall(data)


@contextlib.contextmanager
def tls_relay(authority: Authority, backend_port: int) -> Iterator[int]:
    """Terminates TLS on a port of its own and relays the plain bytes to ``backend_port``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(authority.cert, authority.key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    opened: list[socket.socket] = []

    def serve(raw: socket.socket) -> None:
        try:
            client = context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()  # a client that did not trust us hangs up in the handshake
            return
        with client, socket.create_connection(("127.0.0.1", backend_port)) as upstream:
            opened.extend((client, upstream))
            _relay(client, upstream)

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def https_url(authority: Authority) -> Iterator[str]:
    with LoopbackServer() as server, tls_relay(authority, server.port) as port:
        yield f"https://127.0.0.1:{port}/v1"


@pytest.fixture(params=["sync", "async"])
def calling(request: pytest.FixtureRequest) -> str:
    """The sync and async paths open TLS connections with network code of their own."""
    return str(request.param)


def _two_calls(url: str, calling: str) -> list[str]:
    """A call, then a stream (the second reuses the pooled TLS connection where it can)."""
    gpt = GPT("openai", endpoint=url, api_key=TEST_KEY, retry=ONE_TRY)
    if calling == "async":

        async def run() -> list[str]:
            reply = await gpt.achat_completion("gpt-4o-mini", "", "over TLS")
            streamed = [d async for d in gpt.astream("gpt-4o-mini", "", "streamed over TLS")]
            return [reply, "".join(streamed)]

        return asyncio.run(run())
    reply = gpt.chat_completion("gpt-4o-mini", "", "over TLS")
    return [reply, "".join(gpt.stream("gpt-4o-mini", "", "streamed over TLS"))]


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_a_private_ca_named_in_the_environment_is_trusted(
    https_url: str,
    authority: Authority,
    calling: str,
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    path = authority.ca_file if variable == "SSL_CERT_FILE" else authority.ca_dir
    monkeypatch.setenv(variable, str(path))
    replies = _two_calls(https_url, calling)
    assert "over TLS" in replies[0]
    assert "streamed over TLS" in replies[1]


def test_without_the_ca_the_same_server_is_a_tls_failure(
    https_url: str, calling: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control: the CA is what made the calls above succeed, not a lax context.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with pytest.raises(APIConnectionError) as caught:
        _two_calls(https_url, calling)
    assert caught.value.cause_kind == "tls"
