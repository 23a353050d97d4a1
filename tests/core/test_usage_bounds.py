"""A server's absurd usage or cost is treated as unknown (with one warning), so it can
neither poison the ledger nor trip a budget for good."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from decimal import Decimal

import pytest
from moodlemate.ai import GPT, ChatRequest, Completion, Connection, Provider, Usage
from moodlemate.ai import _plausible as plausible
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.testing import Fault, LoopbackServer, Reply


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    plausible._warned.clear()
    yield
    plausible._warned.clear()


def _body(usage: str) -> Fault:
    """A 200 whose usage object is written as raw JSON text (numbers json.dumps cannot make)."""
    head = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
    }
    raw = json.dumps(head)[:-1] + f', "usage": {usage}}}'
    return Fault(kind="status", http_status=200, body=raw.encode())


ABSURD_USAGE = [
    pytest.param(
        '{"prompt_tokens": 1000000000000000000000000000000, "completion_tokens": 5}',
        id="prompt-1e30",
    ),
    pytest.param('{"prompt_tokens": 10, "completion_tokens": 1e30}', id="completion-float-1e30"),
    pytest.param(
        '{"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details":'
        ' {"reasoning_tokens": 100000001}}',
        id="reasoning-over-bound",
    ),
    pytest.param(
        '{"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details":'
        ' {"cached_tokens": "999999999999"}}',
        id="cached-as-string",
    ),
]


@pytest.mark.parametrize("usage", ABSURD_USAGE)
def test_absurd_token_counts_count_as_what_the_request_could_produce(
    gpt: GPT, server: LoopbackServer, usage: str, caplog: pytest.LogCaptureFixture
) -> None:
    gpt.budget = "5"
    server.enqueue(_body(usage), _body(usage))
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        first = gpt.complete("gpt-4o-mini", "", "hi")
        second = gpt.complete("gpt-4o-mini", "", "again")
    info = gpt.provider.model_info("gpt-4o-mini")
    assert info is not None
    assert info.max_output_tokens is not None
    for result in (first, second):
        assert result.text == "hi"
        # "hi" or "again" in one user turn: at most 3 + 3 + 4 x (4 + 5) tokens by size
        assert result.usage.prompt_tokens <= 3 + 3 + 4 * 9 + plausible.PROMPT_SLACK
        assert result.usage.completion_tokens <= info.max_output_tokens + 16
        assert result.usage.cached_tokens <= result.usage.prompt_tokens
        assert result.usage.reasoning_tokens <= result.usage.completion_tokens
        assert result.cost is not None
        assert result.cost < Decimal("0.02")  # the request's worst case, not $8,999
    assert gpt.ledger.cost == first.cost + second.cost  # type: ignore[operator]
    assert gpt.chat_completion("gpt-4o-mini", "", "still sent") == "Echo: still sent"
    implausible = [r for r in caplog.records if "implausible" in r.getMessage()]
    assert len(implausible) == 1  # warned once, not per call


@pytest.mark.parametrize(
    "cost", ['"1e999999"', "1e999999", '"5000"', "1000.01", '"1E+30"'], ids=str
)
def test_an_absurd_reported_cost_is_unknown_and_the_price_table_is_used(
    gpt: GPT, server: LoopbackServer, cost: str, caplog: pytest.LogCaptureFixture
) -> None:
    gpt.budget = "1"
    usage = f'{{"prompt_tokens": 1000, "completion_tokens": 1000, "cost": {cost}}}'
    server.enqueue(_body(usage))
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        result = gpt.complete("gpt-4o-mini", "", "hi")
    table = gpt.provider.price("gpt-4o-mini")
    assert table is not None
    assert result.cost == table.cost(result.usage)  # $0.00075, not the server's claim
    assert result.cost is not None
    assert result.cost < Decimal("0.01")
    assert gpt.ledger.cost == result.cost
    assert gpt.chat_completion("gpt-4o-mini", "", "still sent") == "Echo: still sent"


def test_plausible_usage_and_cost_pass_unchanged(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Reply(text="hi", prompt_tokens=30, completion_tokens=7, cost=0.0000123))
    result = gpt.complete("gpt-4o-mini", "", "hi", max_tokens=10)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (30, 7)
    assert result.cost == Decimal("0.0000123")
    assert result.priced_model is None  # the server's own figure stands


def test_a_streamed_absurd_usage_is_bounded_too(gpt: GPT, server: LoopbackServer) -> None:
    server.enqueue(Reply(text="hi there", prompt_tokens=10**30))
    with gpt.stream("gpt-4o-mini", "", "hi") as stream:
        assert "".join(stream) == "hi there"
    assert stream.completion is not None
    assert stream.completion.usage.prompt_tokens <= 2 * 20 + plausible.PROMPT_SLACK
    assert stream.completion.cost is not None
    assert stream.completion.cost < Decimal("0.0001")
    assert gpt.ledger.cost == stream.completion.cost


class _TrustingPlugin(Provider):
    """A sloppy third-party provider: it talks HTTP itself and passes the server's usage and
    cost through unchecked, so only the facade's bounds stand between them and the ledger."""

    name = "trusting"
    default_endpoint = "http://127.0.0.1:9/v1"
    requires_key = False

    def execute(self, connection: Connection, request: ChatRequest) -> Completion:
        body = json.dumps(
            {"model": request.model, "messages": [{"role": "user", "content": "hi"}]}
        ).encode()
        post = urllib.request.Request(
            f"{connection.endpoint}/chat/completions",
            data=body,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=connection.timeout) as response:
            data = json.loads(response.read())
        usage = data["usage"]
        return Completion(
            text=data["choices"][0]["message"]["content"],
            model=data["model"],
            provider=self.name,
            finish_reason="stop",
            usage=Usage(usage["prompt_tokens"], usage["completion_tokens"]),
            reported_cost=Decimal(str(usage["cost"])) if "cost" in usage else None,
        )

    def count_tokens(self, text: str, model: str) -> int:
        return len(text.split())


@pytest.mark.parametrize(
    "reply",
    [
        Reply(text="hi", prompt_tokens=-1_000_000, completion_tokens=5, cost=0.001),
        Reply(text="hi", prompt_tokens=10, completion_tokens=5, cost=-50.0),
    ],
    ids=["negative-tokens", "negative-cost"],
)
def test_negative_figures_from_a_plugin_cannot_lift_the_budget(
    server: LoopbackServer, reply: Reply
) -> None:
    plugins = PluginRegistry()
    plugins.register_provider(_TrustingPlugin())
    gpt = GPT("trusting", endpoint=server.url, plugins=plugins, budget="1")
    server.enqueue(reply)
    result = gpt.complete("local-model", "", "hi")
    assert result.cost is None or result.cost >= 0
    assert gpt.ledger.cost >= 0
    assert gpt.ledger.usage.prompt_tokens >= 0
