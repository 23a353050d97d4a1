"""What a server's usage object and rate-limit headers read as, whatever their values: a count
that is not a non-negative number reads as 0, an unsaid limit as None."""

from __future__ import annotations

from typing import Any

import pytest
from moodlemate.ai import Usage
from moodlemate.ai.plugin import rate_limits_from_headers
from moodlemate.providers.openai.responses import RESPONSES_USAGE_KEYS, usage_from


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        (21, 21),
        (0, 0),
        (-5, 0),
        (None, 0),
        (True, 0),
        (False, 0),
        (3.9, 3),
        ("12", 12),
        ("twelve", 0),
        (float("inf"), 0),
        (float("nan"), 0),
        (10**40, 10**40),  # bounded later, by what the request could produce
        ([7], 0),
        ({"n": 7}, 0),
    ],
)
def test_a_count_reads_as_itself_or_as_zero(sent: Any, read: int) -> None:
    raw = {
        "prompt_tokens": sent,
        "completion_tokens": sent,
        "prompt_tokens_details": {"cached_tokens": sent, "cache_write_tokens": sent},
        "completion_tokens_details": {"reasoning_tokens": sent, "audio_tokens": sent},
    }
    assert usage_from(raw) == Usage(
        prompt_tokens=read,
        completion_tokens=read,
        cached_tokens=read,
        reasoning_tokens=read,
        cache_write_tokens=read,
        audio_completion_tokens=read,
    )


def test_absent_and_malformed_parts_read_as_zero() -> None:
    assert usage_from(None) == Usage()
    assert usage_from([1, 2]) == Usage()
    assert usage_from({"prompt_tokens": 9, "prompt_tokens_details": "x"}) == Usage(9)
    assert usage_from({"input_tokens": 4, "output_tokens": 2}, RESPONSES_USAGE_KEYS) == Usage(4, 2)


def test_headers_that_state_no_limit_read_as_none() -> None:
    assert rate_limits_from_headers({}) is None
    assert rate_limits_from_headers({"content-type": "application/json"}) is None
    assert rate_limits_from_headers({"x-ratelimit-limit-requests": ""}) is None
    assert rate_limits_from_headers({"x-ratelimit-remaining-tokens": "many"}) is None


def test_one_stated_limit_is_read() -> None:
    limits = rate_limits_from_headers({"x-ratelimit-remaining-tokens": "150"})
    assert limits is not None
    assert limits.tokens_remaining == 150
    assert limits.requests_limit is None
    shared = rate_limits_from_headers({"x-ratelimit-limit": "20", "x-ratelimit-reset": "1.5"})
    assert shared is not None
    assert (shared.requests_limit, shared.requests_reset) == (20, 1.5)
