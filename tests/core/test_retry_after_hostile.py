"""Retry-After values a server cannot mean: negative, past, or not ASCII digits. Each falls
back to our own backoff, measured from the server's own request log."""

from __future__ import annotations

import itertools

import pytest
from moodlemate.ai import GPT, RateLimitError, RetryPolicy
from moodlemate.ai._retry import retry_after_from_headers
from moodlemate.ai.testing import Fault, LoopbackServer

BACKOFF = 0.15
POLICY = RetryPolicy(
    attempts=3,
    deadline=20.0,
    attempt_timeout=5.0,
    wait_initial=BACKOFF,
    wait_max=BACKOFF,
    wait_jitter=0.0,
    max_server_wait=0.5,  # "1_0" read as 10 s, or a non-ASCII 1 as 1 s, gives up
)

HOSTILE = [
    pytest.param({"retry-after": "-5"}, id="negative-seconds"),
    pytest.param({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, id="date-in-the-past"),
    pytest.param({"retry-after-ms": "-100"}, id="negative-ms"),
    pytest.param({"retry-after": "1_0"}, id="underscore-digits"),
    # Sent as the UTF-8 bytes of ARABIC-INDIC DIGIT ONE (the server writes headers as latin-1).
    pytest.param({"retry-after": "\u0661".encode().decode("latin-1")}, id="arabic-indic-digit"),
    pytest.param({"retry-after": "nan"}, id="nan"),
    pytest.param({"retry-after": "+3"}, id="signed"),
]


@pytest.mark.parametrize("headers", HOSTILE)
def test_a_nonsense_retry_after_falls_back_to_our_backoff(
    server: LoopbackServer, headers: dict[str, str]
) -> None:
    server.enqueue(Fault.status(503, headers=headers), Fault.status(429, headers=headers))
    gpt = GPT("openai", endpoint=server.url, retry=POLICY)
    assert gpt.chat_completion("gpt-4o-mini", "", "hi") == "Echo: hi"
    times = [r.received_at for r in server.chat_requests]
    assert len(times) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= BACKOFF * 0.9, gaps  # waited our backoff, not "no wait"


@pytest.mark.parametrize("headers", HOSTILE)
def test_a_nonsense_retry_after_is_not_reported_as_a_wait(
    server: LoopbackServer, headers: dict[str, str]
) -> None:
    server.enqueue(Fault.status(429, headers=headers))
    gpt = GPT("openai", endpoint=server.url, retry=RetryPolicy(attempts=1))
    with pytest.raises(RateLimitError) as caught:
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "-1", "retry-after": "3"}, 3.0),
    ],
)
def test_well_formed_waits_are_still_read(headers: dict[str, str], seconds: float) -> None:
    assert retry_after_from_headers(headers) == seconds


def test_a_future_http_date_is_still_a_wait() -> None:
    from email.utils import formatdate
    from time import time

    wait = retry_after_from_headers({"retry-after": formatdate(time() + 30, usegmt=True)})
    assert wait is not None
    assert 25 < wait <= 31
