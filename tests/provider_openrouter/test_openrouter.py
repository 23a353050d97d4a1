"""The OpenRouter provider against loopback servers: headers, model ids, cost, prices, errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import (
    GPT,
    ContextWindowExceededError,
    InvalidAPIKeyError,
    MissingAPIKeyError,
    QuotaExceededError,
    ServerError,
)
from moodlemate.ai._plugins import registry
from moodlemate.ai._provider import Completion
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from moodlemate.providers.openai import OpenAIProvider
from moodlemate.providers.openai.responses import parse_completion
from moodlemate.providers.openrouter import OpenRouterProvider, catalog, refresh_models
from support import FAST_RETRY

OR_KEY = "sk-or-v1-5e2a9c0d7b1f4e3a8c6d"
OPENAI_KEY = "sk-proj-openai-3c9e1a7f5b2d4c6e"


def or_entry(model: str, prompt: str, completion: str, **extra: Any) -> dict[str, Any]:
    """One entry of OpenRouter's GET /models listing, in its own shape."""
    pricing = {"prompt": prompt, "completion": completion, "request": "0", "image": "0"}
    pricing.update(extra.pop("pricing", {}))
    return {
        "id": model,
        "name": model,
        "context_length": extra.pop("context_length", 128000),
        "architecture": {"modality": "text->text", "tokenizer": "GPT"},
        "pricing": pricing,
        "top_provider": {
            "context_length": 128000,
            "max_completion_tokens": extra.pop("max_completion_tokens", 16384),
            "is_moderated": True,
        },
        **extra,
    }


@pytest.fixture
def router() -> Iterator[LoopbackServer]:
    """A loopback server playing OpenRouter (served under /api/v1)."""
    with LoopbackServer() as srv:
        srv.models = [
            or_entry(
                "openai/gpt-4o-mini",
                "0.00000015",
                "0.0000006",
                pricing={"input_cache_read": "0.000000075"},
            ),
            or_entry(
                "anthropic/claude-sonnet-4",
                "0.000003",
                "0.000015",
                context_length=200000,
                # Anthropic's cache prices as OpenRouter lists them: reads $0.30, writes $3.75.
                pricing={"input_cache_read": "0.0000003", "input_cache_write": "0.00000375"},
            ),
            or_entry("openrouter/auto", "-1", "-1"),
        ]
        yield srv


def or_url(server: LoopbackServer) -> str:
    return f"{server.origin}/api/v1"


def or_gpt(server: LoopbackServer, **kwargs: Any) -> GPT:
    return GPT("openrouter", endpoint=or_url(server), retry=FAST_RETRY, **kwargs)


def test_provider_is_installed_by_its_entry_point_and_reuses_the_openai_code() -> None:
    entry = registry.entries()["openrouter"]
    assert entry.package == "moodlemate-ai-openrouter"
    assert isinstance(entry.provider, OpenRouterProvider)
    assert isinstance(entry.provider, OpenAIProvider)
    assert entry.provider.default_endpoint == "https://openrouter.ai/api/v1"
    from importlib.resources import files

    assert files("moodlemate.providers.openrouter").joinpath("py.typed").is_file()


def test_requests_carry_the_model_id_key_and_attribution_headers(router: LoopbackServer) -> None:
    gpt = or_gpt(router, app_url="https://example.org/app", app_title="Example App")
    gpt.api_key = OR_KEY
    assert gpt.chat_completion("anthropic/claude-sonnet-4", "Be brief.", "Hi") == "Echo: Hi"
    (request,) = router.chat_requests
    assert request.path == "/api/v1/chat/completions"
    assert request.body["model"] == "anthropic/claude-sonnet-4"
    assert request.body["temperature"] == 0.7
    assert request.headers["authorization"] == f"Bearer {OR_KEY}"
    assert request.headers["http-referer"] == "https://example.org/app"
    assert request.headers["x-openrouter-title"] == "Example App"
    assert request.headers["x-title"] == "Example App"
    assert gpt.last_result is not None
    assert gpt.last_result.provider == "openrouter"


def test_attribution_headers_are_sent_only_when_configured_and_only_to_openrouter(
    router: LoopbackServer, server: LoopbackServer
) -> None:
    or_gpt(router).chat_completion("openai/gpt-4o-mini", "", "Hi")
    GPT("openai", endpoint=server.url, app_title="Example App").chat_completion(
        "gpt-4o-mini", "", "Hi"
    )
    for request in [*router.chat_requests, *server.chat_requests]:
        assert not {"http-referer", "x-title", "x-openrouter-title"} & set(request.headers)


@pytest.mark.parametrize("model", ["openai/o1", "openai/o3-mini", "openai/o1-mini-2024-09-12"])
def test_openai_reasoning_ids_get_the_reasoning_request_rules(
    router: LoopbackServer, model: str
) -> None:
    # The loopback server rejects max_tokens and temperature 0.7 on these models, as OpenAI does.
    text = or_gpt(router).chat_completion(model, "Be brief.", "Hi", max_tokens=50)
    assert text.endswith("Hi")
    body = router.chat_requests[-1].body
    assert body["model"] == model
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body
    assert "temperature" not in body
    if "o1-mini" in model:  # rejects the system role: its text leads the user turn
        assert body["messages"] == [{"role": "user", "content": "Be brief.\n\nHi"}]


def test_other_vendors_keep_the_classic_request_shape(router: LoopbackServer) -> None:
    # Named like an o-series model, but not OpenAI's: OpenRouter takes the classic shape.
    or_gpt(router).chat_completion("acme/o3-mini", "Be brief.", "Hi", max_tokens=50)
    body = router.chat_requests[-1].body
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.7
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}


def test_openrouter_keys_are_checked_on_openrouter() -> None:
    gpt = GPT("openrouter")
    with pytest.raises(InvalidAPIKeyError, match="'sk-or-'"):
        gpt.api_key = OPENAI_KEY
    gpt.api_key = OR_KEY
    assert gpt.api_key == OR_KEY


# -- cost ------------------------------------------------------------------------------------


def test_cost_is_what_openrouter_charged_when_it_says(router: LoopbackServer) -> None:
    router.enqueue(Reply(text="a", cost=0.0042), Reply(text="b", cost=0.000137))
    gpt = or_gpt(router)
    first = gpt.complete("anthropic/claude-sonnet-4", "", "Hi")
    gpt.complete("anthropic/claude-sonnet-4", "", "Hi")
    assert first.cost == Decimal("0.0042")
    assert first.reported_cost == Decimal("0.0042")
    assert gpt.ledger.cost == Decimal("0.004337")


def test_cost_comes_from_the_models_endpoint_when_the_response_has_none(
    router: LoopbackServer,
) -> None:
    router.enqueue(Reply(prompt_tokens=1000, cached_tokens=400, completion_tokens=200))
    result = or_gpt(router).complete("openai/gpt-4o-mini", "", "Hi " * 500)
    # 600 x 0.15 + 400 x 0.075 + 200 x 0.60, per million tokens, exactly.
    assert result.reported_cost is None
    assert result.cost == Decimal("0.00024")
    assert [r.path for r in router.requests if r.method == "GET"] == ["/api/v1/models"]


def test_unpriced_and_variable_price_models_have_unknown_cost(router: LoopbackServer) -> None:
    gpt = or_gpt(router)
    assert gpt.complete("openrouter/auto", "", "Hi").cost is None
    assert gpt.complete("someone/unlisted-model", "", "Hi").cost is None
    assert gpt.ledger.as_dict()["total"]["unpriced_calls"] == 2


# -- the price catalog -----------------------------------------------------------------------


def test_refresh_reads_prices_and_limits_per_token_into_exact_per_million_decimals(
    router: LoopbackServer,
) -> None:
    assert refresh_models(or_url(router)) == 2  # openrouter/auto ("-1") has no price
    info = catalog.lookup("anthropic/claude-sonnet-4", or_url(router))
    assert info is not None
    assert info.price is not None
    assert info.price.input == Decimal("3")
    assert info.price.output == Decimal("15")
    assert (info.price.cached_input, info.price.cache_write) == (Decimal("0.3"), Decimal("3.75"))
    assert info.context_window == 200000
    assert info.max_output_tokens == 16384
    assert info.source == f"{or_url(router)}/models"
    mini = catalog.lookup("openai/gpt-4o-mini:nitro", or_url(router))
    assert mini is not None
    assert mini.price is not None
    assert (mini.price.input, mini.price.cached_input) == (Decimal("0.15"), Decimal("0.075"))
    assert catalog.lookup("openai/gpt-4o-mini:free", or_url(router)) is None

    router.models = [or_entry("anthropic/claude-sonnet-4", "0.0000025", "0.00001")]
    assert refresh_models(or_url(router)) == 1
    info = catalog.lookup("anthropic/claude-sonnet-4", or_url(router))
    assert info is not None
    assert info.price is not None
    assert info.price.input == Decimal("2.5")
    assert catalog.cache_path(or_url(router)).is_file()


def test_an_unreachable_endpoint_falls_back_to_the_shipped_snapshot_quickly() -> None:
    with LoopbackServer() as gone:
        endpoint = or_url(gone)
    started = time.perf_counter()
    info = catalog.lookup("openai/gpt-4o-mini", endpoint)
    assert time.perf_counter() - started < catalog.FETCH_TIMEOUT
    assert info is not None
    assert info.price is not None
    assert info.price.input == Decimal("0.15")
    assert info.source is not None
    assert "openrouter.ai" in info.source
    assert info.as_of


def test_a_chat_call_is_priced_from_the_snapshot_when_the_models_endpoint_fails() -> None:
    # The models listing is fetched without a key, so a key-protected server refuses it.
    with LoopbackServer(api_key=OR_KEY) as guarded:
        guarded.enqueue(Reply(prompt_tokens=10_000, completion_tokens=0))
        gpt = or_gpt(guarded, api_key=OR_KEY)
        # A prompt long enough for the 10,000 tokens the server reports.
        result = gpt.complete("openai/gpt-4o-mini", "", "Hi " * 5_000)
    assert result.cost == Decimal("0.0015")  # the snapshot's price of 10,000 prompt tokens


def _lookup_in_a_new_process(endpoint: str, model: str) -> str:
    code = (
        "import sys; from moodlemate.providers.openrouter import catalog; "
        "i = catalog.lookup(sys.argv[2], sys.argv[1]); "
        "print(i.price.input if i and i.price else None, i.source if i else None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, endpoint, model],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
        timeout=60,
    )
    return out.stdout.strip()


def test_the_disk_cache_serves_a_new_process_offline_then_goes_stale(
    router: LoopbackServer,
) -> None:
    endpoint = or_url(router)
    router.models = [or_entry("openai/gpt-4o-mini", "0.0000009", "0.000003")]
    refresh_models(endpoint)
    router.stop()
    assert _lookup_in_a_new_process(endpoint, "openai/gpt-4o-mini") == f"0.9 {endpoint}/models"

    # Past its TTL and unreachable: the stale cache still beats the older snapshot.
    path = catalog.cache_path(endpoint)
    data = json.loads(path.read_text())
    data["fetched_at"] -= catalog.CACHE_TTL + 60
    path.write_text(json.dumps(data))
    assert _lookup_in_a_new_process(endpoint, "openai/gpt-4o-mini") == f"0.9 {endpoint}/models"

    path.unlink()
    assert _lookup_in_a_new_process(endpoint, "openai/gpt-4o-mini").startswith("0.15 https://")


def test_cache_files_live_under_xdg_cache_home(tmp_path: Path) -> None:
    assert catalog.cache_path().parent == tmp_path / "xdg-cache" / "moodlemate-ai"


# -- errors ----------------------------------------------------------------------------------


def test_out_of_credits_is_one_attempt_and_a_quota_error(router: LoopbackServer) -> None:
    router.enqueue(Fault.status(402), Reply(text="never sent"))
    with pytest.raises(QuotaExceededError) as info:
        or_gpt(router).chat_completion("openai/gpt-4o-mini", "", "Hi")
    assert len(router.chat_requests) == 1
    assert info.value.status_code == 402
    assert "credits" in str(info.value)


@pytest.mark.parametrize("status", [408, 429, 502, 503])
def test_transient_statuses_are_retried(router: LoopbackServer, status: int) -> None:
    router.enqueue(Fault.status(status, retry_after=0), Reply(text="recovered"))
    assert or_gpt(router).chat_completion("openai/gpt-4o-mini", "", "Hi") == "recovered"
    assert len(router.chat_requests) == 2


def test_an_error_in_a_200_body_raises_instead_of_returning_empty_text(
    router: LoopbackServer,
) -> None:
    router.enqueue(*[Fault.error_in_200(502, "Upstream model failed")] * FAST_RETRY.attempts)
    with pytest.raises(ServerError, match="Upstream model failed") as info:
        or_gpt(router).chat_completion("openai/gpt-4o-mini", "", "Hi")
    assert info.value.status_code == 502
    assert len(router.chat_requests) == FAST_RETRY.attempts  # a 502 is transient: retried


def test_an_error_in_a_200_body_is_retried_like_its_status(router: LoopbackServer) -> None:
    router.enqueue(Fault.error_in_200(503), Reply(text="fine"))
    assert or_gpt(router).chat_completion("openai/gpt-4o-mini", "", "Hi") == "fine"
    assert len(router.chat_requests) == 2


def test_an_error_inside_a_choice_raises() -> None:
    body = {
        "id": "gen-1",
        "model": "openai/gpt-4o-mini",
        "choices": [
            {
                "finish_reason": "error",
                "message": {"role": "assistant", "content": ""},
                "error": {"code": 502, "message": "Provider disconnected"},
            }
        ],
    }
    with pytest.raises(ServerError, match="Provider disconnected"):
        parse_completion(json.dumps(body).encode(), {}, provider="openrouter", model="m")


# -- keys ------------------------------------------------------------------------------------


def test_with_only_an_openai_key_no_request_carries_it(
    router: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("MOODLEMATE_PROVIDER", "openrouter")
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", or_url(router))
    gpt = GPT(retry=FAST_RETRY)
    gpt.chat_completion("openai/gpt-4o-mini", "", "Hi")
    gpt.count_tokens("Hi", "openai/gpt-4o-mini")
    assert router.requests
    for request in router.requests:
        assert OPENAI_KEY not in json.dumps(request.headers)
        assert OPENAI_KEY.encode() not in request.raw
        assert "authorization" not in request.headers  # a custom endpoint gets no env key


def test_openrouter_without_its_key_fails_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    gpt = GPT("openrouter")
    assert gpt.api_key is None
    with pytest.raises(MissingAPIKeyError, match="OPENROUTER_API_KEY"):
        gpt.chat_completion("openai/gpt-4o-mini", "", "Hi")


def test_the_openrouter_key_variable_is_used_on_openrouter_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENROUTER_API_KEY", OR_KEY)
    assert GPT("openrouter").api_key == OR_KEY
    assert GPT("openai").api_key == OPENAI_KEY


def test_setting_an_openrouter_endpoint_selects_openrouter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENROUTER_API_KEY", OR_KEY)
    for gpt in (GPT(), GPT("openai")):
        gpt.endpoint = "https://openrouter.ai/api/v1/"
        assert gpt.provider.name == "openrouter"
        assert gpt.api_key == OR_KEY
    assert GPT(endpoint="https://openrouter.ai/api/v1").provider.name == "openrouter"


def test_selecting_openrouter_imports_no_sdk_until_a_call() -> None:
    code = (
        "import sys; from moodlemate.ai import GPT; g = GPT('openrouter'); g.endpoint; "
        "print(sorted(m for m in ('openai', 'tiktoken') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_refresh_command_reports_what_it_cached(router: LoopbackServer) -> None:
    command = [sys.executable, "-m", "moodlemate.providers.openrouter", or_url(router) + "/"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith("2 OpenRouter models priced; cached in ")
    assert str(catalog.cache_path(or_url(router))) in out.stdout
    router.stop()
    failed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode == 1
    assert "error:" in failed.stderr
    assert "/api/v1/models" in failed.stderr


def test_the_refresh_command_explains_itself_without_fetching() -> None:
    command = [sys.executable, "-m", "moodlemate.providers.openrouter", "--help"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert (out.returncode, out.stderr) == (0, "")
    assert "ENDPOINT" in out.stdout
    assert not catalog.cache_dir().exists()


def test_the_provider_lists_the_models_of_the_service_in_use(router: LoopbackServer) -> None:
    gpt = or_gpt(router)
    names = [info.name for info in gpt.provider.models(gpt.endpoint)]
    assert names == ["anthropic/claude-sonnet-4", "openai/gpt-4o-mini", "openrouter/auto"]


LONG = "Hi " * 500
"""A prompt long enough for the 1,000 prompt tokens the scripted replies report."""


@pytest.mark.parametrize("style", ["stream", "acomplete", "astream"])
def test_streamed_and_async_calls_are_priced_from_the_endpoint_in_use(
    router: LoopbackServer, style: str
) -> None:
    router.models = [or_entry("openai/gpt-4o-mini", "0.000002", "0.000004")]
    gpt = or_gpt(router, api_key="sk-or-v1-test-0123456789")
    gpt.complete("openai/gpt-4o-mini", "", "warm up")  # the provider's last endpoint: this one
    with LoopbackServer() as other:
        other.models = [or_entry("openai/gpt-4o-mini", "0.000003", "0.000009")]
        other_gpt = or_gpt(other, api_key="sk-or-v1-test-0123456789")

        async def drain() -> None:
            async for _ in other_gpt.astream("openai/gpt-4o-mini", "", LONG):
                pass
            await other_gpt.aclose()

        async def complete() -> Completion:
            try:
                return await other_gpt.acomplete("openai/gpt-4o-mini", "", LONG)
            finally:
                await other_gpt.aclose()

        other.enqueue(Reply(prompt_tokens=1000, completion_tokens=100))
        if style == "stream":
            stream = other_gpt.stream("openai/gpt-4o-mini", "", LONG)
            "".join(stream)
            result = stream.completion
        elif style == "acomplete":
            result = asyncio.run(complete())
        else:
            asyncio.run(drain())
            result = other_gpt.ledger
        # 1000 x 3 + 100 x 9 per million.
        assert result is not None
        assert result.cost == Decimal("0.0039")


def test_a_disk_cache_dated_in_the_future_is_not_trusted_forever(router: LoopbackServer) -> None:
    endpoint = or_url(router)
    router.models = [or_entry("openai/gpt-4o-mini", "0.0000009", "0.000003")]
    refresh_models(endpoint)
    # Written while the clock was a year ahead (a VM's, say), then the clock was corrected.
    path = catalog.cache_path(endpoint)
    data = json.loads(path.read_text())
    data["fetched_at"] += 365 * 24 * 3600
    path.write_text(json.dumps(data))
    router.models = [or_entry("openai/gpt-4o-mini", "0.000002", "0.000004")]
    assert _lookup_in_a_new_process(endpoint, "openai/gpt-4o-mini") == f"2 {endpoint}/models"


def test_two_instances_on_two_catalogs_each_price_and_check_by_their_own() -> None:
    """The provider object is shared: each call must be priced from the catalog of its own
    endpoint, not from whichever endpoint another instance or thread used last."""
    import threading

    with LoopbackServer() as cheap, LoopbackServer() as dear:
        cheap.models = [or_entry("openai/gpt-4o-mini", "0.000001", "0.000001", context_length=60)]
        dear.models = [or_entry("openai/gpt-4o-mini", "1", "1")]
        for srv in (cheap, dear):
            srv.responder = lambda body: Reply(text="ok", prompt_tokens=10, completion_tokens=5)
        key = "sk-or-v1-test-0123456789"
        cheap_gpt, dear_gpt = or_gpt(cheap, api_key=key), or_gpt(dear, api_key=key)
        # before any chat request, the context check already reads each proxy's own catalog
        long_prompt = "word " * 80
        with pytest.raises(ContextWindowExceededError):
            cheap_gpt.complete("openai/gpt-4o-mini", "", long_prompt, max_tokens=5)
        dear_gpt.complete("openai/gpt-4o-mini", "", long_prompt, max_tokens=5)
        assert cheap.chat_requests == []
        assert [r.path for r in cheap.requests] == ["/api/v1/models"]
        dear_gpt.ledger.reset()

        def calls(gpt: GPT) -> None:
            for _ in range(100):
                gpt.complete("openai/gpt-4o-mini", "", "Hi", max_tokens=5)

        threads = [threading.Thread(target=calls, args=(g,)) for g in (cheap_gpt, dear_gpt) * 4]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert cheap_gpt.ledger.calls == dear_gpt.ledger.calls == 400
    assert cheap_gpt.ledger.cost == Decimal("0.006")  # 400 x 15 tokens x $0.000001
    assert dear_gpt.ledger.cost == Decimal("6000")  # 400 x 15 tokens x $1


def test_openrouters_rate_limit_headers_reach_the_completion_and_the_pacer(
    router: LoopbackServer,
) -> None:
    gpt = or_gpt(router, pacing=True)
    gpt.api_key = OR_KEY
    reset = int((time.time() + 1.0) * 1000)  # OpenRouter: the moment, in Unix milliseconds
    spent = {
        "X-RateLimit-Limit": "200",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
    }
    router.enqueue(Reply(text="last one", headers=spent))
    first = gpt.complete("openai/gpt-4o-mini", "", "hi")
    assert first.rate_limits is not None
    assert (first.rate_limits.requests_limit, first.rate_limits.requests_remaining) == (200, 0)
    assert first.rate_limits.requests_reset is not None
    assert 0.5 < first.rate_limits.requests_reset <= 1.0
    gpt.complete("openai/gpt-4o-mini", "", "waits for the reset")
    one, two = (r.received_at for r in router.chat_requests)
    assert two - one >= 0.5  # held until the reset the server named, not sent into a 429
