"""The loopback OpenAI server, driven over real HTTP with the standard library only."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from moodlemate.ai.testing import Fault, LoopbackServer, RecordedRequest, Reply

CHAT = "/v1/chat/completions"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


def chat_body(
    model: str = "gpt-4o-mini", text: str = "hello there", **extra: Any
) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def call(
    server: LoopbackServer,
    body: Any = None,
    *,
    path: str = CHAT,
    method: str = "POST",
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, lower-cased headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=payload, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def error_of(data: bytes) -> dict[str, Any]:
    error = json.loads(data)["error"]
    assert isinstance(error, dict)
    return error


def sse_events(data: bytes) -> list[Any]:
    """Decode a whole text/event-stream body; the [DONE] sentinel stays a string."""
    events: list[Any] = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        value = block[len("data: ") :]
        events.append(value if value == "[DONE]" else json.loads(value))
    return events


# --- lifecycle and addresses ----------------------------------------------------------------


def test_addresses_and_context_manager_lifecycle() -> None:
    with LoopbackServer() as srv:
        port = srv.port
        assert srv.origin == f"http://127.0.0.1:{port}"
        assert srv.url == f"http://127.0.0.1:{port}/v1"
        with urllib.request.urlopen(srv.url + "/models", timeout=5) as resp:
            assert resp.status == 200
    with pytest.raises(RuntimeError):
        _ = srv.url
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_restart_keeps_the_port_and_stop_is_idempotent() -> None:
    srv = LoopbackServer().start()
    port = srv.port
    srv.stop()
    srv.stop()
    srv.start()
    try:
        assert srv.port == port
        status, _, _ = call(srv, chat_body())
        assert status == 200
    finally:
        srv.stop()


def get_models(conn: http.client.HTTPConnection) -> bytes:
    conn.request("GET", "/v1/models")
    return conn.getresponse().read()


def test_stop_is_prompt_with_a_sleeping_handler_and_an_idle_keepalive() -> None:
    srv = LoopbackServer().start()
    idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    get_models(idle)
    srv.enqueue(Fault.slow(30))
    hung = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    body = json.dumps(chat_body()).encode()
    hung.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    deadline = time.monotonic() + 5
    while not srv.chat_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 1.0
    # The idle keep-alive connection was cut rather than left serving a stopped server.
    assert hung.recv(1024) == b""
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        get_models(idle)
    idle.close()
    hung.close()


# --- successful replies ---------------------------------------------------------------------


def test_default_reply_echoes_last_user_message_with_openai_shape(server: LoopbackServer) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "say hi twice"},
        ],
    }
    req = urllib.request.Request(
        server.url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["x-request-id"].startswith("req_")
        assert resp.headers["openai-processing-ms"].isdigit()
        data = json.loads(resp.read())
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-4o-mini"
    (choice,) = data["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Echo: say hi twice"
    usage = data["usage"]
    assert usage["prompt_tokens"] == 7  # whitespace words over all messages
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == 11
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert "cost" not in usage


def test_request_ids_are_unique(server: LoopbackServer) -> None:
    ids = {call(server, chat_body())[1]["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_reply_fields_override_everything(server: LoopbackServer) -> None:
    server.enqueue(
        Reply(
            text="custom",
            model="gpt-4o-mini-2024-07-18",
            finish_reason="length",
            prompt_tokens=100,
            completion_tokens=20,
            cached_tokens=40,
            reasoning_tokens=8,
            cost=0.00123,
            headers={"x-ratelimit-remaining-requests": "9"},
            status=201,
        )
    )
    status, headers, data = call(server, chat_body())
    assert status == 201
    assert headers["x-ratelimit-remaining-requests"] == "9"
    body = json.loads(data)
    assert body["model"] == "gpt-4o-mini-2024-07-18"
    assert body["choices"][0]["message"]["content"] == "custom"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 40, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 8,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
        "cost": 0.00123,
    }


def test_reply_delay_holds_the_answer_back(server: LoopbackServer) -> None:
    server.enqueue(Reply(text="late", delay=0.3))
    started = time.monotonic()
    status, _, data = call(server, chat_body())
    assert status == 200
    assert time.monotonic() - started >= 0.3
    assert json.loads(data)["choices"][0]["message"]["content"] == "late"


def test_openrouter_paths_are_served(server: LoopbackServer) -> None:
    status, _, data = call(
        server, chat_body(model="openai/gpt-4o-mini"), path="/api/v1/chat/completions"
    )
    assert status == 200
    assert json.loads(data)["model"] == "openai/gpt-4o-mini"
    status, _, data = call(server, method="GET", path="/api/v1/models")
    assert status == 200
    assert json.loads(data)["object"] == "list"


# --- the script, the responder and the request log -----------------------------------------


def test_script_is_consumed_first_in_first_out(server: LoopbackServer) -> None:
    server.enqueue(Reply(text="one"), Fault.status(500))
    server.enqueue(Reply(text="two"))
    assert server.pending == 3
    results = [call(server, chat_body()) for _ in range(4)]
    assert [status for status, _, _ in results] == [200, 500, 200, 200]
    texts = [json.loads(results[i][2])["choices"][0]["message"]["content"] for i in (0, 2, 3)]
    assert texts == ["one", "two", "Echo: hello there"]
    assert server.pending == 0


def test_models_requests_do_not_consume_the_script(server: LoopbackServer) -> None:
    server.enqueue(Reply(text="kept"))
    assert call(server, method="GET", path="/v1/models")[0] == 200
    assert server.pending == 1


def test_responder_answers_when_the_script_is_empty(server: LoopbackServer) -> None:
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> Reply | Fault:
        seen.append(body)
        return Reply(text=body["messages"][-1]["content"].upper())

    server.responder = responder
    server.enqueue(Reply(text="scripted"))
    first = json.loads(call(server, chat_body(text="abc"))[2])
    second = json.loads(call(server, chat_body(text="abc"))[2])
    assert first["choices"][0]["message"]["content"] == "scripted"
    assert second["choices"][0]["message"]["content"] == "ABC"
    assert seen == [chat_body(text="abc")]


def test_a_failing_responder_becomes_a_500(server: LoopbackServer) -> None:
    def responder(body: dict[str, Any]) -> Reply | Fault:
        raise KeyError("boom")

    server.responder = responder
    status, _, data = call(server, chat_body())
    assert status == 500
    assert "boom" in error_of(data)["message"]


def test_request_log_records_everything_before_answering(server: LoopbackServer) -> None:
    server.enqueue(Fault.status(503))
    before = time.monotonic()
    call(server, chat_body(), headers={"Authorization": "Bearer sk-x", "X-Custom": "1"})
    call(server, method="GET", path="/v1/models?limit=2")
    call(server, raw=b"not json", headers={"Content-Type": "application/json"})
    call(server, method="DELETE", path="/v1/files/f1")
    log = server.requests
    assert [(r.method, r.path) for r in log] == [
        ("POST", CHAT),
        ("GET", "/v1/models"),
        ("POST", CHAT),
        ("DELETE", "/v1/files/f1"),
    ]
    first = log[0]
    assert isinstance(first, RecordedRequest)
    assert first.body == chat_body()
    assert json.loads(first.raw) == chat_body()
    assert first.headers["authorization"] == "Bearer sk-x"
    assert first.headers["x-custom"] == "1"
    assert before <= first.received_at <= log[1].received_at <= time.monotonic()
    assert log[1].query == "limit=2"
    assert log[2].body is None
    assert log[2].raw == b"not json"
    assert [r.path for r in server.chat_requests] == [CHAT, CHAT]
    with pytest.raises(AttributeError):
        first.path = "/changed"  # type: ignore[misc]


def test_requests_is_a_snapshot_and_clear_forgets_log_and_script(server: LoopbackServer) -> None:
    call(server, chat_body())
    snapshot = server.requests
    snapshot.clear()
    assert len(server.requests) == 1
    server.enqueue(Fault.status(500))
    server.clear()
    assert server.requests == []
    assert server.pending == 0
    assert call(server, chat_body())[0] == 200


def test_enqueue_rejects_other_objects(server: LoopbackServer) -> None:
    with pytest.raises(TypeError):
        server.enqueue("hi")  # type: ignore[arg-type]


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_type", "error_code"),
    [
        (400, "invalid_request_error", None),
        (401, "invalid_request_error", "invalid_api_key"),
        (404, "invalid_request_error", "model_not_found"),
        (429, "requests", "rate_limit_exceeded"),
        (500, "server_error", None),
        (503, "server_error", None),
    ],
)
def test_status_faults_carry_openai_error_bodies(
    server: LoopbackServer, code: int, error_type: str, error_code: str | None
) -> None:
    server.enqueue(Fault.status(code))
    status, headers, data = call(server, chat_body(model="gpt-4o-mini"))
    assert status == code
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"].startswith("req_")
    error = error_of(data)
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["code"] == error_code
    assert error["message"]


def test_model_not_found_names_the_requested_model(server: LoopbackServer) -> None:
    server.enqueue(Fault.status(404))
    _, _, data = call(server, chat_body(model="gpt-9"))
    assert error_of(data)["message"] == (
        "The model `gpt-9` does not exist or you do not have access to it."
    )


def test_quota_fault_is_a_429_that_says_billing(server: LoopbackServer) -> None:
    server.enqueue(Fault.quota())
    status, _, data = call(server, chat_body())
    assert status == 429
    error = error_of(data)
    assert error["type"] == "insufficient_quota"
    assert error["code"] == "insufficient_quota"
    assert error["message"].startswith(
        "You exceeded your current quota, please check your plan and billing details."
    )


def test_402_has_openrouters_shape(server: LoopbackServer) -> None:
    server.enqueue(Fault.status(402))
    status, _, data = call(server, chat_body())
    assert status == 402
    error = error_of(data)
    assert error["code"] == 402
    assert error["message"].startswith("Insufficient credits")


def test_status_fault_overrides_and_retry_headers(server: LoopbackServer) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    server.enqueue(
        Fault.status(
            429,
            message="slow down",
            type="tokens",
            code_str="custom_code",
            retry_after=2,
            retry_after_ms=150,
            should_retry=False,
            headers={"X-Extra": "yes"},
        ),
        Fault.status(503, retry_after=date, should_retry=True),
        Fault.status(500, retry_after=0.5, body={"detail": "raw"}),
    )
    status, headers, data = call(server, chat_body())
    assert status == 429
    assert headers["retry-after"] == "2"
    assert headers["retry-after-ms"] == "150"
    assert headers["x-should-retry"] == "false"
    assert headers["x-extra"] == "yes"
    assert error_of(data) == {
        "message": "slow down",
        "type": "tokens",
        "param": None,
        "code": "custom_code",
    }
    status, headers, _ = call(server, chat_body())
    assert (status, headers["retry-after"], headers["x-should-retry"]) == (503, date, "true")
    assert "retry-after-ms" not in headers
    status, headers, data = call(server, chat_body())
    assert (status, headers["retry-after"]) == (500, "0.5")
    assert json.loads(data) == {"detail": "raw"}


def test_status_fault_rejects_success_codes() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        Fault.status(200)


def test_reset_reaches_the_client_as_a_connection_reset(server: LoopbackServer) -> None:
    server.enqueue(Fault.reset(), Fault.reset())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", CHAT, body=json.dumps(chat_body()))
        with pytest.raises(ConnectionResetError):
            conn.getresponse()
    finally:
        conn.close()
    # At the socket level: an RST (ECONNRESET), not an orderly FIN (recv returning b"").
    payload = json.dumps(chat_body()).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
    assert len(server.chat_requests) == 2
    assert call(server, chat_body())[0] == 200


def test_malformed_is_a_200_with_broken_json(server: LoopbackServer) -> None:
    server.enqueue(Fault.malformed())
    status, headers, data = call(server, chat_body())
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(data)
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)


def test_slow_outlasts_a_client_timeout_quietly(
    server: LoopbackServer, capfd: pytest.CaptureFixture[str]
) -> None:
    server.enqueue(Fault.slow(0.5))
    with pytest.raises(TimeoutError):
        call(server, chat_body(), timeout=0.15)
    time.sleep(0.6)  # let the handler wake up and write to the departed client
    assert call(server, chat_body())[0] == 200
    out, err = capfd.readouterr()
    assert err == ""
    assert out == ""


def test_slow_answers_correctly_when_the_client_waits(server: LoopbackServer) -> None:
    server.enqueue(Fault.slow(0.25, Reply(text="finally")))
    started = time.monotonic()
    status, _, data = call(server, chat_body())
    assert status == 200
    assert time.monotonic() - started >= 0.25
    assert json.loads(data)["choices"][0]["message"]["content"] == "finally"


def test_error_in_200(server: LoopbackServer) -> None:
    server.enqueue(Fault.error_in_200(code=429, message="Provider rate limited"))
    status, _, data = call(server, chat_body())
    assert status == 200
    assert json.loads(data) == {"error": {"code": 429, "message": "Provider rate limited"}}


def test_stream_break_on_a_plain_request_truncates_the_body(server: LoopbackServer) -> None:
    server.enqueue(Fault.stream_break())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", CHAT, body=json.dumps(chat_body()))
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            resp.read()
    finally:
        conn.close()


# --- streaming ------------------------------------------------------------------------------


def test_stream_sends_role_then_content_then_done(server: LoopbackServer) -> None:
    text = "one two three four five six seven eight"
    server.enqueue(Reply(text=text))
    status, headers, data = call(server, chat_body(stream=True))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    assert headers["x-request-id"].startswith("req_")
    events = sse_events(data)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert "".join(contents) == text
    assert 2 <= len(chunks) - 1 <= 8  # a few content pieces, not one per character
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + [
        "stop"
    ]
    assert all("usage" not in c for c in chunks)


def test_stream_with_usage_ends_with_an_empty_choices_chunk(server: LoopbackServer) -> None:
    server.enqueue(Reply(chunks=["Hel", "lo", "!"], cached_tokens=1, reasoning_tokens=2, cost=0.5))
    body = chat_body(stream=True, stream_options={"include_usage": True})
    events = sse_events(call(server, body)[2])
    assert events[-1] == "[DONE]"
    *chunks, final = events[:-1]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "Hel", "lo", "!"]
    assert all(c["usage"] is None for c in chunks)
    assert final["choices"] == []
    assert final["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2
    assert final["usage"]["prompt_tokens_details"]["cached_tokens"] == 1
    assert final["usage"]["cost"] == 0.5
    usage = final["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def collect_data_lines(resp: http.client.HTTPResponse, into: list[bytes]) -> None:
    """Read SSE lines as they arrive, so the ones before a break are kept."""
    while line := resp.readline():
        if line.startswith(b"data: "):
            into.append(line)


def test_stream_break_cuts_after_n_events(server: LoopbackServer) -> None:
    server.enqueue(Fault.stream_break(after=2))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    received: list[bytes] = []
    try:
        conn.request("POST", CHAT, body=json.dumps(chat_body(text="a b c d e f", stream=True)))
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            collect_data_lines(resp, received)
    finally:
        conn.close()
    assert len(received) == 2
    assert b"[DONE]" not in b"".join(received)


def test_stream_error_in_200_sends_an_error_event(server: LoopbackServer) -> None:
    server.enqueue(Fault.error_in_200())
    events = sse_events(call(server, chat_body(stream=True))[2])
    assert events[-1] == {"error": {"code": 502, "message": "Provider returned error"}}


def test_reject_stream_models(server: LoopbackServer) -> None:
    server.reject_stream_models = {"o1"}
    status, _, data = call(server, chat_body(model="o1", stream=True, temperature=1))
    assert status == 400
    assert error_of(data) == {
        "message": "Unsupported value: 'stream' does not support true with this model. "
        "Supported values are: false.",
        "type": "invalid_request_error",
        "param": "stream",
        "code": "unsupported_value",
    }
    assert call(server, chat_body(model="o1"))[0] == 200
    assert call(server, chat_body(model="gpt-4o", stream=True))[0] == 200


# --- validation and strict model rules ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "param", "code"),
    [
        (b"{not json", None, None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), None, None),
        (json.dumps(chat_body(model="")).encode(), None, None),
        (json.dumps({"model": "gpt-4o-mini"}).encode(), "messages", "missing_required_parameter"),
        (json.dumps({"model": "gpt-4o-mini", "messages": []}).encode(), "messages", "empty_array"),
    ],
)
def test_invalid_requests_are_400_even_when_not_strict(
    server: LoopbackServer, raw: bytes, param: str | None, code: str | None
) -> None:
    server.strict = False
    server.enqueue(Reply(text="kept"))
    status, _, data = call(server, raw=raw)
    assert status == 400
    error = error_of(data)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert server.pending == 1  # rejected requests leave the script alone
    assert len(server.chat_requests) == 1


MAX_TOKENS_MESSAGE = (
    "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead."
)


@pytest.mark.parametrize(
    "model",
    ["o1", "o1-mini-2024-09-12", "o1-preview", "o3", "openai/o3-mini", "o4-mini", "gpt-5-nano"],
)
def test_reasoning_models_reject_max_tokens(server: LoopbackServer, model: str) -> None:
    status, _, data = call(server, chat_body(model=model, max_tokens=50))
    assert status == 400
    assert error_of(data) == {
        "message": MAX_TOKENS_MESSAGE,
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
    assert call(server, chat_body(model=model, max_completion_tokens=50))[0] == 200


@pytest.mark.parametrize("temperature", [0.7, 0, 1.5])
def test_reasoning_models_reject_non_default_temperature(
    server: LoopbackServer, temperature: float
) -> None:
    status, _, data = call(server, chat_body(model="gpt-5-mini", temperature=temperature))
    assert status == 400
    assert error_of(data) == {
        "message": f"Unsupported value: 'temperature' does not support {temperature} with this "
        "model. Only the default (1) value is supported.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "unsupported_value",
    }
    assert call(server, chat_body(model="gpt-5-mini", temperature=1))[0] == 200


def test_o1_mini_rejects_system_and_developer_roles(server: LoopbackServer) -> None:
    body = chat_body(model="o1-mini")
    body["messages"] = [
        {"role": "user", "content": "a"},
        {"role": "developer", "content": "b"},
    ]
    status, _, data = call(server, body)
    assert status == 400
    assert error_of(data) == {
        "message": "Unsupported value: 'messages[1].role' does not support 'developer' "
        "with this model.",
        "type": "invalid_request_error",
        "param": "messages[1].role",
        "code": "unsupported_value",
    }
    body["messages"] = [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]
    _, _, data = call(server, body)
    assert error_of(data)["param"] == "messages[0].role"
    assert "'system'" in error_of(data)["message"]
    body["model"] = "o3-mini"
    assert call(server, body)[0] == 200


def test_other_models_and_non_strict_accept_everything(server: LoopbackServer) -> None:
    ok = chat_body(model="gpt-4o-mini", max_tokens=10, temperature=0.7)
    assert call(server, ok)[0] == 200
    server.strict = False
    assert call(server, chat_body(model="o1-mini", max_tokens=10, temperature=0.2))[0] == 200


# --- authentication, models, unknown paths --------------------------------------------------


def test_api_key_is_enforced_with_masked_messages() -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    wrong = "sk-wrong-0123456789abcdefghij"
    with LoopbackServer(api_key=key) as srv:
        status, headers, data = call(srv, chat_body())
        assert status == 401
        assert headers["x-request-id"].startswith("req_")
        assert error_of(data)["code"] == "invalid_api_key"
        status, _, data = call(srv, chat_body(), headers={"Authorization": f"Bearer {wrong}"})
        assert status == 401
        error = error_of(data)
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"
        assert wrong not in error["message"]
        assert error["message"].startswith(f"Incorrect API key provided: {wrong[:8]}*")
        assert f"*{wrong[-4:]}." in error["message"]
        status, _, _ = call(srv, chat_body(), headers={"Authorization": f"Bearer {key}"})
        assert status == 200
        assert len(srv.chat_requests) == 3
        srv.api_key = "short"
        _, _, data = call(srv, chat_body(), headers={"Authorization": "Bearer shor"})
        assert "shor." not in error_of(data)["message"]


def test_models_lists_configured_models(server: LoopbackServer) -> None:
    status, headers, data = call(server, method="GET", path="/v1/models")
    assert status == 200
    assert headers["content-type"] == "application/json"
    listing = json.loads(data)
    assert listing["object"] == "list"
    assert listing["data"]
    for model in listing["data"]:
        assert model["object"] == "model"
        assert {"id", "created", "owned_by"} <= set(model)
    server.models = [{"id": "m1", "object": "model", "created": 1, "owned_by": "me"}]
    assert json.loads(call(server, method="GET", path="/v1/models")[2])["data"] == server.models


def test_unknown_paths_are_404_with_an_openai_error(server: LoopbackServer) -> None:
    status, _, data = call(server, chat_body(), path="/v1/completions")
    assert status == 404
    assert error_of(data) == {
        "message": "Invalid URL (POST /v1/completions)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert call(server, method="GET", path=CHAT)[0] == 404


# --- fault_rate -----------------------------------------------------------------------------


def sequence_with_seed(seed: int, n: int) -> list[int]:
    with LoopbackServer() as srv:
        srv.fault_rate(0.25, faults=[Fault.status(500), Fault.status(503)], seed=seed)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        try:
            statuses = []
            for _ in range(n):
                conn.request("POST", CHAT, body=json.dumps(chat_body()))
                resp = conn.getresponse()
                resp.read()
                statuses.append(resp.status)
        finally:
            conn.close()
        return statuses


def test_fault_rate_is_seeded_and_proportional() -> None:
    first = sequence_with_seed(1, 400)
    assert first == sequence_with_seed(1, 400)
    assert first != sequence_with_seed(2, 400)
    counts = Counter(first)
    assert set(counts) == {200, 500, 503}
    assert 60 <= counts[500] + counts[503] <= 140  # 25% of 400 = 100
    assert abs(counts[500] - counts[503]) < 40


def test_fault_rate_yields_to_the_script_and_turns_off(server: LoopbackServer) -> None:
    server.fault_rate(1.0, faults=[Fault.status(500)], seed=3)
    server.enqueue(Reply(text="scripted"))
    assert call(server, chat_body())[0] == 200
    assert call(server, chat_body())[0] == 500
    server.fault_rate(0)
    assert [call(server, chat_body())[0] for _ in range(5)] == [200] * 5
    with pytest.raises(ValueError, match="between 0 and 1"):
        server.fault_rate(1.5)


# --- HTTP/1.1 behaviour and load ------------------------------------------------------------


def test_keepalive_connection_is_reused_across_replies_errors_and_streams(
    server: LoopbackServer,
) -> None:
    server.enqueue(Reply(text="a"), Fault.status(429, retry_after=0), Fault.malformed())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        sock = None
        bodies = [chat_body(), chat_body(), chat_body(), chat_body(stream=True), chat_body()]
        statuses = []
        for body in bodies:
            conn.request("POST", CHAT, body=json.dumps(body))
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
            assert not resp.will_close
            sock = sock or conn.sock
            assert conn.sock is sock
        assert statuses == [200, 429, 200, 200, 200]
    finally:
        conn.close()


def test_chunked_request_bodies_are_read(server: LoopbackServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        payload = json.dumps(chat_body(text="chunked body")).encode()
        conn.request("POST", CHAT, body=iter([payload[:10], payload[10:]]), encode_chunked=True)
        resp = conn.getresponse()
        data = json.loads(resp.read())
    finally:
        conn.close()
    assert data["choices"][0]["message"]["content"] == "Echo: chunked body"
    assert server.chat_requests[0].body == chat_body(text="chunked body")


def test_sustains_2000_requests_from_16_threads(server: LoopbackServer) -> None:
    per_thread = 125
    failures: list[str] = []

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            for i in range(per_thread):
                conn.request("POST", CHAT, body=json.dumps(chat_body(text=f"t{n} r{i}")))
                resp = conn.getresponse()
                body = json.loads(resp.read())
                if body["choices"][0]["message"]["content"] != f"Echo: t{n} r{i}":
                    failures.append(f"{n}/{i}")
        except Exception as exc:
            failures.append(repr(exc))
        finally:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert failures == []
    assert len(server.chat_requests) == 16 * per_thread
    assert elapsed < 20
