"""``moodlemate-ai batch`` with typed answers, in a real subprocess against the test server:
a line's own ``schema`` or the batch-wide ``--schema``, every answer checked, re-asked with
what was wrong, and a line that never fits recorded as a failure that says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moodlemate.ai.testing import LoopbackServer, Reply
from support import TEST_KEY

COMMAND = [sys.executable, "-m", "moodlemate.ai.cli"]
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}


@pytest.fixture
def env(server: LoopbackServer, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MOODLEMATE_ENDPOINT": server.url,
        "MOODLEMATE_API_KEY": TEST_KEY,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "MOODLEMATE_MODEL": "gpt-4o-mini",
    }


def batch(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "batch", "in.jsonl", "-o", "out.jsonl", "-c", "1", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def test_each_answer_is_checked_against_its_lines_schema_or_the_batchs(
    server: LoopbackServer, env: dict[str, str], tmp_path: Path
) -> None:
    write_lines(
        tmp_path / "in.jsonl",
        [
            {"id": 1, "user": "Name a city.", "schema": CITY},
            {"id": 2, "user": "Invent a person."},
            {"id": 3, "user": "Invent another."},
        ],
    )
    server.enqueue(
        Reply(text='{"city": "Oslo", "population": 700000}'),
        Reply(text='{"name": "Ada", "age": "old"}', prompt_tokens=20, completion_tokens=10),
        Reply(text='{"name": "Ada", "age": 36}', prompt_tokens=20, completion_tokens=10),
        *[Reply(text='{"name": "Alan"}', prompt_tokens=20, completion_tokens=10)] * 3,
    )
    out = batch(env, tmp_path, "--schema", "name, age int")
    assert out.returncode == 1, out.stderr  # one line failed
    records = {
        r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().split("\n")[:-1])
    }
    assert records[1]["ok"] is True
    assert records[1]["answer"] == {"city": "Oslo", "population": 700000}
    assert records[1]["replies"] == 1
    assert records[2]["answer"] == {"name": "Ada", "age": 36}
    assert records[2]["replies"] == 2
    # gpt-4o-mini: $0.15 / M in, $0.60 / M out; both replies billed and summed
    assert Decimal(records[2]["cost"]) == 2 * (Decimal("0.000003") + Decimal("0.000006"))
    assert records[2]["usage"]["total_tokens"] == 60
    failed = records[3]
    assert failed["ok"] is False
    assert failed["error"]["type"] == "StructuredOutputError"
    assert "age" in failed["error"]["message"]
    assert failed["error"]["problems"] == [["age: Field required"]] * 3
    assert Decimal(failed["cost"]) == 3 * (Decimal("0.000003") + Decimal("0.000006"))
    sent = [r.body["response_format"]["json_schema"]["schema"] for r in server.chat_requests]
    assert len(sent) == 6
    assert set(sent[0]["properties"]) == {"city", "population"}  # the line's own
    assert set(sent[1]["properties"]) == {"name", "age"}  # the batch's


def test_bad_schemas_are_refused_before_anything_is_sent(
    server: LoopbackServer, env: dict[str, str], tmp_path: Path
) -> None:
    write_lines(
        tmp_path / "in.jsonl",
        [
            {"id": 1, "user": "a", "schema": "name, age int"},
            {"id": 2, "user": "b", "schema": {"type": "no-such-type"}},
            {"id": 3, "user": "c", "schema": CITY},
        ],
    )
    out = batch(env, tmp_path)
    assert out.returncode == 2
    assert "in.jsonl:1: 'schema' must be a JSON schema object, not a string" in out.stderr
    assert "in.jsonl:2: 'schema' is not a valid JSON schema" in out.stderr
    assert "in.jsonl:3" not in out.stderr
    write_lines(tmp_path / "in.jsonl", [{"id": 1, "user": "a"}])
    assert batch(env, tmp_path, "--schema", "name, age integer").returncode == 2
    assert server.chat_requests == []
    assert not (tmp_path / "out.jsonl").exists()
