"""The library against a real inference server: llama.cpp's llama-server on 127.0.0.1, with a
tiny random-weight model (see tests/llama_server.py for how both are built and cached).

Run alone with ``python -m pytest -m llama_server``. Without a cached build these tests are
skipped with the command that builds it, unless MOODLEMATE_LLAMA=require (as .ci/run sets),
where a missing build fails them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from llama_server import (
    CONTEXT,
    THINKING_TEMPLATE,
    LlamaServer,
    cached,
    ensure_built,
    missing_tools,
)
from moodlemate.ai import (
    GPT,
    APITimeoutError,
    AuthenticationError,
    ContextWindowExceededError,
    EmptyReplyError,
    RetryPolicy,
    StreamInterruptedError,
)

pytestmark = [pytest.mark.llama_server, pytest.mark.timeout(120)]

MODEL = "tiny-llama"
KEY = "llama-test-key-0123456789"
QUICK = RetryPolicy(attempts=3, deadline=30, attempt_timeout=20, wait_initial=0.05, wait_max=0.2)


@pytest.fixture(scope="session")
def build() -> object:
    required = os.environ.get("MOODLEMATE_LLAMA") == "require"
    if not cached().ready and not required:
        pytest.skip("llama-server is not built here: run `python tests/llama_server.py build`")
    if missing_tools() and not cached().ready:
        pytest.fail(f"cannot build llama-server: missing {missing_tools()}")
    return ensure_built()


@pytest.fixture(scope="session")
def llama(build: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One server for the tests that leave it running as they found it."""
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with LlamaServer(build, log_path=log) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture
def own_llama(build: object) -> Iterator[LlamaServer]:
    """A server of the test's own, for tests that kill, freeze or key it."""
    server = LlamaServer(build)  # type: ignore[arg-type]
    yield server
    server.kill()


def gpt_on(server: LlamaServer, **options: object) -> GPT:
    return GPT(endpoint=server.url, retry=QUICK, **options)  # type: ignore[arg-type]


# -- the calls users make ------------------------------------------------------------------


def test_chat_completion_returns_text_and_max_tokens_decides_the_length(
    llama: LlamaServer,
) -> None:
    gpt = gpt_on(llama)
    text = gpt.chat_completion(MODEL, "Be brief.", "Name three primes.", max_tokens=8)
    assert isinstance(text, str)
    assert text
    result = gpt.last_result
    assert result is not None
    assert result.usage.completion_tokens == 8
    assert result.usage.prompt_tokens > 5
    assert result.finish_reason == "length"
    assert result.cost is None  # a local model has no price: unknown, not $0


def test_a_repeated_prompt_reports_cached_tokens(llama: LlamaServer) -> None:
    gpt = gpt_on(llama)
    prompt = "Tell me about the weather in a long sentence. " * 8
    gpt.complete(MODEL, "You are terse.", prompt, max_tokens=4)
    again = gpt.complete(MODEL, "You are terse.", prompt, max_tokens=4)
    assert again.usage_reported
    assert 0 < again.usage.cached_tokens < again.usage.prompt_tokens


def test_a_stream_delivers_deltas_and_ends_with_usage(llama: LlamaServer) -> None:
    gpt = gpt_on(llama)
    with gpt.stream(MODEL, "", "Count to ten.", max_tokens=12) as stream:
        deltas = list(stream)
    assert len(deltas) > 1
    assert stream.completion is not None
    assert stream.completion.usage.completion_tokens == 12
    assert stream.completion.text == "".join(deltas)


def test_a_call_right_after_a_stream_needs_no_retry(
    llama: LlamaServer, caplog: pytest.LogCaptureFixture
) -> None:
    """llama-server closes the connection after a stream (its headers said keep-alive): the
    call that follows on the pooled connection is sent again at once, with no warning and no
    backoff wait (the lean transport; the SDK's own retries are off)."""
    caplog.set_level(logging.WARNING)
    gpt = gpt_on(llama, transport="lean")
    attempts = []
    for n in range(10):
        with gpt.stream(MODEL, "", f"Say {n}.", max_tokens=2) as stream:
            assert list(stream)
        attempts.append(gpt.complete(MODEL, "", f"Say {n} again.", max_tokens=2).attempts)
    assert attempts == [1] * 10
    assert [r.getMessage() for r in caplog.records] == []


def test_async_calls_run_concurrently(llama: LlamaServer) -> None:
    gpt = gpt_on(llama)

    async def main() -> list[str]:
        try:
            return await asyncio.gather(
                *(gpt.achat_completion(MODEL, "", f"Question {n}", max_tokens=6) for n in range(4))
            )
        finally:
            await gpt.aclose()

    texts = asyncio.run(main())
    assert len(texts) == 4
    assert all(texts)


def test_eight_threads_share_two_slots(llama: LlamaServer) -> None:
    gpt = gpt_on(llama)
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda n: gpt.complete(MODEL, "", f"Item {n}", max_tokens=10), range(16))
        )
    assert all(r.usage.completion_tokens == 10 for r in results)
    assert gpt.ledger.calls == 16


def test_the_cli_chats_with_it(llama: LlamaServer) -> None:
    from test_cli import run_cli

    done = run_cli(
        "chat", "--endpoint", llama.url, "-m", MODEL, "--max-tokens", "5", "--usage", "hi"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "5 completion" in done.stderr
    assert "cost unknown" in done.stderr


# -- windows ------------------------------------------------------------------------------


def test_the_window_is_learned_from_the_server(llama: LlamaServer) -> None:
    assert gpt_on(llama).context_window(MODEL) == CONTEXT


def test_a_conversation_without_max_tokens_keeps_working_on_a_small_window(
    llama: LlamaServer,
) -> None:
    """With no max_tokens the server writes until its window is full (the model never ends
    a reply); each next turn must trim what the window cannot hold."""
    gpt = gpt_on(llama, model=MODEL)
    for turn in range(5):
        reply = gpt.context_assistant(f"Turn {turn}: tell me a long story.")
        assert reply
    assert gpt.ledger.calls >= 5


def test_a_prompt_over_the_servers_window_is_a_context_window_error(llama: LlamaServer) -> None:
    gpt = gpt_on(llama)
    with pytest.raises(ContextWindowExceededError) as info:
        gpt.chat_completion(MODEL, "", "lorem ipsum dolor " * 1200, max_tokens=4)
    assert info.value.window == CONTEXT
    assert info.value.attempts == 1  # type: ignore[attr-defined]


# -- keys -----------------------------------------------------------------------------------


def test_api_key_right_and_wrong(own_llama: LlamaServer) -> None:
    own_llama.api_key = KEY
    own_llama.start()
    gpt = GPT(retry=QUICK)
    gpt.api_key = KEY  # the documented order: the key, then the endpoint
    gpt.endpoint = own_llama.url
    assert gpt.chat_completion(MODEL, "", "Hi", max_tokens=3)
    wrong = GPT(endpoint=own_llama.url, api_key="not-the-key-0123456", retry=QUICK)
    with pytest.raises(AuthenticationError) as info:
        wrong.chat_completion(MODEL, "", "Hi", max_tokens=3)
    assert info.value.attempts == 1
    assert "not-the-key-0123456" not in str(info.value)


# -- outages --------------------------------------------------------------------------------


def test_a_server_killed_mid_stream_raises_with_the_partial_text(own_llama: LlamaServer) -> None:
    own_llama.start()
    gpt = gpt_on(own_llama)
    received: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:  # noqa: PT012 - the kill is mid-loop
        for delta in gpt.stream(MODEL, "", "Write a very long story.", max_tokens=1800):
            received.append(delta)
            if len(received) == 5:
                own_llama.kill()
    assert info.value.partial_text == "".join(received)
    assert len(received) >= 5


def test_a_server_killed_mid_call_and_restarted_is_retried_to_success(
    own_llama: LlamaServer,
) -> None:
    own_llama.start()
    gpt = GPT(endpoint=own_llama.url, retry=RetryPolicy(attempts=8, deadline=60, wait_max=2))
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["result"] = gpt.complete(MODEL, "", "A long story, please.", max_tokens=1800)
        except Exception as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)  # the request is being generated
    own_llama.kill()
    time.sleep(0.5)
    own_llama.start()
    caller.join(60)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.attempts >= 2  # type: ignore[attr-defined]


def test_a_frozen_server_times_out_within_the_deadline(own_llama: LlamaServer) -> None:
    own_llama.start()
    policy = RetryPolicy(attempts=2, deadline=4, attempt_timeout=1.5, wait_initial=0.05)
    gpt = GPT(endpoint=own_llama.url, retry=policy)
    own_llama.freeze()
    started = time.monotonic()
    try:
        with pytest.raises(APITimeoutError):
            gpt.chat_completion(MODEL, "", "Hi", max_tokens=3)
        assert time.monotonic() - started < 4 + 1.5
    finally:
        own_llama.thaw()


# -- reasoning_content ---------------------------------------------------------------------
#
# The test model's own template (Llama-2 style) has no think tags, and its random weights never
# write one, so the shared server puts everything in `content`. llama-server finds a template's
# reasoning markers by rendering it with and without an assistant turn's `reasoning_content`;
# given THINKING_TEMPLATE (which wraps that in <think>...</think> and opens <think> in the
# generation prompt) and `--reasoning-format deepseek`, it parses the model's output as
# reasoning until </think>, and sends it as `reasoning_content` (`delta.reasoning_content` when
# streamed). The per-request `reasoning_budget_tokens` makes it close the block after that
# many tokens, so the rest of the reply is the answer.


@pytest.fixture(scope="module")
def thinking_llama(
    build: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """A second server, on the thinking template (the shared one keeps the model's own)."""
    folder = tmp_path_factory.mktemp("thinking-llama")
    template = folder / "thinking.jinja"
    template.write_text(THINKING_TEMPLATE)
    flags = ("--chat-template-file", str(template), "--reasoning-format", "deepseek")
    with LlamaServer(build, log_path=folder / "server.log", extra_args=flags) as server:  # type: ignore[arg-type]
        yield server


BUDGETED = {"reasoning_budget_tokens": 4}


def test_reasoning_content_lands_in_completion_reasoning(thinking_llama: LlamaServer) -> None:
    gpt = gpt_on(thinking_llama)
    result = gpt.complete(MODEL, "", "Why is the sky blue?", max_tokens=12, extra=BUDGETED)
    assert result.reasoning  # the model's first tokens, as reasoning_content
    assert result.text  # what came after the closed block
    assert "think>" not in result.reasoning + result.text
    assert result.reasoning.strip() not in result.text
    assert result.usage.completion_tokens == 12  # reasoning and answer together


def test_streamed_reasoning_content_is_kept_out_of_the_deltas(
    thinking_llama: LlamaServer,
) -> None:
    gpt = gpt_on(thinking_llama)
    with gpt.stream(MODEL, "", "Why is the sky blue?", max_tokens=12, extra=BUDGETED) as stream:
        deltas = list(stream)
    completion = stream.completion
    assert completion is not None
    assert completion.reasoning
    assert "".join(deltas) == completion.text
    assert completion.text
    assert "think>" not in completion.reasoning + completion.text
    assert completion.reasoning.strip() not in completion.text


def test_a_reply_spent_on_reasoning_is_an_empty_reply_that_keeps_it(
    thinking_llama: LlamaServer,
) -> None:
    """No budget: the block never closes within max_tokens, so the answer is empty and the
    str-returning call says so, with the reasoning on the error's completion."""
    gpt = gpt_on(thinking_llama)
    with pytest.raises(EmptyReplyError) as caught:
        gpt.chat_completion(MODEL, "", "Why is the sky blue?", max_tokens=8)
    completion = caught.value.completion
    assert completion.text == ""
    assert completion.reasoning
    assert completion.finish_reason == "length"
