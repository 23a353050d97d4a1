"""``moodlemate-ai chat --schema`` / ``--schema-multi`` in a real subprocess against the test
server: the schema as sent, the checked answer printed as JSON, re-asks billed and summed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from moodlemate.ai.testing import LoopbackServer, Reply
from support import TEST_KEY

COMMAND = [sys.executable, "-m", "moodlemate.ai.cli"]


@pytest.fixture
def env(server: LoopbackServer, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MOODLEMATE_ENDPOINT": server.url,
        "MOODLEMATE_API_KEY": TEST_KEY,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "MOODLEMATE_MODEL": "gpt-4o-mini",
    }


def chat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "chat", *args], capture_output=True, text=True, env=env, timeout=60
    )


def sent_schema(server: LoopbackServer) -> dict[str, object]:
    response_format = server.chat_requests[-1].body["response_format"]
    assert response_format["type"] == "json_schema"
    schema: dict[str, object] = response_format["json_schema"]["schema"]
    return schema


def test_the_concise_syntax_is_sent_as_a_strict_schema_and_the_answer_printed_as_json(
    server: LoopbackServer, env: dict[str, str]
) -> None:
    server.enqueue(Reply(text='{"name": "Ada", "age": 36, "bio": "Wrote the first program."}'))
    out = chat(env, "--schema", "name, age int, bio: a short bio", "Invent a person.")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"name": "Ada", "age": 36, "bio": "Wrote the first program."}
    assert out.stdout.count("\n") == 1  # one JSON value, one line
    schema = sent_schema(server)
    assert schema["properties"] == {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "bio": {"type": "string", "description": "a short bio"},
    }
    assert schema["required"] == ["name", "age", "bio"]


def test_a_schema_file_and_inline_json(
    server: LoopbackServer, env: dict[str, str], tmp_path: Path
) -> None:
    city = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    path = tmp_path / "city.schema.json"
    path.write_text(json.dumps(city))
    out = chat(env, "--schema", str(path), "Name a city.")  # unscripted: the plainest answer
    assert (out.returncode, json.loads(out.stdout)) == (0, {"city": "example", "population": 0})
    assert sent_schema(server)["additionalProperties"] is False  # made strict before sending
    out = chat(env, "--schema", json.dumps(city), "Name a city.")
    assert (out.returncode, json.loads(out.stdout)) == (0, {"city": "example", "population": 0})


def test_schema_multi_prints_the_list(server: LoopbackServer, env: dict[str, str]) -> None:
    people = [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]
    server.enqueue(Reply(text=json.dumps({"items": people})))
    out = chat(env, "--schema-multi", "name, age int", "Two people.")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == people
    items = sent_schema(server)["properties"]
    assert isinstance(items, dict)
    assert items["items"]["type"] == "array"


def test_an_invalid_answer_is_re_asked_and_usage_sums_every_reply(
    server: LoopbackServer, env: dict[str, str]
) -> None:
    server.enqueue(
        Reply(text='{"name": "Ada", "age": "old"}', prompt_tokens=20, completion_tokens=10),
        Reply(text='{"name": "Ada", "age": 36}', prompt_tokens=20, completion_tokens=10),
    )
    out = chat(env, "--json", "--usage", "--schema", "name, age int", "Who?")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["answer"] == {"name": "Ada", "age": 36}
    assert record["replies"] == 2
    assert len(server.chat_requests) == 2
    assert "age" in server.chat_requests[-1].body["messages"][-1]["content"]  # the problem fed back
    # gpt-4o-mini: $0.15 / M input, $0.60 / M output; two replies of 20 + 10 tokens
    assert Decimal(record["cost"]) == 2 * (Decimal("0.000003") + Decimal("0.000006"))
    assert "2 replies" in out.stderr


def test_a_model_that_never_complies_exits_1_saying_why(
    server: LoopbackServer, env: dict[str, str]
) -> None:
    server.enqueue(*[Reply(text='{"name": 7}') for _ in range(3)])
    out = chat(env, "--schema", "name", "Who?")
    assert out.returncode == 1
    assert out.stdout == ""
    assert "StructuredOutputError" in out.stderr
    assert "name" in out.stderr
    assert len(server.chat_requests) == 3


def test_a_bad_schema_is_a_usage_error_before_sending(
    server: LoopbackServer, env: dict[str, str], tmp_path: Path
) -> None:
    for spec in ("name, age integer", "{not json", "[1, 2]", str(tmp_path / "missing.json")):
        out = chat(env, "--schema", spec, "Who?")
        assert out.returncode == 2, (spec, out.stderr)
        assert out.stderr.count("\n") <= 2
        assert "--schema" in out.stderr + spec
    out = chat(env, "--schema", "name", "--schema-multi", "name", "Who?")
    assert out.returncode == 2
    assert server.chat_requests == []


def test_the_answer_stays_in_the_conversation(server: LoopbackServer, env: dict[str, str]) -> None:
    server.enqueue(Reply(text='{"city": "Oslo"}'), Reply(text="Norway."))
    assert chat(env, "--schema", "city", "Name a city.").returncode == 0
    out = chat(env, "-c", "Which country?")
    assert (out.returncode, out.stdout) == (0, "Norway.\n")
    history = [m["content"] for m in server.chat_requests[-1].body["messages"]]
    assert history[-2:] == ['{"city": "Oslo"}', "Which country?"]
