"""Fallbacks across models and providers, against loopback servers playing OpenAI and
OpenRouter: which errors move a call on, which never do, keys per entry, the ledger exact."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai import (
    GPT,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    ContextWindowExceededError,
    MissingAPIKeyError,
    QuotaExceededError,
    ServerError,
    StreamInterruptedError,
    UnknownProviderError,
    ValidationError,
    hookimpl,
)
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai._provider import ChatRequest, Completion
from moodlemate.ai._usage import Usage
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from moodlemate.providers.openai import OpenAIProvider
from moodlemate.providers.openrouter import OpenRouterProvider
from support import FAST_RETRY, TEST_KEY

# The chains run on registries of their own (Servers.plugins): no pin applies.
pytestmark = pytest.mark.all_plugins

OR_KEY = "sk-or-v1-5e2a9c0d7b1f4e3a8c6d0f1e"
ROUTED = "openrouter:openai/gpt-4o-mini"
OUTAGE = Fault.status(503, message="upstream overloaded")


class Servers:
    """Three loopback servers: the instance's OpenAI endpoint, a second OpenAI-compatible
    one, and one playing OpenRouter's own service (what an ``openrouter:`` route reaches)."""

    def __init__(self, openai: LoopbackServer, router: LoopbackServer) -> None:
        self.openai = openai
        self.router = router

        class LoopbackOpenRouter(OpenRouterProvider):
            default_endpoint = router.url
            key_env = "OPENROUTER_API_KEY"
            key_prefixes = ("sk-or-",)
            key_min_length = 20

        self.plugins = PluginRegistry(group="moodlemate.ai.none")
        self.plugins.register_provider(OpenAIProvider())
        self.plugins.register_provider(LoopbackOpenRouter())

    def gpt(self, fallbacks: list[str], **kwargs: Any) -> GPT:
        kwargs.setdefault("retry", FAST_RETRY)
        return GPT(
            "openai",
            endpoint=self.openai.url,
            api_key=TEST_KEY,
            plugins=self.plugins,
            fallbacks=fallbacks,
            **kwargs,
        )


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Servers]:
    monkeypatch.setenv("OPENROUTER_API_KEY", OR_KEY)
    with LoopbackServer() as openai, LoopbackServer(api_key=OR_KEY) as router:
        router.models = []  # an empty catalog: prices come from the reported usage.cost
        yield Servers(openai, router)


def auth(server: LoopbackServer) -> list[str | None]:
    return [r.headers.get("authorization") for r in server.chat_requests]


def models(server: LoopbackServer) -> list[str]:
    return [r.body["model"] for r in server.chat_requests]


# -- when to fall back --------------------------------------------------------------------------


def test_an_outage_on_openai_is_served_by_openrouter_with_its_own_key(servers: Servers) -> None:
    servers.openai.enqueue(*[OUTAGE] * FAST_RETRY.attempts)
    servers.router.enqueue(Reply(text="from the router", cost=0.00042))
    gpt = servers.gpt([ROUTED])

    completion = gpt.complete("gpt-4o-mini", "", "hi")

    assert completion.text == "from the router"
    assert completion.served_by == ROUTED
    assert completion.provider == "openrouter"
    [failed] = completion.failed_before
    assert (failed.model, failed.provider, failed.error) == ("gpt-4o-mini", "openai", "ServerError")
    assert (failed.status_code, failed.attempts) == (503, FAST_RETRY.attempts)
    assert models(servers.openai) == ["gpt-4o-mini"] * FAST_RETRY.attempts
    assert models(servers.router) == ["openai/gpt-4o-mini"]
    assert auth(servers.router) == [f"Bearer {OR_KEY}"]
    assert all(TEST_KEY.encode() not in r.raw for r in servers.router.requests)
    assert gpt.last_result == completion
    assert gpt.chat_completion("gpt-4o-mini", "", "again") == "Echo: again"  # the primary is back
    assert gpt.last_result is not None
    assert gpt.last_result.served_by == "gpt-4o-mini"


@pytest.mark.parametrize(
    "fault",
    [Fault.reset(), Fault.status(429, retry_after=0), Fault.status(500), Fault.malformed()],
    ids=["reset", "429", "500", "malformed"],
)
def test_every_kind_of_outage_falls_back(servers: Servers, fault: Fault) -> None:
    servers.openai.enqueue(*[fault] * FAST_RETRY.attempts)
    gpt = servers.gpt(["gpt-4o"])
    assert gpt.chat_completion("gpt-4o-mini", "", "hi") == "Echo: hi"
    assert models(servers.openai) == ["gpt-4o-mini"] * FAST_RETRY.attempts + ["gpt-4o"]


def test_a_timeout_falls_back_within_the_retry_deadline(servers: Servers) -> None:
    retry = FAST_RETRY.__class__(attempts=2, deadline=5.0, attempt_timeout=0.3, wait_initial=0.01)
    servers.openai.enqueue(Fault.slow(3.0), Fault.slow(3.0))
    gpt = servers.gpt([ROUTED], retry=retry)
    completion = gpt.complete("gpt-4o-mini", "", "hi")
    assert completion.served_by == ROUTED
    assert completion.failed_before[0].error == "APITimeoutError"
    assert completion.failed_before[0].elapsed < 3.0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.status(400, message="bad temperature"), BadRequestError),
        (Fault.status(401, message="invalid key"), AuthenticationError),
        (Fault.status(422, message="unprocessable"), Exception),
    ],
    ids=["400", "401", "422"],
)
def test_errors_another_model_would_repeat_never_fall_back(
    servers: Servers, fault: Fault, error: type[Exception]
) -> None:
    servers.openai.enqueue(fault)
    gpt = servers.gpt(["gpt-4o", ROUTED])
    with pytest.raises(error) as raised:
        gpt.complete("gpt-4o-mini", "", "hi")
    assert getattr(raised.value, "failed_before", ()) == ()
    assert models(servers.openai) == ["gpt-4o-mini"]
    assert servers.router.chat_requests == []


def test_a_400_on_a_fallback_ends_the_chain_and_names_what_failed_before(
    servers: Servers,
) -> None:
    servers.openai.enqueue(*[OUTAGE] * FAST_RETRY.attempts, Fault.status(400))
    gpt = servers.gpt(["gpt-4o", ROUTED])
    with pytest.raises(BadRequestError) as raised:
        gpt.complete("gpt-4o-mini", "", "hi")
    assert [f.model for f in raised.value.failed_before] == ["gpt-4o-mini"]
    assert servers.router.chat_requests == []


def test_when_every_entry_is_out_the_last_error_carries_the_others(servers: Servers) -> None:
    servers.openai.enqueue(*[OUTAGE] * (2 * FAST_RETRY.attempts))
    servers.router.enqueue(*[Fault.status(502)] * FAST_RETRY.attempts)
    gpt = servers.gpt(["gpt-4o", ROUTED])
    with pytest.raises(ServerError) as raised:
        gpt.complete("gpt-4o-mini", "", "hi")
    assert raised.value.status_code == 502
    assert [(f.model, f.provider) for f in raised.value.failed_before] == [
        ("gpt-4o-mini", "openai"),
        ("gpt-4o", "openai"),
    ]
    assert len(servers.router.chat_requests) == FAST_RETRY.attempts
    assert gpt.ledger.calls == 0


def test_quota_falls_back_only_to_another_provider(servers: Servers) -> None:
    servers.openai.enqueue(Fault.quota())
    with pytest.raises(QuotaExceededError):
        servers.gpt(["gpt-4o"]).complete("gpt-4o-mini", "", "hi")
    assert models(servers.openai) == ["gpt-4o-mini"]  # the same account's gpt-4o is out too

    servers.openai.enqueue(Fault.quota())
    completion = servers.gpt(["gpt-4o", ROUTED]).complete("gpt-4o-mini", "", "hi")
    assert completion.served_by == ROUTED
    assert [(f.model, f.error, f.attempts) for f in completion.failed_before] == [
        ("gpt-4o-mini", "QuotaExceededError", 1),
        ("gpt-4o", "QuotaExceededError", 0),  # skipped: the same provider's account
    ]
    assert models(servers.openai) == ["gpt-4o-mini", "gpt-4o-mini"]


def test_a_routed_fallback_without_its_key_is_not_sent_the_instances(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY")
    servers.openai.enqueue(*[OUTAGE] * FAST_RETRY.attempts)
    with pytest.raises(MissingAPIKeyError, match="OPENROUTER_API_KEY") as raised:
        servers.gpt([ROUTED]).complete("gpt-4o-mini", "", "hi")
    assert [f.error for f in raised.value.failed_before] == ["ServerError"]
    assert servers.router.requests == []


def test_a_prompt_too_long_for_every_entry_sends_nothing(servers: Servers) -> None:
    gpt = servers.gpt(["gpt-4o", ROUTED])
    with pytest.raises(ContextWindowExceededError):
        gpt.complete("gpt-4o-mini", "", "word " * 140_000)
    assert servers.openai.requests == []
    assert servers.router.chat_requests == []


def test_a_server_context_overflow_moves_on_to_a_model_that_may_fit(servers: Servers) -> None:
    servers.openai.enqueue(
        Fault.status(400, code_str="context_length_exceeded", message="maximum context length")
    )
    completion = servers.gpt(["gpt-4o"]).complete("gpt-4o-mini", "", "hi")
    assert completion.served_by == "gpt-4o"
    assert completion.failed_before[0].error == "ServerContextWindowExceededError"


def test_fallback_on_is_configurable(servers: Servers) -> None:
    servers.openai.enqueue(*[OUTAGE] * FAST_RETRY.attempts)
    gpt = servers.gpt(["gpt-4o"])
    gpt.fallback_on = (BadRequestError,)  # 5xx no longer falls back; 400 does
    with pytest.raises(ServerError):
        gpt.complete("gpt-4o-mini", "", "hi")
    servers.openai.enqueue(Fault.status(400))
    assert gpt.complete("gpt-4o-mini", "", "hi").served_by == "gpt-4o"


# -- accounting ---------------------------------------------------------------------------------


def test_the_ledger_accounts_each_entry_at_its_own_models_price(servers: Servers) -> None:
    tokens = {"prompt_tokens": 1000, "completion_tokens": 500}
    usage = Usage(prompt_tokens=1000, completion_tokens=500)
    servers.openai.enqueue(
        Reply(**tokens),  # call 1: gpt-4o-mini serves
        *[OUTAGE] * FAST_RETRY.attempts,
        Reply(**tokens),  # call 2: gpt-4o serves
        *[OUTAGE] * (2 * FAST_RETRY.attempts),  # call 3: the router serves
    )
    servers.router.enqueue(Reply(cost=0.0123, **tokens))
    gpt = servers.gpt(["gpt-4o", ROUTED])
    # A prompt long enough for the 1,000 prompt tokens the replies report.
    served = [gpt.complete("gpt-4o-mini", "", "hi " * 500) for _ in range(3)]

    openai = servers.plugins.get("openai")
    mini, big = openai.price("gpt-4o-mini"), openai.price("gpt-4o")
    assert mini is not None
    assert big is not None
    assert [c.served_by for c in served] == ["gpt-4o-mini", "gpt-4o", ROUTED]
    assert [c.cost for c in served] == [mini.cost(usage), big.cost(usage), Decimal("0.0123")]
    by_model = gpt.ledger.as_dict()["by_model"]
    assert {name: tally["cost"] for name, tally in by_model.items()} == {
        "gpt-4o-mini": mini.cost(usage),
        "gpt-4o": big.cost(usage),
        "openai/gpt-4o-mini": Decimal("0.0123"),
    }
    assert gpt.ledger.calls == 3
    assert gpt.ledger.cost == mini.cost(usage) + big.cost(usage) + Decimal("0.0123")


def test_threads_falling_back_at_once_keep_the_ledger_exact(servers: Servers) -> None:
    servers.openai.fault_rate(1.0, [OUTAGE], seed=1)  # every primary attempt is out
    gpt = servers.gpt([ROUTED])
    gpt.retry = FAST_RETRY.__class__(attempts=2, wait_initial=0.01, wait_max=0.02)
    for _ in range(24):
        servers.router.enqueue(Reply(cost=0.0007, prompt_tokens=10, completion_tokens=5))
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda i: gpt.complete("gpt-4o-mini", "", f"q{i}"), range(24)))
    assert {c.served_by for c in served} == {ROUTED}
    assert sorted(c.text for c in served) == sorted(f"Echo: q{i}" for i in range(24))
    assert gpt.ledger.calls == 24
    assert gpt.ledger.cost == Decimal("0.0007") * 24
    assert len(servers.openai.chat_requests) == 48


def test_the_budget_is_checked_before_each_entry(servers: Servers) -> None:
    # As much as a server may report for about 200 prompt tokens and max_tokens=10.
    servers.openai.enqueue(Reply(prompt_tokens=600, completion_tokens=26))
    gpt = servers.gpt(["gpt-4o"], budget="0.0001")
    # reserves its worst case (its prompt, 10 output tokens) but spends more than the budget
    gpt.complete("gpt-4o-mini", "", "hi " * 200, max_tokens=10)
    assert gpt.ledger.cost > Decimal("0.0001")

    with pytest.raises(BudgetExceededError):
        gpt.complete("gpt-4o-mini", "", "hi", max_tokens=10)
    assert len(servers.openai.chat_requests) == 1


class Hooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def before_request(self, request: ChatRequest, provider: str) -> None:
        self.events.append(("before", (provider, request.model)))

    @hookimpl
    def after_response(
        self, completion: Completion | None, error: Exception | None, attempts: int
    ) -> None:
        outcome = completion.served_by if completion else type(error).__name__
        self.events.append(("after", (outcome, attempts)))


def test_the_call_hooks_see_one_call_across_its_entries(servers: Servers) -> None:
    hooks = Hooks()
    servers.plugins.register(hooks, "hooks")
    servers.openai.enqueue(*[OUTAGE] * FAST_RETRY.attempts)
    servers.gpt([ROUTED]).complete("gpt-4o-mini", "", "hi")
    assert hooks.events == [("before", ("openai", "gpt-4o-mini")), ("after", (ROUTED, 1))]


# -- streams, async, batch ----------------------------------------------------------------------


def test_a_stream_falls_back_before_its_first_delta(servers: Servers) -> None:
    servers.openai.enqueue(*[OUTAGE] * FAST_RETRY.attempts)
    servers.router.enqueue(Reply(chunks=["from ", "the ", "router"], cost=0.001))
    gpt = servers.gpt([ROUTED])
    with gpt.stream("gpt-4o-mini", "", "hi") as stream:
        assert list(stream) == ["from ", "the ", "router"]
    assert stream.completion is not None
    assert stream.completion.served_by == ROUTED
    assert [f.error for f in stream.completion.failed_before] == ["ServerError"]
    assert gpt.last_result == stream.completion
    assert gpt.ledger.cost == Decimal("0.001")


def test_a_stream_never_falls_back_after_its_first_delta(servers: Servers) -> None:
    servers.openai.enqueue(Fault.stream_break(after=3))
    gpt = servers.gpt([ROUTED])
    stream = gpt.stream("gpt-4o-mini", "", "one two three four five six")
    with pytest.raises(StreamInterruptedError) as raised:
        list(stream)
    assert stream.text
    assert raised.value.partial_text == stream.text
    assert servers.router.chat_requests == []
    assert gpt.ledger.calls == 0


def test_async_calls_and_streams_fall_back(servers: Servers) -> None:
    servers.openai.enqueue(*[OUTAGE] * (2 * FAST_RETRY.attempts))
    servers.router.enqueue(Reply(text="async"), Reply(chunks=["a", "b"]))
    gpt = servers.gpt([ROUTED])

    async def main() -> tuple[Completion, list[str], Completion | None]:
        completion = await gpt.acomplete("gpt-4o-mini", "", "hi")
        stream = gpt.astream("gpt-4o-mini", "", "hi")
        deltas = [delta async for delta in stream]
        await gpt.aclose()
        return completion, deltas, stream.completion

    completion, deltas, streamed = asyncio.run(main())
    assert (completion.text, completion.served_by) == ("async", ROUTED)
    assert deltas == ["a", "b"]
    assert streamed is not None
    assert streamed.served_by == ROUTED
    assert auth(servers.router) == [f"Bearer {OR_KEY}"] * 2


def test_a_batch_falls_back_item_by_item(servers: Servers, tmp_path: Path) -> None:
    from moodlemate.ai.batch import read_items, run_batch

    servers.openai.enqueue(*[OUTAGE] * FAST_RETRY.attempts)
    servers.router.enqueue(Reply(text="routed"))
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "user": "hi"}\n{"id": "b", "user": "direct"}\n')
    out = tmp_path / "out.jsonl"
    items = read_items(source, default_model="gpt-4o-mini")
    summary = run_batch(servers.gpt([ROUTED]), items, out, concurrency=1)
    assert (summary.succeeded, summary.failed) == (2, 0)
    lines = {x["id"]: x for x in map(json.loads, out.read_text().splitlines())}
    assert (lines["a"]["text"], lines["a"]["served_by"]) == ("routed", ROUTED)
    assert (lines["b"]["text"], lines["b"]["served_by"]) == ("Echo: direct", "gpt-4o-mini")
    assert models(servers.router) == ["openai/gpt-4o-mini"]


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["gpt-4o", [""], [None], ["ok", 3], ["m"] * 17],
    ids=["one-string", "empty", "none", "number", "too-many"],
)
def test_bad_fallbacks_are_refused_before_anything_is_sent(bad: Any) -> None:
    with pytest.raises(ValidationError):
        GPT("openai", fallbacks=bad)


def test_an_entry_naming_a_missing_provider_is_refused_before_the_primary_is_sent(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpt = servers.gpt(["anthropic:claude-sonnet-4"])  # no such provider: a model name then
    assert gpt.complete("gpt-4o-mini", "", "hi").served_by == "gpt-4o-mini"
    monkeypatch.setenv("MOODLEMATE_PLUGINS", "openai")
    plugins = PluginRegistry()  # openrouter installed but left out
    gpt = GPT("openai", endpoint=servers.openai.url, api_key=TEST_KEY, plugins=plugins)
    gpt.fallbacks = [ROUTED]
    with pytest.raises(UnknownProviderError, match="openrouter"):
        gpt.complete("gpt-4o-mini", "", "hi")
    assert len(servers.openai.chat_requests) == 1


def test_fallback_on_takes_exception_classes_only() -> None:
    gpt = GPT("openai")
    gpt.fallback_on = ServerError
    assert gpt.fallback_on == (ServerError,)
    with pytest.raises(ValidationError, match="exception classes"):
        gpt.fallback_on = ("ServerError",)  # type: ignore[assignment]
    gpt.fallback_on = None
    assert gpt.fallback_on is None


def test_a_config_profile_names_fallbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "moodlemate.toml").write_text(
        '[profiles.work]\nfallbacks = ["gpt-4o", "openrouter:openai/gpt-4o"]\n'
    )
    assert GPT(profile="work").fallbacks == ("gpt-4o", "openrouter:openai/gpt-4o")
    assert GPT(profile="work", fallbacks=[]).fallbacks == ()
    (tmp_path / "moodlemate.toml").write_text('fallbacks = "gpt-4o"\n')
    with pytest.raises(ConfigurationError, match="fallbacks"):
        GPT()
    (tmp_path / "moodlemate.toml").write_text('fallbacks = ["gpt-4o", 4]\n')
    with pytest.raises(ConfigurationError, match="fallbacks"):
        GPT()


def test_the_cli_takes_repeatable_fallbacks(tmp_path: Path) -> None:
    with LoopbackServer() as server:
        # Not retried (x-should-retry: false), so the outage ends gpt-4o-mini at once.
        down = Fault.status(503, should_retry=False)
        server.enqueue(down, down)
        env = {"PATH": "/usr/bin:/bin", "MOODLEMATE_API_KEY": TEST_KEY, "HOME": str(tmp_path)}
        argv = ["chat", "--endpoint", server.url, "-m", "gpt-4o-mini", "--usage", "hi there"]
        fallbacks = ["--fallback", "gpt-4o", "--fallback", "o3-mini"]
        run = subprocess.run(
            [sys.executable, "-m", "moodlemate.ai.cli", *argv, *fallbacks],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout == "Echo: hi there\n"
        assert "served by o3-mini after gpt-4o-mini, gpt-4o failed" in run.stderr
        assert models(server) == ["gpt-4o-mini", "gpt-4o", "o3-mini"]
