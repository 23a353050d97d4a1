"""Many threads, one GPT, a flaky server: every call gets its own answer or a typed error."""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from moodlemate.ai import GPT, ProviderError, RetryPolicy
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import TEST_KEY

CALLS = 2000
THREADS = 16
FAULT_RATE = 0.10
FAULTS = [
    Fault.status(429, retry_after=0),
    Fault.status(500),
    Fault.status(502),
    Fault.status(503),
    Fault.reset(),
    Fault.malformed(),
]


def expected_reply(question: str) -> str:
    return "answer " + hashlib.sha256(question.encode()).hexdigest()[:16]


@pytest.mark.soak
def test_soak_every_call_answered_once_or_failed_typed(server: LoopbackServer) -> None:
    answered: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def responder(body: dict[str, Any]) -> Reply:
        question = body["messages"][-1]["content"]
        with lock:
            answered[question] += 1
        return Reply(text=expected_reply(question))

    server.responder = responder
    server.fault_rate(FAULT_RATE, FAULTS, seed=20261124)
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=RetryPolicy(
            attempts=4,
            deadline=30.0,
            attempt_timeout=10.0,
            wait_initial=0.002,
            wait_max=0.01,
            wait_jitter=0.003,
        ),
    )

    def call(i: int) -> tuple[str, str | None, int, ProviderError | None]:
        question = f"question {i:04d}"
        try:
            text = gpt.chat_completion("gpt-4o-mini", "", question)
        except ProviderError as exc:
            return question, None, exc.attempts, exc
        result = gpt.last_result  # this thread's own last call
        assert result is not None
        return question, text, result.attempts, None

    start = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(call, range(CALLS)))
    elapsed = time.monotonic() - start

    sent = collections.Counter(r.body["messages"][-1]["content"] for r in server.chat_requests)
    successes = [o for o in outcomes if o[3] is None]
    failures = [o for o in outcomes if o[3] is not None]

    assert len(outcomes) == CALLS  # none lost
    assert len({o[0] for o in outcomes}) == CALLS
    for question, text, attempts, error in outcomes:
        assert sent[question] == attempts, question  # attempts as the server counted them
        if error is None:
            assert text == expected_reply(question)  # its own text, nobody else's
            assert answered[question] == 1  # answered exactly once
        else:
            assert error.retryable  # only transient faults were injected
            assert attempts == 4
            assert answered[question] == 0
    assert set(sent) == {o[0] for o in outcomes}
    assert gpt.ledger.calls == len(successes)
    retries = sum(sent.values()) - CALLS
    assert 0.06 * CALLS < retries < 0.16 * CALLS  # the faults really were injected
    assert len(failures) <= 5  # four faults in a row at 10%: about 1 in 10,000 calls
    print(
        f"\nsoak: {CALLS} calls, {THREADS} threads, {retries} retries, "
        f"{len(failures)} typed failures, {elapsed:.1f}s"
    )
