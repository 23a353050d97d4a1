"""OpenAI's Responses API over real HTTP: Responses-only models through the seed calls, streams,
async, tool runs and typed answers; usage and cost from its usage object; every failure event
typed; reasoning kept apart from the answer, on both APIs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from decimal import Decimal
from typing import Any

import pytest
from moodlemate.ai import (
    GPT,
    ChatRequest,
    EmptyReplyError,
    Message,
    RefusalError,
    RetryPolicy,
    ServerError,
)
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

O3_PRO_IN, O3_PRO_OUT = Decimal("20.00"), Decimal("80.00")  # USD per 1M tokens


def _sent(server: LoopbackServer) -> dict[str, Any]:
    (request,) = server.response_requests
    body: dict[str, Any] = request.body
    return body


def test_a_responses_only_model_works_through_the_seed_call(
    server: LoopbackServer, gpt: GPT
) -> None:
    server.enqueue(
        Reply(
            text="Hello from o3-pro",
            prompt_tokens=20,
            completion_tokens=500,
            reasoning_tokens=300,
            cached_tokens=10,
        )
    )
    # A system message long enough that 1000 prompt tokens are plausible (usage beyond what
    # the request could hold is bounded, see moodlemate.ai._plausible).
    system = "Be brief. " * 200
    text = gpt.chat_completion("o3-pro", system, "Hi", temperature=0.7, max_tokens=None)
    assert text == "Hello from o3-pro"
    assert server.chat_requests == []
    body = _sent(server)
    assert body["input"] == [
        {"role": "system", "content": system},
        {"role": "user", "content": "Hi"},
    ]
    assert body["store"] is False  # stateless unless asked
    assert "temperature" not in body  # a reasoning model takes only the default
    completion = gpt.last_result
    assert completion is not None
    assert completion.usage.prompt_tokens == 20
    assert completion.usage.cached_tokens == 10
    assert completion.usage.completion_tokens == 500
    assert completion.usage.reasoning_tokens == 300
    # o3-pro lists no cached-input price: cached tokens bill at the input rate.
    expected = (20 * O3_PRO_IN + 500 * O3_PRO_OUT) / 1_000_000
    assert completion.cost == expected
    assert completion.response_id is not None
    assert completion.response_id.startswith("resp_")


def test_streaming_a_responses_only_model(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(chunks=["Rome ", "is ", "warmer."], reasoning="Compare the two cities."))
    with gpt.stream("o1-pro", "", "Warmer?", options={"reasoning_summary": "auto"}) as stream:
        deltas = list(stream)
    assert "".join(deltas) == "Rome is warmer."
    completion = stream.completion
    assert completion is not None
    assert completion.reasoning == "Compare the two cities."
    assert "Compare" not in completion.text
    assert _sent(server)["stream"] is True


def test_async_calls_on_the_responses_api(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="async answer"), Reply(chunks=["a", "b"]))

    async def main() -> tuple[str, str]:
        first = await gpt.achat_completion("o3-pro", "", "x")
        second = "".join([d async for d in gpt.astream("o3-pro", "", "y")])
        return first, second

    assert asyncio.run(main()) == ("async answer", "ab")
    assert len(server.response_requests) == 2


def test_any_model_can_opt_in(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="via responses"))
    request = ChatRequest("gpt-4o-mini", (Message("user", "Hi"),), max_tokens=5, api="responses")
    assert gpt.send(request).text == "via responses"
    assert _sent(server)["max_output_tokens"] == 16  # the API's minimum, noted once


def test_a_tool_run_on_the_responses_api(server: LoopbackServer, gpt: GPT) -> None:
    def weather(city: str) -> str:
        """Current temperature in a city."""
        return {"Oslo": "4C"}.get(city, "?")

    server.enqueue(
        Reply(
            tool_calls=[
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "weather", "arguments": json.dumps({"city": "Oslo"})},
                }
            ],
            finish_reason="tool_calls",
        ),
        Reply(text="It is 4C."),
    )
    run = gpt.run("o3-pro", "Oslo?", tools=[weather])
    assert run.text == "It is 4C."
    first, second = (r.body for r in server.response_requests)
    (tool,) = first["tools"]
    assert tool["type"] == "function"
    assert tool["name"] == "weather"  # flat, as the Responses API takes tools
    assert tool["strict"] is True
    items = second["input"]
    assert {
        "type": "function_call",
        "call_id": "call_9",
        "name": "weather",
        "arguments": json.dumps({"city": "Oslo"}),
    } in items
    assert {"type": "function_call_output", "call_id": "call_9", "output": "4C"} in items


def test_a_typed_answer_on_the_responses_api(server: LoopbackServer, gpt: GPT) -> None:
    @dataclasses.dataclass
    class City:
        name: str
        population: int

    server.enqueue(Reply(text='{"name": "Oslo", "population": 700000}'))
    assert gpt.parse("o3-pro", "", "A city", City) == City("Oslo", 700000)
    fmt = _sent(server)["text"]["format"]
    assert fmt["type"] == "json_schema"
    assert fmt["name"] == "City"
    assert fmt["strict"] is True


def test_a_reply_cut_by_max_output_tokens_reads_as_length(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="", finish_reason="length", reasoning_tokens=16))
    with pytest.raises(EmptyReplyError, match="token limit"):
        gpt.chat_completion("o3-pro", "", "x", max_tokens=16)


def test_a_refusal_on_the_responses_api(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(refusal="I can't help with that."))
    with pytest.raises(RefusalError, match="can't help"):
        gpt.chat_completion("o3-pro", "", "x")


def test_a_failed_response_is_a_typed_error(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=RetryPolicy(attempts=1))
    server.enqueue(Fault.response_failed("server_error", "The model had a problem."))
    with pytest.raises(ServerError, match="The model had a problem"):
        gpt.chat_completion("o3-pro", "", "x")


def test_a_failed_streamed_response_is_a_typed_error(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=RetryPolicy(attempts=1))
    server.enqueue(Fault.response_failed("server_error", "The model had a problem."))
    stream = gpt.stream("o3-pro", "", "x")
    with pytest.raises(ServerError, match="The model had a problem"):
        list(stream)


def test_an_error_event_in_a_stream_is_a_typed_error(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=RetryPolicy(attempts=1))
    server.enqueue(Fault.error_in_200(code="server_error", message="upstream broke"))
    with pytest.raises(ServerError, match="upstream broke"):
        "".join(gpt.stream("o3-pro", "", "x"))


def test_a_failed_response_is_retried_like_a_server_error(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Fault.response_failed("server_error", "flaky"), Reply(text="recovered"))
    assert gpt.chat_completion("o3-pro", "", "x") == "recovered"
    assert len(server.response_requests) == 2


def test_an_http_error_is_retried_as_on_chat(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Fault.status(503), Reply(text="second time"))
    assert gpt.chat_completion("o3-pro", "", "x") == "second time"
    assert len(server.response_requests) == 2


def test_options_move_to_their_responses_names(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text="ok"))
    gpt.complete(
        "o3-pro",
        "",
        "x",
        options={"reasoning_effort": "high", "metadata": {"run": "7"}, "user": "u1"},
        extra={"previous_response_id": "resp_abc"},
    )
    body = _sent(server)
    assert body["reasoning"] == {"effort": "high"}
    assert body["metadata"] == {"run": "7"}
    assert body["previous_response_id"] == "resp_abc"
    assert "reasoning_effort" not in body


def test_chat_only_options_are_refused_before_sending(server: LoopbackServer, gpt: GPT) -> None:
    from moodlemate.ai.errors import MoodlemateError

    with pytest.raises(MoodlemateError, match="no 'seed'"):
        gpt.complete("o3-pro", "", "x", options={"seed": 7})
    assert server.requests == []


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_chat_reasoning_content_is_kept_apart(
    server: LoopbackServer, gpt: GPT, stream: bool
) -> None:
    """vLLM and llama.cpp send reasoning as reasoning_content on chat completions."""
    server.enqueue(Reply(text="42", reasoning="six times seven"))
    if stream:
        with gpt.stream("some-local-model", "", "x") as deltas:
            text = "".join(deltas)
        completion = deltas.completion
    else:
        completion = gpt.complete("some-local-model", "", "x")
        text = completion.text
    assert text == "42"
    assert completion is not None
    assert completion.reasoning == "six times seven"


def test_every_responses_request_and_reply_follows_openais_spec(
    server: LoopbackServer, gpt: GPT
) -> None:
    from openapi_spec import SPEC
    from openapi_spec import check_schema as check

    if SPEC is None:
        pytest.skip("the OpenAPI spec is not present")

    def weather(city: str) -> str:
        """Weather."""
        return "4C"

    server.enqueue(
        Reply(text="plain", reasoning="thinking"),
        Reply(
            tool_calls=[
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
            finish_reason="tool_calls",
        ),
        Reply(text="4C"),
        Reply(text='{"value": [1]}'),
    )
    gpt.complete("o3-pro", "Be brief.", "x", options={"reasoning_effort": "low"})
    gpt.run("o3-pro", "Oslo?", tools=[weather], tool_choice="auto")
    gpt.parse("o3-pro", "", "x", list[int])
    for request in server.response_requests:
        check("CreateResponse", request.body)
    import urllib.request

    raw = urllib.request.Request(
        f"{server.url}/responses",
        data=json.dumps({"model": "o3-pro", "input": "hi"}).encode(),
        headers={"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"},
    )
    server.enqueue(Reply(text="checked", reasoning="why"))
    with urllib.request.urlopen(raw, timeout=5) as response:
        check("Response", json.loads(response.read()))


def test_the_budget_counts_a_responses_only_model(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, budget="0.01")
    from moodlemate.ai import BudgetExceededError

    with pytest.raises(BudgetExceededError):
        gpt.chat_completion("o1-pro", "", "x", max_tokens=1000)  # up to $0.60 of output
    assert server.requests == []


def test_a_reasoning_budget_holds_against_64_concurrent_callers(server: LoopbackServer) -> None:
    """No max_tokens on a reasoning model: the reservation covers its reasoning allowance
    (25,000 tokens at the default effort), so replies that reason for 20,000 tokens cannot
    overrun a budget sized for 10 of them."""
    import concurrent.futures

    from moodlemate.ai import BudgetExceededError

    per_call = (Decimal(30) * Decimal("1.10") + Decimal(20_000) * Decimal("4.40")) / 1_000_000
    budget = 10 * per_call
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, budget=budget)
    server.responder = lambda body: Reply(
        text="ok", prompt_tokens=30, completion_tokens=20_000, reasoning_tokens=19_990
    )

    def call(_: int) -> str:
        try:
            return gpt.chat_completion("o3-mini", "", "Think hard.")
        except BudgetExceededError:
            return "refused"

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        results = list(pool.map(call, range(64)))
    assert gpt.ledger.cost <= budget
    assert results.count("ok") == len(server.chat_requests) >= 5
    assert results.count("refused") >= 50


def _raw_post(server: LoopbackServer, path: str, body: dict[str, Any]) -> bytes:
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        raw: bytes = response.read()
    return raw


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_test_server_sends_a_summary_only_when_asked(
    server: LoopbackServer, stream: bool
) -> None:
    """As OpenAI answers: a reasoning model's output opens with its reasoning item, whose
    summary is empty unless the request sets ``reasoning.summary``."""
    base = {"model": "o3", "input": "hi", "stream": stream}
    for reasoning, summary in [(None, []), ({"effort": "low"}, []), ({"summary": "auto"}, ["why"])]:
        server.enqueue(Reply(text="ok", reasoning="why"))
        raw = _raw_post(server, "responses", {**base, "reasoning": reasoning})
        if stream:
            lines = raw.decode().splitlines()
            events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
            kind = "response.reasoning_summary_text.delta"
            deltas = [e["delta"] for e in events if e["type"] == kind]
            assert deltas == summary
            final = events[-1]["response"]
        else:
            final = json.loads(raw)
        first = final["output"][0]
        assert first["type"] == "reasoning"
        assert [part["text"] for part in first["summary"]] == summary


def test_no_reasoning_fields_unless_a_reply_has_reasoning(server: LoopbackServer) -> None:
    server.enqueue(Reply(text="ok"), Reply(text="ok"))
    messages = [{"role": "user", "content": "hi"}]
    chat = json.loads(_raw_post(server, "chat/completions", {"model": "m", "messages": messages}))
    assert set(chat["choices"][0]["message"]) == {"role", "content", "refusal", "annotations"}
    streamed = _raw_post(
        server, "chat/completions", {"model": "m", "messages": messages, "stream": True}
    ).decode()
    assert "reasoning" not in streamed
    server.enqueue(Reply(text="ok"))
    answer = json.loads(_raw_post(server, "responses", {"model": "o3", "input": "hi"}))
    assert [item["type"] for item in answer["output"]] == ["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_without_a_summary_request_no_reasoning_text_comes_back(
    server: LoopbackServer, gpt: GPT, stream: bool
) -> None:
    server.enqueue(Reply(text="42", reasoning="six sevens", reasoning_tokens=5))
    if stream:
        with gpt.stream("o3", "", "x", options={"api": "responses"}) as deltas:
            assert "".join(deltas) == "42"
        completion = deltas.completion
    else:
        completion = gpt.complete("o3", "", "x", options={"api": "responses"})
    assert completion is not None
    assert (completion.text, completion.reasoning) == ("42", None)
    assert completion.usage.reasoning_tokens == 5
