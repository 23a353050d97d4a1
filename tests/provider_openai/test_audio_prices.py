"""Audio and image tokens over real HTTP: priced at their own rates where OpenAI lists them,
itemised in ``cost_breakdown``, and an unknown cost (never the text price) where it does not;
a budget still counts such calls.

Every figure is USD per 1M tokens, read from the model's page on developers.openai.com
(``/api/docs/models/<model>``, its "Text tokens" and "Audio tokens" tables, checked 2026-12-07)
and matched against LiteLLM's model_prices_and_context_window.json (BerriAI/litellm commit
00035b6: input_cost_per_token, output_cost_per_token, input_cost_per_audio_token,
output_cost_per_audio_token)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from moodlemate.ai import GPT, BudgetExceededError
from moodlemate.ai.testing import LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

LONG = "Say it aloud. " * 150  # a prompt 1000 reported prompt tokens can plausibly come from
AUDIO = {
    "prompt_tokens": 1000,
    "audio_prompt_tokens": 600,  # so 400 text tokens
    "completion_tokens": 500,
    "audio_completion_tokens": 400,  # so 100 text tokens
}

# model: (text in, text out, audio in, audio out), per 1M tokens.
PUBLISHED = {
    # developers.openai.com/api/docs/models/gpt-4o-audio-preview: $2.50 / $10.00, audio $40 / $80;
    # LiteLLM: 2.5e-06 / 1e-05, audio 4e-05 / 8e-05.
    "gpt-4o-audio-preview": ("2.50", "10.00", "40.00", "80.00"),
    # .../gpt-4o-mini-audio-preview: $0.15 / $0.60, audio $10 / $20;
    # LiteLLM: 1.5e-07 / 6e-07, audio 1e-05 / 2e-05.
    "gpt-4o-mini-audio-preview": ("0.15", "0.60", "10.00", "20.00"),
    # .../gpt-audio: $2.50 / $10.00, audio $32 / $64; LiteLLM: 2.5e-06 / 1e-05, 3.2e-05 / 6.4e-05.
    "gpt-audio": ("2.50", "10.00", "32.00", "64.00"),
    # .../gpt-audio-1.5: the same figures on its page and in LiteLLM.
    "gpt-audio-1.5": ("2.50", "10.00", "32.00", "64.00"),
    # A dated snapshot is priced as its family (LiteLLM lists gpt-audio-2025-08-28 the same).
    "gpt-audio-2025-08-28": ("2.50", "10.00", "32.00", "64.00"),
}


def _per_million(tokens: int, rate: str) -> Decimal:
    return tokens * Decimal(rate) / 1_000_000


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_audio_tokens_at_their_published_price(
    server: LoopbackServer, gpt: GPT, model: str, stream: bool
) -> None:
    text_in, text_out, audio_in, audio_out = PUBLISHED[model]
    server.enqueue(Reply(text="ok", **AUDIO))
    if stream:
        with gpt.stream(model, LONG, "x") as deltas:
            assert "".join(deltas) == "ok"
        completion = deltas.completion
    else:
        completion = gpt.complete(model, LONG, "x")
    assert completion is not None
    assert completion.usage.audio_prompt_tokens == 600
    assert completion.usage.audio_completion_tokens == 400
    pieces = completion.cost_breakdown
    assert pieces is not None
    assert pieces.input == _per_million(400, text_in)
    assert pieces.audio_input == _per_million(600, audio_in)
    assert pieces.output == _per_million(100, text_out)
    assert pieces.audio_output == _per_million(400, audio_out)
    assert (pieces.cached_input, pieces.reasoning, pieces.image_input) == (0, 0, None)
    assert pieces.unpriced == ()
    assert completion.cost == pieces.known
    assert completion.priced_model == model


def test_gpt_4o_audio_preview_in_dollars(server: LoopbackServer, gpt: GPT) -> None:
    """The sum written out: 400 x $2.50 + 600 x $40 + 100 x $10 + 400 x $80, per 1M tokens."""
    server.enqueue(Reply(text="ok", **AUDIO))
    completion = gpt.complete("gpt-4o-audio-preview", LONG, "x")
    assert completion.cost == Decimal("0.058")  # 0.001 + 0.024 + 0.001 + 0.032


def test_a_text_only_reply_of_an_audio_model_is_priced_as_text(
    server: LoopbackServer, gpt: GPT
) -> None:
    """gpt-audio-mini: $0.60 / $2.40 text (developers.openai.com/api/docs/models/gpt-audio-mini;
    LiteLLM 6e-07 / 2.4e-06)."""
    server.enqueue(Reply(text="ok", prompt_tokens=1000, completion_tokens=500))
    completion = gpt.complete("gpt-audio-mini", LONG, "x")
    assert completion.cost == Decimal("0.0018")  # 1000 x $0.60 + 500 x $2.40
    pieces = completion.cost_breakdown
    assert pieces is not None
    assert (pieces.audio_input, pieces.audio_output, pieces.unpriced) == (None, None, ())


@pytest.mark.parametrize(
    "model",
    [
        # Its model page lists text tokens only; LiteLLM's $10 / $20 audio is not confirmed
        # by the vendor, so the table leaves it out.
        "gpt-audio-mini",
        "gpt-audio-mini-2025-12-15",
        # Launched at $100 / $200 per 1M audio tokens; the $40 / $80 of its family came with the
        # 2024-12-17 snapshot. Without a listed figure it must not borrow its family's.
        "gpt-4o-audio-preview-2024-10-01",
    ],
)
def test_audio_without_a_listed_price_is_an_unknown_cost(
    server: LoopbackServer, gpt: GPT, model: str
) -> None:
    server.enqueue(Reply(text="ok", **AUDIO))
    completion = gpt.complete(model, LONG, "x")
    assert completion.cost is None
    assert completion.priced_model is None
    pieces = completion.cost_breakdown
    assert pieces is not None  # the known pieces, and what is missing
    assert pieces.unpriced == ("audio_input", "audio_output")
    assert (pieces.audio_input, pieces.audio_output) == (None, None)
    text_in, text_out = ("0.60", "2.40") if "mini" in model else ("2.50", "10.00")
    assert pieces.input == _per_million(400, text_in)
    assert pieces.output == _per_million(100, text_out)
    assert gpt.ledger.cost == 0
    assert gpt.ledger.unpriced_calls == 1


def test_image_tokens_without_a_separate_price_are_an_unknown_cost(
    server: LoopbackServer, gpt: GPT
) -> None:
    """No chat model's page lists an image-token price apart, so reported image tokens leave
    the cost unknown rather than priced as text."""
    server.enqueue(
        Reply(text="ok", prompt_tokens=1000, image_prompt_tokens=765, completion_tokens=10),
        Reply(text="ok", prompt_tokens=1000, image_prompt_tokens=0, completion_tokens=10),
    )
    first = gpt.complete("gpt-4o", LONG, "x")
    assert first.cost is None
    assert first.cost_breakdown is not None
    assert first.cost_breakdown.unpriced == ("image_input",)
    assert first.cost_breakdown.input == _per_million(235, "2.50")  # gpt-4o's text input
    second = gpt.complete("gpt-4o", LONG, "x")
    assert second.cost == Decimal("0.0026")  # 1000 x $2.50 + 10 x $10.00: nothing unknown


def test_audio_tokens_on_the_responses_api(server: LoopbackServer, gpt: GPT) -> None:
    """The audio models are served on chat completions; should a Responses usage object carry
    audio counts in its input/output details, they are read and priced the same way."""
    server.enqueue(Reply(text="ok", **AUDIO))
    completion = gpt.complete("gpt-audio", LONG, "x", options={"api": "responses"})
    assert completion.usage.audio_prompt_tokens == 600
    assert completion.cost == Decimal("0.0468")  # 0.001 + 0.0192 + 0.001 + 0.0256


def test_more_audio_tokens_than_the_prompt_holds_cannot_lower_the_cost(
    server: LoopbackServer, gpt: GPT
) -> None:
    """A lying server: parts bigger than their whole count as the whole, never as negative
    text tokens."""
    server.enqueue(
        Reply(
            text="ok",
            prompt_tokens=100,
            audio_prompt_tokens=10**6,
            cached_tokens=10**6,
            completion_tokens=50,
            audio_completion_tokens=10**6,
        )
    )
    completion = gpt.complete("gpt-4o-audio-preview", LONG, "x")
    pieces = completion.cost_breakdown
    assert pieces is not None
    assert (pieces.input, pieces.cached_input, pieces.output) == (0, 0, 0)
    assert completion.cost == _per_million(100, "40.00") + _per_million(50, "80.00")


# -- budgets ---------------------------------------------------------------------------------


def _calls_until_refused(instance: Callable[[int], GPT]) -> int:
    """Calls sent before the budget refuses one (at most 20)."""
    for turn in range(20):
        try:
            instance(turn).complete("gpt-audio-mini", LONG, "x", max_tokens=1000)
        except BudgetExceededError:
            return turn
    raise AssertionError("the budget never refused a call")


def test_unpriced_audio_counts_against_the_budget_at_its_reservation(
    server: LoopbackServer,
) -> None:
    """Without this, replies full of unpriced audio would spend a budget unseen: each counts
    at least what it reserved (1000 output tokens at $2.40 plus the prompt's bound at $0.60)."""
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, budget="0.01")
    server.responder = lambda request: Reply(text="ok", **AUDIO)
    sent = _calls_until_refused(lambda turn: gpt)
    assert 1 <= sent <= 4  # each holds over $0.0024 of the $0.01
    assert len(server.chat_requests) == sent
    assert gpt.ledger.cost == 0  # no known cost is invented
    assert gpt.ledger.unpriced_calls == sent
    assert Decimal("0.0024") * sent < gpt.ledger.charged <= Decimal("0.01")


def test_concurrent_callers_cannot_overrun_a_budget_with_unpriced_audio(
    server: LoopbackServer,
) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, budget="0.01")
    server.responder = lambda request: Reply(text="ok", delay=0.01, **AUDIO)
    refused = []
    lock = threading.Lock()

    def call() -> None:
        for _ in range(4):
            try:
                gpt.complete("gpt-audio-mini", LONG, "x", max_tokens=1000)
            except BudgetExceededError:
                with lock:
                    refused.append(1)

    threads = [threading.Thread(target=call) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= len(server.chat_requests) <= 4
    assert len(refused) == 32 * 4 - len(server.chat_requests)
    assert gpt.ledger.charged <= Decimal("0.01")


def test_a_shared_budget_counts_unpriced_audio_too(server: LoopbackServer, tmp_path: Path) -> None:
    def make() -> GPT:
        return GPT(
            "openai",
            endpoint=server.url,
            api_key=TEST_KEY,
            retry=FAST_RETRY,
            budget="0.01",
            budget_scope="audio-team",
            log=tmp_path / "spend.db",
        )

    server.responder = lambda request: Reply(text="ok", **AUDIO)
    one, other = make(), make()
    sent = _calls_until_refused(lambda turn: one if turn % 2 else other)
    assert 1 <= sent <= 4
    assert len(server.chat_requests) == sent


def test_chat_json_carries_the_audio_counts(server: LoopbackServer, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    server.enqueue(Reply(text="ok", **AUDIO))
    env = {
        **os.environ,
        "MOODLEMATE_ENDPOINT": server.url,
        "MOODLEMATE_API_KEY": TEST_KEY,
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "moodlemate.ai.cli", "chat", "-m", "gpt-audio", "--json", LONG],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    fields = json.loads(out.stdout)
    assert fields["usage"]["audio_prompt_tokens"] == 600
    assert fields["usage"]["audio_completion_tokens"] == 400
    assert "cache_write_tokens" not in fields["usage"]  # none reported: the shape is kept
    assert fields["cost"] == "0.0468"


def test_a_spoken_reply_is_reserved_at_the_audio_rate(server: LoopbackServer) -> None:
    """1000 reply tokens of gpt-4o-audio-preview: $0.01 as text ($10.00 per 1M), $0.08 as
    audio ($80.00): a $0.05 budget takes the text call and refuses the spoken one unsent."""
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, budget="0.05")
    spoken = {"modalities": ("text", "audio"), "audio": {"voice": "alloy", "format": "wav"}}
    gpt.complete("gpt-4o-audio-preview", "", "x", max_tokens=1000)
    with pytest.raises(BudgetExceededError):
        gpt.complete("gpt-4o-audio-preview", "", "x", max_tokens=1000, options=spoken)
    assert len(server.chat_requests) == 1


def test_a_spoken_reply_asked_for_through_extra_is_reserved_at_the_audio_rate(
    server: LoopbackServer,
) -> None:
    """``extra`` passes ``modalities`` to the server as the named option does: the reply is
    spoken all the same, so its reservation must be at the audio rate too, or one call could
    spend eight times what it held."""
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, budget="0.05")
    spoken = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}
    with pytest.raises(BudgetExceededError):
        gpt.complete("gpt-4o-audio-preview", "", "x", max_tokens=1000, extra=spoken)
    assert server.chat_requests == []
    free = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    free.complete("gpt-4o-audio-preview", "", "x", max_tokens=1000, extra=spoken)
    assert server.chat_requests[0].body["modalities"] == ["text", "audio"]  # it was sent
