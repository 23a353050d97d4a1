"""A connection failure names host, port and cause, in the error and in the first log line,
and carries the cause as ``cause_kind`` (DNS, refused and TLS failures do not heal by
waiting), on both transports."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from moodlemate.ai import GPT, APIConnectionError, APITimeoutError, RetryPolicy
from support import TEST_KEY

pytestmark = pytest.mark.usefixtures("each_transport")

# Room for the first attempt to import the openai SDK on a loaded machine.
ONE_TRY = RetryPolicy(attempts=2, wait_initial=0.01, wait_jitter=0, attempt_timeout=10.0)
SHORT = RetryPolicy(attempts=2, wait_initial=0.01, wait_jitter=0, attempt_timeout=1.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for sock in held:
        sock.close()
    listener.close()


@pytest.fixture(params=["sync", "async"])
def calling(request: pytest.FixtureRequest) -> str:
    """How the failing call is made: the async path has network code of its own."""
    return str(request.param)


def _fail(
    endpoint: str,
    caplog: pytest.LogCaptureFixture,
    policy: RetryPolicy = ONE_TRY,
    calling: str = "sync",
) -> tuple[APIConnectionError, str]:
    caplog.set_level(logging.INFO, logger="moodlemate.ai")
    gpt = GPT("openai", endpoint=endpoint, api_key=TEST_KEY, retry=policy)

    def call() -> object:
        if calling == "async":
            return asyncio.run(gpt.achat_completion("gpt-4o-mini", "", "hi"))
        return gpt.chat_completion("gpt-4o-mini", "", "hi")

    with pytest.raises(APIConnectionError) as caught:
        call()
    first = next(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    return caught.value, first


def test_nothing_listening_is_refused(caplog: pytest.LogCaptureFixture, calling: str) -> None:
    port = _free_port()
    error, first_line = _fail(f"http://127.0.0.1:{port}/v1", caplog, calling=calling)
    assert error.cause_kind == "refused"
    for text in (str(error), first_line):
        assert f"127.0.0.1:{port}" in text
        assert "(refused)" in text  # the cause, named as the CLI and the first log line name it


def test_a_host_that_does_not_resolve_is_a_dns_failure(
    caplog: pytest.LogCaptureFixture, calling: str
) -> None:
    error, first_line = _fail("http://no-such-host.invalid:8123/v1", caplog, calling=calling)
    assert error.cause_kind == "dns"
    for text in (str(error), first_line):
        assert "no-such-host.invalid" in text
        assert "DNS" in text


def test_https_to_a_plain_http_port_is_a_tls_failure(
    caplog: pytest.LogCaptureFixture, calling: str
) -> None:
    # A server speaking plain HTTP answers the TLS hello with text: the handshake fails.
    with socket.create_server(("127.0.0.1", 0)) as plain:
        port = plain.getsockname()[1]

        def answer() -> None:
            for _ in range(2):
                conn, _ = plain.accept()
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                conn.close()

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        error, first_line = _fail(f"https://127.0.0.1:{port}/v1", caplog, calling=calling)
        thread.join(5)
    assert error.cause_kind == "tls"
    for text in (str(error), first_line):
        assert f"127.0.0.1:{port}" in text
        assert "TLS" in text


def test_a_server_that_never_answers_times_out_naming_it(
    silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    error, first_line = _fail(f"http://127.0.0.1:{silent_port}/v1", caplog, SHORT)
    assert isinstance(error, APITimeoutError)
    assert error.cause_kind == "timeout"
    for text in (str(error), first_line):
        assert f"127.0.0.1:{silent_port}" in text
        assert "timed out" in text
