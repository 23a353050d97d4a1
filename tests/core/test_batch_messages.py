"""Batch lines carry messages (parts, tool turns) and options, locally and through the
remote Batch API, checked on reading like every other field: a bad line sends nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from moodlemate.ai import GPT
from moodlemate.ai.batch import BatchInputError, parse_items, run_batch
from moodlemate.ai.batch.remote import run_remote_batch
from moodlemate.ai.testing import LoopbackServer
from support import png_bytes

PNG_URL = "data:image/png;base64," + base64.b64encode(png_bytes(2, 2)).decode()
KEY = "sk-test-remote-0123456789abcdef"
LINES = [
    {
        "id": "img",
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is it?"},
                    {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}},
                ],
            }
        ],
        "options": {"seed": 7, "stop": ["END"]},
    },
    {
        "id": "tool",
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "12 C"},
        ],
        "user": "So?",
    },
]


def _expected_bodies() -> dict[str, dict[str, object]]:
    return {
        "img": {
            "messages": LINES[0]["messages"],
            "seed": 7,
            "stop": ["END"],
        },
        "tool": {
            "messages": [
                {"role": "system", "content": "Be brief."},
                *LINES[1]["messages"],  # type: ignore[misc]
                {"role": "user", "content": "So?"},
            ]
        },
    }


def _matches(body: dict[str, object], expected: dict[str, object]) -> bool:
    return all(body.get(k) == v for k, v in expected.items())


def test_local_batch_lines_with_messages_and_options(
    gpt: GPT, server: LoopbackServer, tmp_path: Path
) -> None:
    items = parse_items([json.dumps(line) for line in LINES], default_model="gpt-4o-mini")
    summary = run_batch(gpt, items, tmp_path / "out.jsonl", concurrency=1)
    assert summary.succeeded == 2
    bodies = [r.body for r in server.chat_requests]
    expected = _expected_bodies()
    assert _matches(bodies[0], expected["img"])
    assert _matches(bodies[1], expected["tool"])


def test_remote_batch_lines_with_messages_and_options(tmp_path: Path) -> None:
    items = parse_items([json.dumps(line) for line in LINES], default_model="gpt-4o")
    with LoopbackServer(api_key=KEY) as server:
        server.batches.speed = 100_000.0
        summary = run_remote_batch(
            GPT("openai", endpoint=server.url, api_key=KEY),
            items,
            tmp_path / "o.jsonl",
            poll_interval=0.01,
        )
        uploaded = [
            json.loads(line)["body"]
            for f in server.batches.files.values()
            if f.purpose == "batch"
            for line in f.content.splitlines()
        ]
    assert summary.succeeded == 2
    expected = _expected_bodies()
    assert sorted(b["messages"][0]["role"] for b in uploaded) == ["system", "user"]
    for body in uploaded:
        key = "tool" if body["messages"][0]["role"] == "system" else "img"
        assert _matches(body, expected[key])


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"id": 1}, "missing 'user'"),
        ({"id": 1, "messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"id": 1, "user": "x", "options": {"top_p": 9}}, "top_p"),
        ({"id": 1, "user": "x", "options": {"colour": 1}}, "unknown option"),
        (
            {
                "id": 1,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
                    }
                ],
            },
            "not allowed",
        ),
    ],
)
def test_bad_lines_are_reported_before_anything_is_sent(
    line: dict[str, object], problem: str
) -> None:
    with pytest.raises(BatchInputError, match=problem):
        parse_items(
            [json.dumps({"id": 0, "user": "fine"}), json.dumps(line)], default_model="gpt-4o"
        )
