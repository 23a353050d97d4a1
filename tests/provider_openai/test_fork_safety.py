"""A forked child never reads its parent's pooled connections (a pre-forking server's
workers, multiprocessing with fork): two processes on one socket take each other's replies."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from adversarial import AdversarialServer, _read_request, completion_body
from moodlemate.ai import GPT
from support import TEST_KEY

pytestmark = [
    pytest.mark.usefixtures("each_transport"),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
]


def _numbered() -> tuple[AdversarialServer, list[int]]:
    """Answers "connection C request R" on each connection, for as long as it stays open."""
    connections = [0]
    lock = threading.Lock()

    def serve(sock: socket.socket) -> None:
        with lock:
            connections[0] += 1
            number = connections[0]
        for request in range(100):
            body = completion_body(f"connection {number} request {request}")
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            sock.sendall(head + body)
            try:
                _read_request(sock)
            except OSError:
                return

    return AdversarialServer({"/chat/completions": serve}), connections


def test_a_forked_child_opens_its_own_connection_and_the_parent_keeps_its_own() -> None:
    server, connections = _numbered()
    with server:
        gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY)
        assert gpt.chat_completion("gpt-4o-mini", "", "parent") == "connection 1 request 0"
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report its answer through the pipe and leave at once
            try:
                answer = gpt.chat_completion("gpt-4o-mini", "", "child")
            except BaseException as exc:
                answer = f"error: {exc!r}"
            os.write(write, answer.encode())
            os._exit(0)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        child = os.read(read, 1000).decode()
        os.close(read)
        assert os.waitstatus_to_exitcode(status) == 0
        assert child == "connection 2 request 0"
        assert gpt.chat_completion("gpt-4o-mini", "", "parent") == "connection 1 request 1"
    assert connections[0] == 2
