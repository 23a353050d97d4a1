"""Client-side pacing against the loopback server's OpenAI-style rate limits: the headers are
read as the vendors write them, a process learns the limits and spaces its calls, a 429's
retry-after holds the model, waiting never outlives an attempt's time, Redis shares the
limiter across real processes (fewer than 1 % 429s where the same fleet unpaced meets many),
and Redis failing degrades pacing to local without blocking an event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import GPT, ConfigurationError, RateLimitError, RetryPolicy, ValidationError
from moodlemate.ai._pacing import PACED
from moodlemate.ai._rate_limit_headers import parse_reset, rate_limits_from_headers
from moodlemate.ai._spend_log import SpendLog
from moodlemate.testing import Fault, LoopbackServer, RateLimit, Reply
from support import TEST_KEY

ONCE = RetryPolicy(attempts=1, deadline=30.0, attempt_timeout=10.0)


@pytest.fixture
def limited() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        yield server


def _peak(times: list[float], window: float) -> int:
    """The most requests that arrived within any ``window`` seconds."""
    times = sorted(times)
    peak, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


# -- the headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1m30.5s", 90.5),
        ("120ms", 0.12),
        ("1h1m1.5s", 3661.5),
        ("7.66s", 7.66),
        ("0s", 0.0),
        ("30", 30.0),
        ("2.5", 2.5),
    ],
)
def test_reset_durations_read_as_openai_writes_them(text: str, seconds: float) -> None:
    assert parse_reset(text) == pytest.approx(seconds)


def test_a_reset_moment_in_unix_seconds_or_milliseconds_is_the_time_left() -> None:
    now = 1_800_000_000.0
    assert parse_reset(str(int(now + 12)), now) == pytest.approx(12)
    assert parse_reset(str(int((now + 3.5) * 1000)), now) == pytest.approx(3.5)
    assert parse_reset(str(int(now - 5)), now) == 0.0  # already past


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "1m-3s", "-4", "nan", "inf", "ms"])
def test_an_unreadable_reset_is_unknown_not_an_error(text: str) -> None:
    assert parse_reset(text) is None


def test_openai_and_openrouter_header_sets_and_azures_placeholders() -> None:
    openai = rate_limits_from_headers(
        {
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-limit-tokens": "160000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "9s",
        }
    )
    assert openai is not None
    assert (openai.requests_limit, openai.requests_remaining) == (5000, 4999)
    assert openai.tokens_limit == 160000
    assert openai.exhausted_for == pytest.approx(9)  # the tokens are spent for 9 s
    router = rate_limits_from_headers(
        {"x-ratelimit-limit": "200", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "4"}
    )
    assert router is not None
    assert (router.requests_limit, router.requests_remaining, router.requests_reset) == (200, 0, 4)
    azure = rate_limits_from_headers(
        {"x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "-1"}
    )
    assert azure is None  # -1 means "not reported": nothing was stated
    assert rate_limits_from_headers({"content-type": "application/json"}) is None


# -- one process ----------------------------------------------------------------------------


def test_completions_and_streams_carry_the_servers_limits(limited: LoopbackServer) -> None:
    limited.rate_limit = RateLimit(600)
    gpt = GPT("openai", endpoint=limited.url, api_key=TEST_KEY)
    first = gpt.complete("gpt-4o-mini", "", "hi")
    assert first.rate_limits is not None
    assert first.rate_limits.requests_limit == 600
    assert first.rate_limits.requests_remaining == 599
    with gpt.stream("gpt-4o-mini", "", "hi") as stream:
        "".join(stream)
    assert stream.completion is not None
    assert stream.completion.rate_limits is not None
    assert stream.completion.rate_limits.requests_remaining == 598


def test_a_paced_process_learns_the_limit_and_meets_no_429(limited: LoopbackServer) -> None:
    limited.rate_limit = RateLimit(600, slice_seconds=1.0)  # 10 per second, enforced
    gpt = GPT("openai", endpoint=limited.url, api_key=TEST_KEY, retry=ONCE, pacing=True)
    failures: list[BaseException] = []

    def work() -> None:
        for _ in range(5):
            try:
                gpt.complete("gpt-4o-mini", "", "hi")
            except RateLimitError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert limited.rate_limited == 0
    assert limited.admitted == 40
    assert gpt.pacer is not None
    limit = gpt.pacer.limit_for(limited.origin, "gpt-4o-mini")
    assert limit is not None
    assert limit.requests_per_minute == 600
    times = sorted(r.received_at for r in limited.chat_requests)
    assert times[-1] - times[0] >= 3.0  # 40 calls at 9 a second (90 % of 10) take 4 windows


def test_the_same_process_unpaced_meets_429s(limited: LoopbackServer) -> None:
    """The control for the test above: it is the pacing that keeps the 429s away."""
    limited.rate_limit = RateLimit(600, slice_seconds=1.0)
    gpt = GPT("openai", endpoint=limited.url, api_key=TEST_KEY, retry=ONCE)
    assert gpt.pacer is None  # off unless asked for, or Redis is set
    refused = 0

    def work() -> None:
        nonlocal refused
        for _ in range(5):
            try:
                gpt.complete("gpt-4o-mini", "", "hi")
            except RateLimitError:
                refused += 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert refused == limited.rate_limited > 0


def test_a_configured_limit_paces_from_the_first_call(server: LoopbackServer) -> None:
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        pacing={"gpt-4o-mini": {"requests_per_minute": 300}},  # no headers from this server
    )
    granted = _record_grants(gpt)
    threads = [
        threading.Thread(target=lambda: [gpt.complete("gpt-4o-mini", "", "hi") for _ in range(4)])
        for _ in range(4)
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    times = [r.received_at for r in server.chat_requests]
    assert len(times) == len(granted) == 16
    # 300/min at 90 % is 9 per 2 s window: 16 calls need a second window, from the first call.
    # The client counts a call when the pacer lets it go; unpaced, all 16 would go at once.
    assert _peak(granted, 2.0 - _SCHEDULING) <= 9
    # At the server, arrivals also bunch by the sending delay, which a loaded machine
    # stretches (the first calls also pay for a new connection): measured in this run.
    delay = _sending_delay(granted, times)
    assert _peak(times, max(2.0 - delay - _SCHEDULING, 0.01)) <= 9
    assert time.monotonic() - began >= 2.0
    other = GPT("openai", endpoint=server.url, api_key=TEST_KEY, pacing=True)
    assert other.pacer is not None
    assert other.pacer.limit_for(server.origin, "gpt-4o") is None  # another model: unpaced


_SCHEDULING = 0.05
"""Seconds between the pacer taking a slot and the test reading the clock: a thread switch
on a loaded machine. Far below what a broken pacer shows (a tenth call 2 s early)."""


def _record_grants(gpt: GPT) -> list[float]:
    """When the instance's pacer let each attempt go (monotonic, like the server's
    ``received_at``): the real pacer, observed."""
    pacer = gpt.pacer
    assert pacer is not None
    granted: list[float] = []
    take = pacer.acquire

    def acquire(origin: str, model: str, tokens: int, deadline: float | None) -> None:
        take(origin, model, tokens, deadline)
        granted.append(time.monotonic())

    pacer.acquire = acquire  # type: ignore[method-assign]
    return granted


def _sending_delay(granted: list[float], arrived: list[float]) -> float:
    """The longest a call took from its slot to the server. Sorted, the k-th arrival comes
    no earlier than the k-th grant, and no later than it plus this; so arrivals ``d`` seconds
    closer together than their grants are at most this ``d``."""
    return max(a - g for g, a in zip(sorted(granted), sorted(arrived), strict=True))


def test_a_429s_retry_after_holds_the_model_for_the_next_call(server: LoopbackServer) -> None:
    server.enqueue(Fault.status(429, retry_after=1))
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=ONCE, pacing=True)
    with pytest.raises(RateLimitError):
        gpt.complete("gpt-4o-mini", "", "refused")
    gpt.complete("gpt-4o-mini", "", "waits for the hold")
    first, second = (r.received_at for r in server.chat_requests)
    assert second - first >= 0.95


def test_pacing_never_waits_past_the_attempts_time_and_logs_nothing_unsent(
    server: LoopbackServer, tmp_path: Path
) -> None:
    server.enqueue(Fault.status(429, retry_after=30))
    path = tmp_path / "log.db"
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        log=path,
        pacing=True,
        retry=RetryPolicy(attempts=1, deadline=2.0, attempt_timeout=1.0),
    )
    with pytest.raises(RateLimitError):
        gpt.complete("gpt-4o-mini", "", "refused")
    began = time.monotonic()
    with pytest.raises(RateLimitError) as caught:
        gpt.complete("gpt-4o-mini", "", "would wait 30 s")
    assert time.monotonic() - began < 1.5
    assert caught.value.code == PACED
    assert "nothing was sent" in str(caught.value)
    assert len(server.chat_requests) == 1
    assert len(SpendLog(path).calls()) == 1  # the 429 was sent and logged; the paced one not


def test_a_stream_that_pacing_gave_up_on_is_not_logged(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = tmp_path / "log.db"
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        log=path,
        pacing=True,
        retry=RetryPolicy(attempts=1, deadline=2.0, attempt_timeout=1.0),
    )
    assert gpt.pacer is not None
    gpt.pacer.hold(server.origin, "gpt-4o-mini", 30)
    with (
        pytest.raises(RateLimitError, match="nothing was sent"),
        gpt.stream("gpt-4o-mini", "", "hi") as stream,
    ):
        "".join(stream)
    assert server.chat_requests == []
    assert SpendLog(path).calls() == []
    gpt.pacer.hold(server.origin, "gpt-4o", 0)  # another model is not held
    with gpt.stream("gpt-4o", "", "hi") as stream:
        assert "".join(stream)
    assert len(SpendLog(path).calls()) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-limit-requests": "abc", "x-ratelimit-remaining-requests": "-3"},
        {"x-ratelimit-limit-requests": str(10**30), "x-ratelimit-reset-requests": "NaNs"},
        {"x-ratelimit-limit-tokens": "0", "x-ratelimit-remaining-tokens": "0"},
        {"x-ratelimit-reset-requests": "9" * 5000},
    ],
)
def test_nonsense_headers_neither_break_nor_stall_calls(
    server: LoopbackServer, headers: dict[str, str]
) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=ONCE, pacing=True)
    server.enqueue(*(Reply(text="ok", headers=headers) for _ in range(3)))
    began = time.monotonic()
    for _ in range(3):
        assert gpt.chat_completion("gpt-4o-mini", "", "hi") == "ok"
    assert time.monotonic() - began < 2.0


def test_a_server_claiming_it_is_spent_for_ages_holds_calls_at_most_max_server_wait(
    server: LoopbackServer,
) -> None:
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        pacing=True,
        retry=RetryPolicy(attempts=1, deadline=2.0, attempt_timeout=1.0, max_server_wait=30.0),
    )
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "9999h"}
    server.enqueue(Reply(text="ok", headers=spent))
    gpt.chat_completion("gpt-4o-mini", "", "hi")
    with pytest.raises(RateLimitError) as caught:  # within the attempt's second, unsent
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert caught.value.code == PACED
    assert caught.value.retry_after is not None
    assert 29 < caught.value.retry_after <= 30.1
    assert len(server.chat_requests) == 1


def test_async_calls_pace_too(limited: LoopbackServer) -> None:
    limited.rate_limit = RateLimit(600, slice_seconds=1.0)
    gpt = GPT("openai", endpoint=limited.url, api_key=TEST_KEY, retry=ONCE, pacing=True)

    async def main() -> None:
        await asyncio.gather(*(gpt.acomplete("gpt-4o-mini", "", "hi") for _ in range(30)))
        await gpt.aclose()

    asyncio.run(main())
    assert limited.rate_limited == 0
    times = sorted(r.received_at for r in limited.chat_requests)
    assert times[-1] - times[0] >= 2.0  # 30 calls at 9 a second


def test_many_event_loops_in_many_threads_share_one_pacer(limited: LoopbackServer) -> None:
    limited.rate_limit = RateLimit(600, slice_seconds=1.0)
    gpt = GPT("openai", endpoint=limited.url, api_key=TEST_KEY, retry=ONCE, pacing=True)
    errors: list[BaseException] = []

    async def calls() -> None:
        try:
            await asyncio.gather(*(gpt.acomplete("gpt-4o-mini", "", "hi") for _ in range(8)))
        except BaseException as exc:
            errors.append(exc)
        await gpt.aclose()

    threads = [threading.Thread(target=asyncio.run, args=(calls(),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert limited.admitted == 32
    assert limited.rate_limited == 0


def test_pacing_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="requests_per_minute must be a whole number"):
        GPT(pacing={"gpt-4o-mini": {"requests_per_minute": 0}})
    with pytest.raises(ValidationError, match="must be a table"):
        GPT(pacing={"gpt-4o-mini": {"rpm": 10}})
    monkeypatch.setenv("MOODLEMATE_PACING", "maybe")
    with pytest.raises(ValidationError, match="MOODLEMATE_PACING"):
        GPT()
    monkeypatch.setenv("MOODLEMATE_PACING", "on")
    assert GPT().pacer is not None
    monkeypatch.delenv("MOODLEMATE_PACING")
    monkeypatch.setenv("MOODLEMATE_REDIS_URL", "redis://:hunter2-long-secret@127.0.0.1:1/0")
    gpt = GPT()
    assert gpt.redis is not None
    assert gpt.pacer is not None  # Redis set: pacing is on, shared
    assert gpt.pacer.redis == gpt.redis
    assert GPT(pacing=False).pacer is None
    monkeypatch.setenv("MOODLEMATE_REDIS_URL", "http://127.0.0.1:6379")
    with pytest.raises(ValidationError, match="MOODLEMATE_REDIS_URL"):
        GPT()
    monkeypatch.delenv("MOODLEMATE_REDIS_URL")
    bad = tmp_path / "bad.toml"
    bad.write_text('redis = "localhost:6379"\n')
    monkeypatch.setenv("MOODLEMATE_CONFIG", str(bad))
    with pytest.raises(ConfigurationError, match=r"bad.toml:1: .*'redis' redis URL"):
        GPT()
    bad.write_text('[pacing]\n"gpt-4o" = { requests_per_minute = -5 }\n')
    with pytest.raises(
        ConfigurationError,
        match=r"'pacing' \['gpt-4o'\]: requests_per_minute must be a whole number above 0",
    ):
        GPT()
    config = tmp_path / "moodlemate.toml"
    config.write_text('[pacing]\n"gpt-4o" = { tokens_per_minute = 30000 }\n')
    monkeypatch.setenv("MOODLEMATE_CONFIG", str(config))
    pacer = GPT().pacer
    assert pacer is not None
    assert pacer.configured["gpt-4o"].tokens_per_minute == 30000


# -- many processes, one Redis ---------------------------------------------------------------

_FLEET_WORKER = """
import json, sys, threading
from moodlemate.ai import GPT, RateLimitError, RetryPolicy
endpoint, redis, calls = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
gpt = GPT("openai", endpoint=endpoint, api_key="sk-test-4f1c2e9b7a6d5c3e", redis=redis,
          retry=RetryPolicy(attempts=8, deadline=120.0, attempt_timeout=30.0, wait_max=2.0))
failed = []
def work():
    for _ in range(calls):
        try:
            gpt.complete("gpt-4o-mini", "", "hi")
        except RateLimitError as exc:
            failed.append(str(exc))
ts = [threading.Thread(target=work) for _ in range(8)]
for t in ts: t.start()
for t in ts: t.join(180)
print(json.dumps({"failed": failed}))
"""


def _fleet(server: LoopbackServer, redis: str, calls: int) -> tuple[float, float]:
    """Four processes of eight threads; (share of requests refused with 429, seconds)."""
    began = time.monotonic()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _FLEET_WORKER, server.url, redis, str(calls)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err
        assert json.loads(out)["failed"] == []  # every call got through in the end
    refused, admitted = server.rate_limited, server.admitted
    assert admitted == 4 * 8 * calls
    return refused / (refused + admitted), time.monotonic() - began


def test_four_processes_sharing_a_redis_limiter_stay_under_one_percent_429s(
    limited: LoopbackServer, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    limited.rate_limit = RateLimit(600)  # 60 per 6 s slice, as OpenAI enforces per minute
    unpaced, unpaced_s = _fleet(limited, "", calls=4)
    limited.rate_limit = RateLimit(600)  # afresh
    paced, paced_s = _fleet(limited, redis_url, calls=4)
    with capsys.disabled():
        print(
            f"\n  fleet of 4x8 against 600/min: 429s {unpaced:.1%} unpaced ({unpaced_s:.1f} s), "
            f"{paced:.1%} with the shared Redis limiter ({paced_s:.1f} s)"
        )
    assert paced < 0.01
    assert unpaced > 0.10


def test_one_workers_429_holds_every_worker_sharing_redis(
    limited: LoopbackServer, redis_url: str
) -> None:
    limited.rate_limit = RateLimit(6000)  # headers, so both learn a limit; none is reached
    a, b = (
        GPT("openai", endpoint=limited.url, api_key=TEST_KEY, redis=redis_url, retry=ONCE)
        for _ in range(2)
    )  # two instances: two pacers, as two processes would have
    a.complete("gpt-4o-mini", "", "learns")
    b.complete("gpt-4o-mini", "", "learns")
    limited.enqueue(Fault.status(429, retry_after=1))
    with pytest.raises(RateLimitError):
        a.complete("gpt-4o-mini", "", "refused")
    refused_at = limited.chat_requests[-1].received_at
    time.sleep(0.1)  # the hold goes to Redis from a thread of its own
    b.complete("gpt-4o-mini", "", "waits for a's hold")
    assert limited.chat_requests[-1].received_at - refused_at >= 0.9


def test_redis_going_away_degrades_pacing_to_local_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import redis_server

    own = redis_server.start()
    with LoopbackServer() as server:
        server.rate_limit = RateLimit(600)
        gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, redis=own.url, retry=ONCE)
        gpt.complete("gpt-4o-mini", "", "learns the limit")
        gpt.complete("gpt-4o-mini", "", "paced through Redis")
        own.stop()
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="moodlemate.ai._pacing"):
            for _ in range(5):
                gpt.complete("gpt-4o-mini", "", "paced locally")
        assert time.monotonic() - began < 3.0  # one failed try of Redis, then local
        warnings = [r.getMessage() for r in caplog.records if "pacing" in r.getMessage()]
        assert len(warnings) == 1
        assert "pacing this process alone" in warnings[0]
        assert server.rate_limited == 0


def test_a_frozen_redis_never_stalls_the_event_loop_of_async_calls() -> None:
    import redis_server

    own = redis_server.start()
    try:
        with LoopbackServer() as server:
            server.rate_limit = RateLimit(600)
            gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, redis=own.url, retry=ONCE)
            gaps: list[float] = []

            async def heartbeat(stop: asyncio.Event) -> None:
                last = time.monotonic()
                while not stop.is_set():
                    await asyncio.sleep(0.02)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            async def main() -> list[Any]:
                await gpt.acomplete("gpt-4o-mini", "", "learns the limit")
                own.pause()
                stop = asyncio.Event()
                beat = asyncio.create_task(heartbeat(stop))
                replies = await asyncio.gather(
                    *(gpt.acomplete("gpt-4o-mini", "", "hi") for _ in range(8))
                )
                stop.set()
                await beat
                await gpt.aclose()
                return replies

            replies = asyncio.run(main())
    finally:
        own.stop()
    assert len(replies) == 8
    # Redis timing out (1 s) happened off the loop: on it, the loop would stall a second or
    # more; 0.8 s leaves a loaded 2-core machine's scheduling hiccups room.
    assert max(gaps) < 0.8


def test_gpt_loads_neither_asyncio_nor_the_limiter_nor_redis_until_they_are_needed() -> None:
    code = (
        "import sys; from moodlemate.ai import GPT; GPT(); GPT(budget=1)\n"
        "print([m for m in ('asyncio', 'limits', 'redis') if m in sys.modules])\n"
        "GPT(pacing=True)\n"
        "print([m for m in ('asyncio', 'limits', 'redis') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    plain, paced = out.stdout.splitlines()
    assert plain == "[]"
    assert "limits" in paced  # (which loads asyncio itself)
    assert "redis" not in paced  # pacing in one process needs no Redis client


# -- one hostile header, many workers ----------------------------------------------------------

_HELD_WORKER = """
import json, sys, threading, time
from moodlemate.ai import GPT, RateLimitError, RetryPolicy
endpoint, redis = sys.argv[1], sys.argv[2]
gpt = GPT("openai", endpoint=endpoint, api_key="sk-test-4f1c2e9b7a6d5c3e", redis=redis,
          retry=RetryPolicy(attempts=4, deadline=30.0, attempt_timeout=10.0, max_server_wait=2.0))
calls, failed = [], []
try:  # loads the HTTP stack, learns the limits; one worker's meets the hostile reply
    gpt.complete("gpt-4o-mini", "", "warm up")
except RateLimitError as exc:
    failed.append([exc.code, exc.retry_after, str(exc)])
def work():
    for _ in range(6):
        began = time.monotonic()
        try:
            gpt.complete("gpt-4o-mini", "", "hi")
        except RateLimitError as exc:
            failed.append([exc.code, exc.retry_after, str(exc)])
        calls.append(time.monotonic() - began)
ts = [threading.Thread(target=work) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join(120)
print(json.dumps({"calls": calls, "failed": failed}))
"""


@pytest.mark.parametrize(
    "hostile",
    [
        Fault.status(429, retry_after=99999),
        Reply(
            text="ok",
            headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "9999h"},
        ),
    ],
    ids=["retry-after-99999", "spent-for-9999h"],
)
def test_one_hostile_reply_holds_four_workers_at_most_max_server_wait(
    limited: LoopbackServer, redis_url: str, hostile: Any
) -> None:
    limited.rate_limit = RateLimit(60_000)  # headers to learn from, a limit never reached
    limited.enqueue(hostile)  # the fleet's first reply; every later one is healthy
    began = time.monotonic()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _HELD_WORKER, limited.url, redis_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=180)
        assert worker.returncode == 0, err
        reports.append(json.loads(out))
    took = time.monotonic() - began
    failed = [f for r in reports for f in r["failed"]]
    assert all(code != PACED for code, _, _ in failed)  # no call was refused by a hold
    # The hostile 429 itself asks for more than max_server_wait: that call alone gives up.
    assert len(failed) <= (1 if isinstance(hostile, Fault) else 0)
    durations = [d for r in reports for d in r["calls"]]
    assert len(durations) == 4 * 4 * 6
    assert max(durations) < 2.0 + 1.5  # held at most max_server_wait (2 s), plus a call
    assert took < 60
    assert limited.rate_limited == 0


def test_a_success_after_a_hold_lifts_it_for_every_worker(
    server: LoopbackServer, redis_url: str
) -> None:
    limits = {"x-ratelimit-limit-requests": "60000", "x-ratelimit-reset-requests": "1ms"}
    healthy = {**limits, "x-ratelimit-remaining-requests": "59999"}
    spent = {**limits, "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "9h"}

    def respond(body: dict[str, Any]) -> Reply:
        said = body["messages"][-1]["content"]
        if said == "hostile":
            return Reply(text="ok", headers=spent)
        return Reply(text="ok", headers=healthy, delay=1.0 if said == "slow" else 0.0)

    server.responder = respond
    policy = RetryPolicy(attempts=1, deadline=40.0, attempt_timeout=30.0, max_server_wait=30.0)
    a, b = (
        GPT("openai", endpoint=server.url, api_key=TEST_KEY, redis=redis_url, retry=policy)
        for _ in range(2)
    )  # two pacers, as two processes would have
    a.complete("gpt-4o-mini", "", "learns")
    b.complete("gpt-4o-mini", "", "learns")
    slow = threading.Thread(target=a.complete, args=("gpt-4o-mini", "", "slow"))
    slow.start()  # in flight when the hostile reply comes back
    time.sleep(0.2)
    a.complete("gpt-4o-mini", "", "hostile")  # holds the model for 30 s, in Redis too
    time.sleep(0.1)
    began = time.monotonic()
    b.complete("gpt-4o-mini", "", "held, until the slow call's success lifts the hold")
    slow.join()
    waited = time.monotonic() - began
    assert 0.3 < waited < 3.0  # held, but far less than the 30 s the header asked for
    import redis

    hold = f"moodlemate:pace:hold/default/{server.origin}/gpt-4o-mini"
    assert redis.Redis.from_url(redis_url).exists(hold) == 0  # lifted in Redis too
