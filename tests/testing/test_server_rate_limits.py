"""The loopback server's OpenAI rate limits over real HTTP: x-ratelimit-* headers, 429s."""

from __future__ import annotations

import http.client
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from moodlemate.testing import Fault, LoopbackServer, RateLimit, Reply
from moodlemate.testing._rate_limits import go_duration

CHAT = "/v1/chat/completions"
KEY = "sk-test-rate-limits-0123456789"
HELP = "Visit https://platform.openai.com/account/rate-limits to learn more."
GO_DURATION = re.compile(r"^(?:(\d+)m)?(\d+(?:\.\d+)?)(ms|s)$")


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


def chat_body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def call(
    server: LoopbackServer, body: Any = None, *, path: str = CHAT, method: str = "POST"
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, lower-cased headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=payload)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def seconds(duration: str) -> float:
    """A Go-style duration (``98ms``, ``6.5s``, ``1m0s``) in seconds; fails on anything else."""
    match = GO_DURATION.match(duration)
    assert match, duration
    minutes, amount, unit = match.groups()
    value = float(amount) / (1000 if unit == "ms" else 1)
    return value + 60 * int(minutes or 0)


def test_go_durations_read_as_openai_writes_them() -> None:
    assert [seconds(d) for d in ("120ms", "1s", "6.5s", "1m0s", "6m0s")] == [
        0.12,
        1,
        6.5,
        60,
        360,
    ]


def test_every_chat_answer_carries_the_per_minute_allowance(server: LoopbackServer) -> None:
    server.rate_limit = RateLimit(requests_per_minute=600, tokens_per_minute=30_000)
    remaining = []
    for _ in range(3):
        status, headers, _ = call(server, chat_body(max_tokens=100))
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "600"
        assert headers["x-ratelimit-limit-tokens"] == "30000"
        assert 59 < seconds(headers["x-ratelimit-reset-requests"]) <= 60
        assert 59 < seconds(headers["x-ratelimit-reset-tokens"]) <= 60
        remaining.append(
            (
                int(headers["x-ratelimit-remaining-requests"]),
                int(headers["x-ratelimit-remaining-tokens"]),
            )
        )
    # "hello there" is 11 characters: 3 prompt tokens, plus the 100 reserved for the output
    assert remaining == [(599, 29_897), (598, 29_794), (597, 29_691)]
    status, headers, data = call(server, chat_body(stream=True))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert data.endswith(b"data: [DONE]\n\n")
    assert headers["x-ratelimit-remaining-requests"] == "596"
    assert headers["x-ratelimit-remaining-tokens"] == str(29_691 - 3 - 16)  # 16: no max given
    assert server.admitted == 4
    assert server.rate_limited == 0


def test_without_tokens_per_minute_only_request_headers_are_sent(server: LoopbackServer) -> None:
    status, headers, _ = call(server, chat_body())
    assert status == 200
    assert not [name for name in headers if name.startswith("x-ratelimit")]  # off by default
    server.rate_limit = RateLimit(requests_per_minute=60)
    _, headers, _ = call(server, chat_body())
    assert sorted(name for name in headers if name.startswith("x-ratelimit")) == [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ]


def test_a_full_slice_refuses_with_openais_429_and_the_next_slice_admits(
    server: LoopbackServer,
) -> None:
    started = time.monotonic()
    # 2 per slice; slices of 2 s, so three requests land in one even on a loaded machine.
    server.rate_limit = RateLimit(requests_per_minute=60, slice_seconds=2.0)
    assert [call(server, chat_body())[0] for _ in range(2)] == [200, 200]
    status, headers, data = call(server, chat_body())
    assert status == 429
    error = json.loads(data)["error"]
    wait = int(headers["retry-after-ms"]) / 1000
    assert 0 < wait <= 2.0
    assert time.monotonic() - started < 2.0  # still in the first slice (or the test is moot)
    assert error == {
        "message": "Rate limit reached for gpt-4o-mini in organization org-loopback on requests "
        f"per min (RPM): Limit 60, Used 60, Requested 1. Please try again in "
        f"{go_duration(wait)}. {HELP}",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert headers["retry-after"] == str(math.ceil(wait))  # whole seconds, rounded up
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "58"  # the minute has room; the slice not
    assert (server.admitted, server.rate_limited) == (2, 1)
    time.sleep(wait)
    assert [call(server, chat_body())[0] for _ in range(3)] == [200, 200, 429]
    assert (server.admitted, server.rate_limited) == (4, 2)


def test_a_request_beyond_the_slices_token_budget_is_refused_on_tpm(
    server: LoopbackServer,
) -> None:
    # 6000 tokens a minute in 6 s slices: 600 a slice
    server.rate_limit = RateLimit(requests_per_minute=600, tokens_per_minute=6000)
    status, headers, data = call(server, chat_body(max_completion_tokens=700))
    assert status == 429
    error = json.loads(data)["error"]
    assert error["type"] == "tokens"
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"].startswith(
        "Rate limit reached for gpt-4o-mini in organization org-loopback on tokens per min "
        "(TPM): Limit 6000, Used 0, Requested 703. Please try again in "
    )
    match = re.search(r"Please try again in (\S+)\. Visit", error["message"])
    assert match
    assert 0 < seconds(match.group(1)) <= 6
    assert int(headers["retry-after"]) <= 6
    assert headers["x-ratelimit-remaining-tokens"] == "6000"
    assert call(server, chat_body(max_completion_tokens=500))[0] == 200  # 503 tokens fit
    status, _, data = call(server, chat_body(max_completion_tokens=200))  # 503 + 203 do not
    assert status == 429
    assert "Limit 6000, Used 5030, Requested 203" in json.loads(data)["error"]["message"]
    assert (server.admitted, server.rate_limited) == (1, 2)


def test_concurrent_requests_never_get_more_than_the_slice_budget(server: LoopbackServer) -> None:
    server.rate_limit = RateLimit(requests_per_minute=5, slice_seconds=60)  # 5 a minute
    statuses: list[int] = []
    lock = threading.Lock()
    gate = threading.Barrier(40)

    def one() -> None:
        gate.wait()
        status = call(server, chat_body())[0]
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(statuses) == [200] * 5 + [429] * 35
    assert (server.admitted, server.rate_limited) == (5, 35)
    assert len(server.chat_requests) == 40


def test_a_refusal_consumes_nothing_from_the_script(server: LoopbackServer) -> None:
    server.rate_limit = RateLimit(requests_per_minute=1, slice_seconds=60)
    server.enqueue(Reply(text="first"), Fault.status(503), Reply(text="third"))
    status, headers, data = call(server, chat_body())
    assert (status, json.loads(data)["choices"][0]["message"]["content"]) == (200, "first")
    assert call(server, chat_body())[0] == 429
    assert server.pending == 2
    server.rate_limit = RateLimit(requests_per_minute=600)  # setting a limit counts afresh
    assert (server.admitted, server.rate_limited) == (0, 0)
    status, headers, _ = call(server, chat_body())
    assert status == 503  # the scripted fault, with the allowance headers all the same
    assert headers["x-ratelimit-remaining-requests"] == "599"
    _, _, data = call(server, chat_body())
    assert json.loads(data)["choices"][0]["message"]["content"] == "third"
    assert server.pending == 0


def test_invalid_requests_and_other_routes_are_not_limited(server: LoopbackServer) -> None:
    server.rate_limit = RateLimit(requests_per_minute=1, slice_seconds=60)
    assert call(server, {"model": "gpt-4o-mini"})[0] == 400  # validation comes first
    assert call(server, chat_body())[0] == 200
    for path in ("/v1/models", "/v1/models/gpt-4o-mini", "/v1/files/file-none", "/v1/batches"):
        status, headers, _ = call(server, path=path, method="GET")
        assert status in (200, 404), path
        assert not [name for name in headers if name.startswith("x-ratelimit")], path
    assert call(server, chat_body())[0] == 429
    assert (server.admitted, server.rate_limited) == (1, 1)


def test_the_constructor_keyword_and_reset() -> None:
    with LoopbackServer(rate_limit=RateLimit(requests_per_minute=1, slice_seconds=60)) as srv:
        assert srv.rate_limit == RateLimit(1, slice_seconds=60)
        assert [call(srv, chat_body())[0] for _ in range(2)] == [200, 429]
        srv.reset()  # back to a new server's state: no limit, nothing counted
        assert srv.rate_limit is None
        assert (srv.admitted, srv.rate_limited) == (0, 0)
        assert [call(srv, chat_body())[0] for _ in range(2)] == [200, 200]


def test_the_openai_sdk_reads_the_headers_and_raises_its_rate_limit_error() -> None:
    with LoopbackServer(api_key=KEY, rate_limit=RateLimit(2, slice_seconds=30)) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key=KEY, max_retries=0)
        messages: Any = [{"role": "user", "content": "hi"}]
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=messages
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
        assert raw.parse().choices[0].message.content == "Echo: hi"
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert caught.value.code == "rate_limit_exceeded"
        assert caught.value.type == "requests"
        assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "1"
        assert 0 < int(caught.value.response.headers["retry-after-ms"]) <= 30_000
        assert srv.rate_limited == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests_per_minute": 0}, "requests_per_minute must be a positive int, got 0"),
        ({"requests_per_minute": 1.5}, "requests_per_minute must be a positive int, got 1.5"),
        ({"requests_per_minute": True}, "requests_per_minute must be a positive int, got True"),
        (
            {"requests_per_minute": 60, "tokens_per_minute": -5},
            "tokens_per_minute must be a positive int, got -5",
        ),
        ({"requests_per_minute": 60, "slice_seconds": 0}, "slice_seconds must be a number in"),
        ({"requests_per_minute": 60, "slice_seconds": 61}, "slice_seconds must be a number in"),
        (
            {"requests_per_minute": 60, "slice_seconds": float("nan")},
            "slice_seconds must be a number in",
        ),
    ],
)
def test_invalid_rate_limits_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        RateLimit(**kwargs)


def test_setting_anything_but_a_rate_limit_is_refused(server: LoopbackServer) -> None:
    with pytest.raises(TypeError, match="rate_limit takes a RateLimit or None, not int"):
        server.rate_limit = 600  # type: ignore[assignment]
