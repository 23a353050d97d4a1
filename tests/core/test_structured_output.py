"""Typed answers over real HTTP: the format each model is asked in, validation, re-asking with
the problems, the summed cost, and what is never re-asked."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict

import pytest
from moodlemate.ai import (
    GPT,
    APITimeoutError,
    BudgetExceededError,
    RefusalError,
    ResponseLimits,
    RetryPolicy,
    SpendLog,
    StructuredOutputError,
    TruncatedAnswerError,
    TypedCompletion,
)
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from moodlemate.providers.openai.strict_schema import strict_violations
from support import FAST_RETRY, TEST_KEY


@dataclasses.dataclass
class Line:
    item: str
    total: Decimal


@dataclasses.dataclass
class Invoice:
    number: str
    lines: list[Line]
    paid: bool = False


class City(TypedDict):
    name: str
    population: int


VALID = '{"number": "A-7", "lines": [{"item": "tea", "total": 0.10}], "paid": true}'
INVOICE = Invoice("A-7", [Line("tea", Decimal("0.10"))], paid=True)


def _format(request: Any) -> dict[str, Any]:
    fmt: dict[str, Any] = request.body.get("response_format") or {}
    return fmt


def _system_text(request: Any) -> str:
    return "\n".join(
        m["content"] for m in request.body["messages"] if m["role"] in ("system", "developer")
    )


def test_a_dataclass_answer_in_strict_mode(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text=VALID))
    invoice = gpt.parse("gpt-4o-mini", "Extract the invoice.", "Tea, 10 cents, paid.", Invoice)
    assert invoice == INVOICE
    (request,) = server.chat_requests
    fmt = _format(request)
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Invoice"
    assert fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert strict_violations(schema) == []  # the server checked the same rules, and took it
    assert schema["required"] == ["number", "lines", "paid"]  # the default one too, nullable
    assert request.body["messages"][0] == {"role": "system", "content": "Extract the invoice."}


def test_each_kind_of_schema(server: LoopbackServer, gpt: GPT) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str
        age: int

    server.enqueue(
        Reply(text='{"name": "Ada", "age": 36}'),
        Reply(text='{"name": "Oslo", "population": 700000}'),
        Reply(text='{"value": [1, 2, 3]}'),
        Reply(text='{"answer": "yes"}'),
    )
    assert gpt.parse("gpt-4o-mini", "", "Who?", Person) == Person(name="Ada", age=36)
    assert gpt.parse("gpt-4o-mini", "", "Where?", City) == {"name": "Oslo", "population": 700000}
    assert gpt.parse("gpt-4o-mini", "", "Count", list[int]) == [1, 2, 3]
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    assert gpt.parse("gpt-4o-mini", "", "Well?", schema) == {"answer": "yes"}
    names = [_format(r)["json_schema"]["name"] for r in server.chat_requests]
    assert names == ["Person", "City", "list", "answer"]
    assert all(_format(r)["json_schema"]["strict"] for r in server.chat_requests)


def test_invalid_replies_are_re_asked_with_their_problems_and_every_attempt_is_billed(
    server: LoopbackServer, tmp_path: Path
) -> None:
    log = SpendLog(tmp_path / "spend.sqlite")
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, log=log)
    server.enqueue(
        Reply(text="{not json", prompt_tokens=100, completion_tokens=10),
        Reply(text=VALID.replace("0.10", '"ten"'), prompt_tokens=150, completion_tokens=20),
        Reply(text='{"number": "A-7"}', prompt_tokens=200, completion_tokens=5),
        Reply(text=VALID, prompt_tokens=250, completion_tokens=30),
    )
    result = gpt.complete("gpt-4o-mini", "Extract.", "Tea.", schema=Invoice, max_attempts=4)
    assert isinstance(result, TypedCompletion)
    assert result.parsed == INVOICE
    assert result.attempts == 4
    assert len(result.problems) == 3
    assert "JSON" in result.problems[0][0]
    assert result.problems[1][0].startswith("lines[0].total: ")
    assert result.problems[2][0].startswith("lines: ")
    # Each re-ask carries the bad reply and what was wrong with it.
    last = server.chat_requests[-1].body["messages"]
    assert [m["role"] for m in last] == ["system", "user"] + ["assistant", "user"] * 3
    assert last[2]["content"] == "{not json"
    assert "JSON" in last[3]["content"]
    assert "Reply again with only the corrected JSON" in last[3]["content"]
    # The cost is every attempt's, to the last decimal, and so is the ledger and the log.
    per_call = [c.cost for c in result.completions]
    assert all(cost is not None for cost in per_call)
    assert result.cost == sum(per_call, Decimal(0)) == gpt.ledger.cost
    assert gpt.ledger.calls == 4
    rows = log.calls()
    assert len(rows) == 4
    assert sum((r.cost for r in rows if r.cost is not None), Decimal(0)) == result.cost
    assert result.usage.prompt_tokens == 700


def test_a_model_that_never_complies_stops_at_max_attempts(
    server: LoopbackServer, gpt: GPT
) -> None:
    server.enqueue(*[Reply(text='{"number": 7}') for _ in range(5)])
    with pytest.raises(StructuredOutputError) as caught:
        gpt.parse("gpt-4o-mini", "", "x", Invoice, max_attempts=3)
    error = caught.value
    assert error.attempts == 3 == len(server.chat_requests) == len(error.completions)
    assert len(error.problems) == 3
    assert all(any(p.startswith("number: ") for p in ps) for ps in error.problems)
    assert "in 3 attempts" in str(error)
    assert gpt.ledger.calls == 3
    assert server.pending == 2


def test_a_refusal_is_not_re_asked(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(refusal="I can't help with that."), Reply(text=VALID))
    with pytest.raises(RefusalError, match="can't help"):
        gpt.parse("gpt-4o-mini", "", "x", Invoice)
    assert len(server.chat_requests) == 1


def test_a_truncated_answer_says_to_raise_the_limit(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text='{"number": "A-7", "li', finish_reason="length"), Reply(text=VALID))
    with pytest.raises(TruncatedAnswerError, match="raise max_tokens") as caught:
        gpt.parse("gpt-4o-mini", "", "x", Invoice, max_tokens=8)
    assert caught.value.partial == '{"number": "A-7", "li'
    assert len(server.chat_requests) == 1


def test_a_server_without_json_schema_falls_back_and_still_validates(
    server: LoopbackServer, gpt: GPT, caplog: pytest.LogCaptureFixture
) -> None:
    refusal = Fault.status(
        400,
        message="Invalid parameter: 'response_format' of type 'json_schema' is not supported "
        "with this model.",
    )
    server.enqueue(refusal, Reply(text='{"number": 1}'), Reply(text=VALID), Reply(text=VALID))
    # A model whose rules are unknown: the generic non-strict json_schema is tried first.
    model = "local-llama-fallback-test"
    with caplog.at_level("INFO", logger="moodlemate.ai"):
        result = gpt.complete(model, "Extract.", "x", schema=Invoice)
    assert result.parsed == INVOICE
    assert result.mode == "json_object"
    first, second, _third = server.chat_requests
    assert _format(first)["type"] == "json_schema"
    assert _format(first)["json_schema"]["strict"] is False
    assert _format(second) == {"type": "json_object"}
    assert "JSON schema" in _system_text(second)
    assert gpt.ledger.calls == 2  # the refused request was not billed
    assert result.attempts == 2  # the 400 is no reply: two replies, one re-ask
    assert sum("asking in json_object mode" in r.getMessage() for r in caplog.records) == 1
    # The next call on the same endpoint and model goes straight to what works.
    assert gpt.parse(model, "", "x", Invoice) == INVOICE
    assert _format(server.chat_requests[-1]) == {"type": "json_object"}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o-mini", "json_schema"),
        ("gpt-4o-2024-08-06", "json_schema"),
        ("gpt-4o-2024-05-13", "json_object"),
        ("gpt-3.5-turbo", "json_object"),
        ("o3-mini", "json_schema"),
        ("o1-mini", "instructions"),
    ],
)
def test_each_model_is_asked_in_the_mode_it_takes(
    server: LoopbackServer, gpt: GPT, model: str, expected: str
) -> None:
    server.enqueue(Reply(text=VALID))
    result = gpt.complete(model, "Extract.", "x", schema=Invoice)
    assert result.mode == expected
    (request,) = server.chat_requests
    fmt = _format(request)
    if expected == "instructions":
        assert fmt == {}
        assert "JSON schema" in request.body["messages"][0]["content"]  # folded for o1-mini
    elif expected == "json_object":
        assert fmt == {"type": "json_object"}
    else:
        assert fmt["json_schema"]["strict"] is True


def test_a_schema_strict_mode_cannot_carry_is_sent_non_strict(
    server: LoopbackServer, gpt: GPT
) -> None:
    server.enqueue(Reply(text='{"scores": {"a": 1}}'))
    answer = gpt.parse("gpt-4o-mini", "", "x", dict[str, dict[str, int]])
    assert answer == {"scores": {"a": 1}}
    (request,) = server.chat_requests
    assert _format(request)["json_schema"]["strict"] is False


def test_the_re_asks_share_one_deadline(server: LoopbackServer) -> None:
    policy = RetryPolicy(attempts=1, deadline=1.0, attempt_timeout=1.0)
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=policy)
    server.enqueue(*[Reply(text="{}", delay=0.35) for _ in range(10)])
    started = time.monotonic()
    with pytest.raises((APITimeoutError, StructuredOutputError)):
        gpt.parse("gpt-4o-mini", "", "x", Invoice, max_attempts=10)
    assert time.monotonic() - started < 2.0
    assert len(server.chat_requests) <= 4


def test_a_budget_stops_the_re_asks(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    server.enqueue(*[Reply(text="{}", prompt_tokens=1000, completion_tokens=10) for _ in range(5)])
    first_cost = Decimal("0.000156")  # 1000 x $0.15/M + 10 x $0.60/M
    gpt.budget = first_cost * 2
    with pytest.raises(BudgetExceededError):
        gpt.parse("gpt-4o-mini", "", "x", City, max_attempts=5, max_tokens=10)
    assert len(server.chat_requests) < 5
    assert gpt.ledger.cost <= gpt.budget


def test_async_typed_answers(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(text='{"number": 3}'), Reply(text=VALID))

    async def main() -> Invoice:
        return await gpt.aparse("gpt-4o-mini", "", "x", Invoice)

    assert asyncio.run(main()) == INVOICE
    assert len(server.chat_requests) == 2


@pytest.mark.parametrize("bad", [0, 11, True, "3"])
def test_max_attempts_is_checked_before_sending(server: LoopbackServer, gpt: GPT, bad: Any) -> None:
    from moodlemate.ai import ValidationError

    with pytest.raises(ValidationError, match="max_attempts"):
        gpt.parse("gpt-4o-mini", "", "x", Invoice, max_attempts=bad)
    assert server.chat_requests == []


def test_every_typed_answer_request_follows_openais_spec(server: LoopbackServer, gpt: GPT) -> None:
    from openapi_spec import SPEC
    from openapi_spec import check_schema as check

    if SPEC is None:
        pytest.skip("the OpenAPI spec is not present")
    refusal = Fault.status(400, message="'response_format' of type 'json_schema' is not supported")
    server.enqueue(
        Reply(text="{"),
        Reply(text=VALID),  # strict json_schema, then a re-ask
        refusal,
        Reply(text=VALID),  # non-strict json_schema refused, then json_object
        Reply(text=VALID),  # instructions only (o1-mini)
    )
    gpt.parse("gpt-4o-mini", "Extract.", "x", Invoice)
    gpt.parse("spec-check-local-model", "Extract.", "x", Invoice)
    gpt.parse("o1-mini", "Extract.", "x", Invoice)
    assert len(server.chat_requests) == 5
    for request in server.chat_requests:
        check("CreateChatCompletionRequest", request.body)


def test_the_test_server_answers_any_schema_unscripted(server: LoopbackServer, gpt: GPT) -> None:
    """``moodlemate-ai serve`` can be tried with typed answers: with nothing scripted it answers
    with the plainest value the schema admits."""
    invoice = gpt.parse("gpt-4o-mini", "Extract.", "x", Invoice)
    assert invoice == Invoice("example", [Line("example", Decimal(0))], paid=True)
    assert gpt.parse("gpt-4o-mini", "", "x", list[City]) == [{"name": "example", "population": 0}]
    assert gpt.parse("gpt-3.5-turbo", "", "x", dict[str, int]) == {}


def test_a_streamed_answer_shows_fields_as_they_complete(server: LoopbackServer, gpt: GPT) -> None:
    chunks = [
        '{"number": "A',
        '-7", "li',
        'nes": [{"item": "tea", "to',
        'tal": 0.10}]',
        ', "paid": true}',
    ]
    server.enqueue(Reply(chunks=chunks))
    with gpt.stream("gpt-4o-mini", "Extract.", "x", schema=Invoice) as stream:
        seen = list(stream)
    assert {"number": "A-7"} in seen
    assert {"number": "A-7", "lines": [{"item": "tea", "total": 0.1}]} in seen
    assert seen[-1] == INVOICE == stream.parsed
    assert not any(isinstance(s, dict) and s.get("number") == "A" for s in seen)
    assert stream.completion is not None
    (request,) = server.chat_requests
    assert request.body["stream"] is True
    assert _format(request)["json_schema"]["strict"] is True


def test_a_streamed_answer_that_does_not_validate_raises(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(Reply(chunks=['{"number": ', "7}"]))
    stream = gpt.stream("gpt-4o-mini", "", "x", schema=Invoice)
    with pytest.raises(StructuredOutputError, match="did not match") as caught:
        list(stream)
    assert caught.value.problems[0][0].startswith("number: ")
    with pytest.raises(RuntimeError, match="not ended"):
        _ = stream.parsed


def test_a_streamed_list_answer_unwraps_its_value(server: LoopbackServer, gpt: GPT) -> None:
    server.enqueue(
        Reply(
            chunks=[
                '{"value": [{"name": "Oslo", ',
                '"population": 1}, {"name"',
                ': "Rome", "population": 2}]}',
            ]
        )
    )
    seen = list(gpt.stream("gpt-4o-mini", "", "x", schema=list[City]))
    assert [{"name": "Oslo"}] in seen
    assert [{"name": "Oslo", "population": 1}, {}] in seen
    assert seen[-1] == [{"name": "Oslo", "population": 1}, {"name": "Rome", "population": 2}]
    assert seen[-2] != seen[-1]  # the checked answer is not repeated when the last partial was it


def test_an_async_streamed_answer_shows_fields_as_they_complete(
    server: LoopbackServer, gpt: GPT
) -> None:
    chunks = [
        '{"number": "A',
        '-7", "li',
        'nes": [{"item": "tea", "to',
        'tal": 0.10}]',
        ', "paid": true}',
    ]
    server.enqueue(Reply(chunks=chunks))

    async def main() -> tuple[list[Any], Any]:
        async with gpt.astream("gpt-4o-mini", "Extract.", "x", schema=Invoice) as stream:
            seen = [partial async for partial in stream]
        return seen, stream

    seen, stream = asyncio.run(main())
    assert {"number": "A-7"} in seen
    assert {"number": "A-7", "lines": [{"item": "tea", "total": 0.1}]} in seen
    assert seen[-1] == INVOICE == stream.parsed
    assert stream.completion is not None
    assert stream.completion.usage.total_tokens > 0
    (request,) = server.chat_requests
    assert request.body["stream"] is True
    assert _format(request)["json_schema"]["strict"] is True


def test_an_async_streamed_answer_that_does_not_validate_raises(
    server: LoopbackServer, gpt: GPT
) -> None:
    server.enqueue(Reply(chunks=['{"number": ', "7}"]))
    stream = gpt.astream("gpt-4o-mini", "", "x", schema=Invoice)

    async def main() -> None:
        async for _ in stream:
            pass

    with pytest.raises(StructuredOutputError, match="did not match") as caught:
        asyncio.run(main())
    assert caught.value.problems[0][0].startswith("number: ")
    with pytest.raises(RuntimeError, match="not ended"):
        _ = stream.parsed
    assert len(server.chat_requests) == 1  # a stream is one reply: not asked again


# -- hostile answers and odd schemas --------------------------------------------------------


class _Numbers(TypedDict):
    n: list[int]


def test_an_answer_streamed_a_character_at_a_time_is_not_re_read_per_delta(
    server: LoopbackServer, gpt: GPT
) -> None:
    """Each partial answer re-reads the text so far: per delta that was quadratic (a 10 KB
    answer in 2-character deltas took a minute); now the text is re-read as it grows by an
    eighth, a few dozen times."""
    body = '{"n": [' + ",".join("0" * 5000) + "]}"
    server.enqueue(Reply(text=body, chunks=[body[i : i + 2] for i in range(0, len(body), 2)]))
    with gpt.stream("gpt-4o-mini", "", "Numbers.", schema=_Numbers) as stream:
        partials = list(stream)
    assert 10 < len(partials) < 100
    assert stream.parsed == {"n": [0] * 5000}
    sizes = [len(p["n"]) for p in partials if "n" in p]
    assert sizes == sorted(sizes)


@dataclasses.dataclass
class _Folder:
    name: str
    children: list[_Folder]


class _TreeDict(TypedDict):
    name: str
    children: list[_TreeDict]


def test_recursive_schemas_are_sent_and_read(server: LoopbackServer, gpt: GPT) -> None:
    tree = '{"name": "a", "children": [{"name": "b", "children": []}]}'
    raw = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}},
        },
        "required": ["name", "children"],
        "additionalProperties": False,
    }
    server.enqueue(Reply(text=tree), Reply(text=tree), Reply(text=tree))
    assert gpt.parse("gpt-4o-mini", "", "Tree.", _Folder) == _Folder("a", [_Folder("b", [])])
    expected = {"name": "a", "children": [{"name": "b", "children": []}]}
    assert gpt.parse("gpt-4o-mini", "", "Tree.", _TreeDict) == expected
    assert gpt.parse("gpt-4o-mini", "", "Tree.", raw) == expected
    for request in server.chat_requests:
        assert strict_violations(_format(request)["json_schema"]["schema"]) == []


def test_a_validator_bug_is_raised_as_is_and_not_re_asked(server: LoopbackServer, gpt: GPT) -> None:
    """Pydantic turns ValueError and AssertionError in a validator into validation errors
    (re-asked); any other exception is a bug in the validator: raised as it is, its call
    billed, and no money spent asking again."""
    pydantic = pytest.importorskip("pydantic")

    class Reading(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        value: int

        @pydantic.field_validator("value")  # type: ignore[misc]
        @classmethod
        def positive(cls, value: int) -> int:
            return 100 // value

    server.enqueue(Reply(text='{"value": 0}'), Reply(text='{"value": 5}'))
    with pytest.raises(ZeroDivisionError):
        gpt.parse("gpt-4o-mini", "", "Read.", Reading, max_attempts=3)
    assert len(server.chat_requests) == 1
    assert gpt.ledger.calls == 1


def test_a_ten_megabyte_answer_is_read(server: LoopbackServer) -> None:
    limits = ResponseLimits(max_body_bytes=32 * 2**20)
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY, limits=limits)
    server.enqueue(Reply(text='{"number": "' + "7" * 10_000_000 + '", "lines": []}'))
    invoice = gpt.parse("gpt-4o-mini", "", "Extract.", Invoice)
    assert len(invoice.number) == 10_000_000


@pytest.mark.parametrize(
    ("last", "error_type"),
    [
        (Reply(refusal="I can't help with that.", prompt_tokens=300), RefusalError),
        (Reply(text='{"number": "A-7", "li', finish_reason="length"), TruncatedAnswerError),
    ],
)
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_refusal_or_cut_answer_after_invalid_ones_carries_every_attempt_and_their_cost(
    server: LoopbackServer, gpt: GPT, last: Reply, error_type: type[Exception], flavour: str
) -> None:
    server.enqueue(
        Reply(text="{not json", prompt_tokens=100, completion_tokens=10),
        Reply(text='{"number": 7}', prompt_tokens=150, completion_tokens=20),
        last,
    )

    def parse() -> Any:
        if flavour == "sync":
            return gpt.parse("gpt-4o-mini", "", "x", Invoice, max_attempts=5)
        return asyncio.run(gpt.aparse("gpt-4o-mini", "", "x", Invoice, max_attempts=5))

    with pytest.raises(error_type) as caught:
        parse()
    error = caught.value
    assert isinstance(error, RefusalError | TruncatedAnswerError)
    assert len(error.completions) == 3 == len(server.chat_requests)
    assert error.completions[-1] is error.completion
    per_call = [c.cost for c in error.completions]
    assert all(cost is not None and cost > 0 for cost in per_call)
    assert error.cost == sum(per_call, Decimal(0)) == gpt.ledger.cost


def test_a_refusal_on_the_first_attempt_carries_just_that_one(
    server: LoopbackServer, gpt: GPT
) -> None:
    server.enqueue(Reply(refusal="No.", prompt_tokens=50))
    with pytest.raises(RefusalError) as caught:
        gpt.parse("gpt-4o-mini", "", "x", Invoice)
    assert caught.value.completions == (caught.value.completion,)
    assert caught.value.cost == caught.value.completion.cost == gpt.ledger.cost
