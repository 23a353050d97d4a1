"""The retry policy under injected faults; attempts are counted from the server's request log."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import openai
import pytest
import stamina
from moodlemate.ai import (
    GPT,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    MoodlemateError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    ValidationError,
)
from moodlemate.ai._retry import retry_after_from_headers, should_retry_from_headers
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, REPO, TEST_KEY, suite_transport

MODEL = "gpt-4o-mini"


def ask(gpt: GPT) -> str:
    return gpt.chat_completion(MODEL, "Be brief.", "Hi")


def gaps(server: LoopbackServer) -> list[float]:
    """Seconds between consecutive attempts as the server saw them."""
    times = [r.received_at for r in server.chat_requests]
    return [b - a for a, b in itertools.pairwise(times)]


def make_gpt(server: LoopbackServer, **policy: float) -> GPT:
    return GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=dataclasses.replace(FAST_RETRY, **policy),
    )


# -- transient faults, then success ----------------------------------------------------------


def test_429_with_retry_after_waits_as_asked(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Fault.status(429, retry_after=1), Reply(text="ok"))
    start = time.monotonic()
    assert ask(gpt) == "ok"
    # FAST_RETRY's own backoff is at most 0.05 s: only the header explains a 1 s wait.
    assert time.monotonic() - start >= 1.0
    assert len(server.chat_requests) == 2
    assert gaps(server)[0] >= 0.99
    assert gpt.last_result is not None
    assert gpt.last_result.attempts == 2


def test_retry_after_ms_takes_precedence(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Fault.status(429, retry_after_ms=400, retry_after=30), Reply(text="ok"))
    assert ask(gpt) == "ok"
    assert len(server.chat_requests) == 2
    assert 0.39 <= gaps(server)[0] < 5


def test_retry_after_as_an_http_date(gpt: GPT, server: LoopbackServer) -> None:
    ask(gpt)  # warm up (client, connection) so the first attempt leaves right after `now`
    server.clear()
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    server.enqueue(Fault.status(429, retry_after=when), Reply(text="ok"))
    assert ask(gpt) == "ok"
    assert len(server.chat_requests) == 2
    # HTTP dates have whole seconds: "now + 2 s" truncated is still at least 1 s away.
    assert 0.9 <= gaps(server)[0] < 5


def test_retry_after_in_the_past_retries_at_once(gpt: GPT, server: LoopbackServer) -> None:
    when = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    server.enqueue(Fault.status(503, retry_after=when), Reply(text="ok"))
    assert ask(gpt) == "ok"
    assert len(server.chat_requests) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409])
def test_transient_status_then_success(gpt: GPT, server: LoopbackServer, status: int) -> None:
    server.enqueue(Fault.status(status), Fault.status(status), Reply(text="fine now"))
    assert ask(gpt) == "fine now"
    assert len(server.chat_requests) == 3
    assert gpt.ledger.calls == 1


def test_x_should_retry_false_is_obeyed(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Fault.status(503, should_retry=False), Reply(text="never reached"))
    with pytest.raises(ServerError) as caught:
        ask(gpt)
    assert len(server.chat_requests) == 1
    assert caught.value.retryable is False
    assert server.pending == 1


def test_x_should_retry_true_retries_even_a_400(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Fault.status(400, should_retry=True), Reply(text="ok"))
    assert ask(gpt) == "ok"
    assert len(server.chat_requests) == 2


def test_slow_response_times_out_and_is_retried(server: LoopbackServer) -> None:
    gpt = make_gpt(server, attempt_timeout=0.3)
    server.enqueue(Fault.slow(3.0), Reply(text="quick"))
    start = time.monotonic()
    assert ask(gpt) == "quick"
    assert time.monotonic() - start < 2.0  # the slow attempt was cut at 0.3 s, not waited out
    assert len(server.chat_requests) == 2


@pytest.mark.parametrize(
    "fault",
    [Fault.reset(), Fault.malformed(), Fault.stream_break(), Fault.error_in_200(502)],
    ids=["reset", "malformed", "truncated", "error-in-200"],
)
def test_broken_response_then_success(gpt: GPT, server: LoopbackServer, fault: Fault) -> None:
    server.enqueue(fault, Reply(text="intact"))
    assert ask(gpt) == "intact"
    assert len(server.chat_requests) == 2
    assert gpt.ledger.calls == 1


def test_retries_are_logged_with_attempt_wait_and_cause(
    gpt: GPT, server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.enqueue(Fault.status(503), Fault.reset(), Reply(text="ok"))
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        ask(gpt)
    messages = [r.getMessage() for r in caplog.records if r.name == "moodlemate.ai"]
    assert len(messages) == 2
    assert re.search(
        r"attempt 1 of 4 failed \(ServerError: .*\); retrying in \d+\.\d\ds", messages[0]
    )
    assert re.search(r"attempt 2 of 4 failed \(APIConnectionError: ", messages[1])


# -- giving up -------------------------------------------------------------------------------


def test_persistent_503_makes_exactly_the_configured_attempts(server: LoopbackServer) -> None:
    # 5 differs from what nested SDK retries would give (3 per attempt: 5, 15).
    gpt = make_gpt(server, attempts=5, deadline=10.0)
    server.fault_rate(1.0, [Fault.status(503)])
    start = time.monotonic()
    with pytest.raises(ServerError) as caught:
        ask(gpt)
    assert time.monotonic() - start < 10.0
    assert len(server.chat_requests) == 5
    error = caught.value
    assert error.attempts == 5
    assert error.status_code == 503
    assert "attempts=5" in str(error)
    assert gpt.ledger.calls == 0


def test_a_hanging_server_is_bounded_by_the_deadline(server: LoopbackServer) -> None:
    gpt = make_gpt(server, attempts=20, deadline=1.0, attempt_timeout=0.4)
    server.fault_rate(1.0, [Fault.slow(10.0)])
    start = time.monotonic()
    with pytest.raises(APITimeoutError) as caught:
        ask(gpt)
    elapsed = time.monotonic() - start
    assert elapsed < 1.75  # the deadline plus scheduling slack, not 20 x 0.4 s
    attempts = len(server.chat_requests)
    assert 2 <= attempts <= 4
    assert caught.value.attempts == attempts


NOT_TRANSIENT = [
    (Fault.status(400), BadRequestError, 400),
    (Fault.status(401), AuthenticationError, 401),
    (Fault.status(403), PermissionDeniedError, 403),
    (Fault.status(404), NotFoundError, 404),
    (Fault.status(422), BadRequestError, 422),
    (Fault.quota(), QuotaExceededError, 429),
    (Fault.quota(should_retry=True, retry_after=0), QuotaExceededError, 429),
    (Fault.status(402), QuotaExceededError, 402),
]


@pytest.mark.parametrize(
    ("fault", "error_class", "status"),
    NOT_TRANSIENT,
    ids=["400", "401", "403", "404", "422", "quota", "quota-should-retry", "402"],
)
def test_non_transient_errors_get_exactly_one_attempt(
    gpt: GPT,
    server: LoopbackServer,
    fault: Fault,
    error_class: type[ProviderError],
    status: int,
) -> None:
    server.enqueue(fault, Reply(text="never reached"))
    with pytest.raises(error_class) as caught:
        ask(gpt)
    assert len(server.chat_requests) == 1
    error = caught.value
    assert type(error) is error_class
    assert isinstance(error, ProviderError)
    assert isinstance(error, MoodlemateError)
    assert error.retryable is False
    assert error.status_code == status
    assert error.provider == "openai"
    assert error.model == MODEL
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert error.attempts == 1
    if suite_transport() == "openai-sdk":  # the SDK's own exception is chained on
        assert isinstance(error.__cause__, openai.APIStatusError)
        assert error.__cause__.status_code == status
    assert f"status={status}" in str(error)


def test_quota_error_carries_its_code(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Fault.quota())
    with pytest.raises(QuotaExceededError) as caught:
        ask(gpt)
    assert caught.value.code == "insufficient_quota"
    assert not isinstance(caught.value, RateLimitError)  # waiting does not fix billing


def test_connection_errors_are_typed_with_the_transport_cause(server: LoopbackServer) -> None:
    gpt = make_gpt(server, attempts=2)
    server.fault_rate(1.0, [Fault.reset()])
    with pytest.raises(APIConnectionError) as caught:
        ask(gpt)
    assert len(server.chat_requests) == 2
    assert caught.value.attempts == 2
    assert caught.value.provider == "openai"
    assert caught.value.cause_kind == "closed"
    assert "127.0.0.1" in str(caught.value)
    if suite_transport() == "openai-sdk":
        assert isinstance(caught.value.__cause__, openai.APIConnectionError)


def test_malformed_body_every_time_is_a_typed_error(server: LoopbackServer) -> None:
    gpt = make_gpt(server, attempts=3)
    server.fault_rate(1.0, [Fault.malformed()])
    with pytest.raises(MalformedResponseError) as caught:
        ask(gpt)
    assert len(server.chat_requests) == 3
    assert caught.value.attempts == 3


# -- server-requested waits that do not fit ---------------------------------------------------


def test_wait_longer_than_max_server_wait_fails_at_once(server: LoopbackServer) -> None:
    gpt = make_gpt(server, max_server_wait=5.0, deadline=600.0)
    server.enqueue(Fault.status(429, retry_after=30), Reply(text="never reached"))
    start = time.monotonic()
    with pytest.raises(RateLimitError) as caught:
        ask(gpt)
    assert time.monotonic() - start < 1.0  # no sleep
    assert len(server.chat_requests) == 1
    assert caught.value.retry_after == 30
    assert caught.value.attempts == 1
    assert "retry_after=30s" in str(caught.value)


def test_wait_beyond_the_remaining_deadline_fails_at_once(server: LoopbackServer) -> None:
    gpt = make_gpt(server, deadline=3.0, max_server_wait=120.0)
    server.enqueue(Fault.status(503), Fault.status(429, retry_after_ms=5000), Reply(text="no"))
    start = time.monotonic()
    with pytest.raises(RateLimitError) as caught:
        ask(gpt)
    assert time.monotonic() - start < 1.5
    assert len(server.chat_requests) == 2
    assert caught.value.retry_after == 5.0
    assert caught.value.attempts == 2


# -- configuration ---------------------------------------------------------------------------


def test_policy_is_per_instance_and_replaceable(server: LoopbackServer) -> None:
    one = make_gpt(server, attempts=1)
    three = make_gpt(server, attempts=3)
    server.fault_rate(1.0, [Fault.status(500)])
    with pytest.raises(ServerError):
        ask(one)
    assert len(server.chat_requests) == 1
    with pytest.raises(ServerError):
        ask(three)
    assert len(server.chat_requests) == 4
    one.retry = dataclasses.replace(one.retry, attempts=2)
    with pytest.raises(ServerError):
        ask(one)
    assert len(server.chat_requests) == 6


def test_retry_must_be_a_policy() -> None:
    gpt = GPT()
    with pytest.raises(ValidationError, match="RetryPolicy"):
        gpt.retry = 3  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="RetryPolicy"):
        GPT(retry={"attempts": 3})  # type: ignore[arg-type]
    assert gpt.retry == RetryPolicy()


@pytest.mark.parametrize(
    "bad",
    [
        {"attempts": 0},
        {"attempts": 2.5},
        {"attempts": True},
        {"deadline": 0},
        {"deadline": math.nan},
        {"attempt_timeout": -1},
        {"wait_max": math.inf},
        {"wait_initial": "1"},
        {"max_server_wait": math.nan},
    ],
)
def test_bad_policies_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_defaults_suit_slow_reasoning_models_and_are_documented() -> None:
    policy = RetryPolicy()
    assert policy.attempt_timeout >= 600  # an o1 call may be silent for minutes
    assert policy.deadline >= 2 * policy.attempt_timeout
    guide = (REPO / "docs" / "errors-and-retries.md").read_text()
    section = guide.split("\n## Defaults\n", 1)[1].split("\n## ", 1)[0]
    for field in dataclasses.fields(RetryPolicy):
        value = getattr(policy, field.name)
        row = re.search(rf"^\| `{field.name}` \| ([^|]+) \|", section, re.MULTILINE)
        assert row is not None, f"the errors-and-retries guide does not document {field.name}"
        expected = "none" if value is None else f"{value:g}"
        assert re.match(rf"{expected}\b", row.group(1).strip()), (field.name, row.group(1))


# -- stamina's testing mode ------------------------------------------------------------------


def test_stamina_testing_mode_caps_attempts_and_skips_sleeps(server: LoopbackServer) -> None:
    gpt = make_gpt(server, attempts=6, wait_initial=20.0, wait_max=60.0)
    server.fault_rate(1.0, [Fault.status(503)])
    start = time.monotonic()
    with stamina.set_testing(True, attempts=2), pytest.raises(ServerError) as caught:
        ask(gpt)
    assert time.monotonic() - start < 2.0
    assert len(server.chat_requests) == 2
    assert caught.value.attempts == 2


def test_stamina_testing_mode_skips_server_requested_waits(server: LoopbackServer) -> None:
    gpt = make_gpt(server)
    server.enqueue(Fault.status(429, retry_after=15), Reply(text="ok"))
    start = time.monotonic()
    with stamina.set_testing(True, attempts=3):
        assert ask(gpt) == "ok"
    assert time.monotonic() - start < 2.0
    assert len(server.chat_requests) == 2


def test_stamina_testing_mode_attempts_may_exceed_the_policy(server: LoopbackServer) -> None:
    gpt = make_gpt(server, attempts=2)
    server.fault_rate(1.0, [Fault.status(500)])
    with stamina.set_testing(True, attempts=4), pytest.raises(ServerError):
        ask(gpt)
    assert len(server.chat_requests) == 4
    server.clear()
    with stamina.set_testing(True, attempts=4, cap=True), pytest.raises(ServerError):
        ask(gpt)
    assert len(server.chat_requests) == 2


def test_stamina_deactivated_means_one_attempt(server: LoopbackServer) -> None:
    gpt = make_gpt(server)
    server.fault_rate(1.0, [Fault.status(503)])
    stamina.set_active(False)
    try:
        with pytest.raises(ServerError):
            ask(gpt)
    finally:
        stamina.set_active(True)
    assert len(server.chat_requests) == 1


def test_stamina_hooks_see_each_retry_numbered_from_the_first_attempt(
    server: LoopbackServer,
) -> None:
    """The first attempt runs before stamina's loop starts (it costs a call nothing when it
    succeeds); its failure still reaches the hooks as retry 1, with the waits the loop made."""
    seen: list[stamina.instrumentation.RetryDetails] = []
    before = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([seen.append])
    try:
        gpt = make_gpt(server, wait_initial=0.05, wait_max=0.2)
        server.enqueue(Fault.status(503), Fault.status(502), Reply(text="ok"))
        assert ask(gpt) == "ok"
        assert gpt.last_result is not None
        assert gpt.last_result.attempts == 3
        server.enqueue(Reply(text="again"))
        assert ask(gpt) == "again"  # a first attempt that succeeds: no hook
    finally:
        stamina.instrumentation.set_on_retry_hooks(before)
    assert [d.retry_num for d in seen] == [1, 2]
    assert [getattr(d.caused_by, "status_code", None) for d in seen] == [503, 502]
    assert [d.wait_for for d in seen] == pytest.approx([0.05, 0.1])
    assert [d.waited_so_far for d in seen] == pytest.approx([0.0, 0.05])
    assert len(server.chat_requests) == 4


# -- the policy on its own (async twin, header parsing) --------------------------------------


def test_async_run_retries_like_the_sync_one() -> None:
    policy = dataclasses.replace(FAST_RETRY, attempts=3)
    calls: list[float] = []

    async def flaky(timeout: float) -> str:
        calls.append(timeout)
        if len(calls) < 3:
            raise ServerError("overloaded", status_code=503)
        return "done"

    assert asyncio.run(policy.arun(flaky, "test")) == ("done", 3)
    assert all(0 < t <= policy.attempt_timeout for t in calls)

    async def refused(timeout: float) -> str:
        calls.append(timeout)
        raise AuthenticationError("no", status_code=401)

    calls.clear()
    with pytest.raises(AuthenticationError) as caught:
        asyncio.run(policy.arun(refused, "test"))
    assert len(calls) == 1
    assert caught.value.attempts == 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "-3"}, None),  # nonsense: our own backoff instead
        ({"retry-after-ms": "nan", "retry-after": "4"}, 4.0),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # past: likewise
        ({}, None),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_from_headers(headers) == expected


def test_retry_after_date_without_zone_is_read_as_gmt() -> None:
    future = datetime.now(UTC) + timedelta(seconds=30)
    naive = future.strftime("%a, %d %b %Y %H:%M:%S -0000")
    seconds = retry_after_from_headers({"retry-after": naive})
    assert seconds is not None
    assert 28 <= seconds <= 30


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE ", True), ("false", False), ("maybe", None), (None, None)],
)
def test_should_retry_parsing(value: str | None, expected: bool | None) -> None:
    headers = {} if value is None else {"x-should-retry": value}
    assert should_retry_from_headers(headers) is expected


def test_backoff_doubles_up_to_the_cap_and_jitter_stays_on_top() -> None:
    policy = RetryPolicy(wait_initial=1.0, wait_max=8.0, wait_jitter=0.5)
    for failures, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (80, 8.0)]:
        waits = [policy.backoff(failures) for _ in range(200)]
        assert all(base <= w <= base + 0.5 for w in waits), failures
        assert max(waits) - min(waits) > 0.1  # jittered even at the cap
