"""``chat -T NAME`` and ``chat --functions FILE.py`` in a real subprocess against the test server:
the tools offered, the approval asked on a terminal (and refused without one unless --yes), a
plugin's ``register_tools`` hook, and the run's turns in ``logs``."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import fake_dists
import pytest
from moodlemate.ai.testing import LoopbackServer, Reply
from support import TEST_KEY
from test_cli import run_cli
from test_cli_habits import Terminal

FUNCTIONS = """
    from os.path import join  # imported: not a tool

    CALLS = []


    def weather(city: str) -> str:
        \"\"\"Current temperature in a city.\"\"\"
        return {"Oslo": "4C", "Rome": "19C"}.get(city, "10C") + _suffix()


    def _suffix() -> str:  # private: not a tool
        return "!"
"""


@pytest.fixture
def endpoint(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> LoopbackServer:
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", server.url)
    monkeypatch.setenv("MOODLEMATE_API_KEY", TEST_KEY)
    return server


@pytest.fixture
def functions(tmp_path: Path) -> Path:
    path = tmp_path / "my_tools.py"
    path.write_text(textwrap.dedent(FUNCTIONS))
    return path


def _asks(call_id: str, name: str, **arguments: Any) -> Reply:
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return Reply(tool_calls=[call], finish_reason="tool_calls")


def _tool_results(server: LoopbackServer) -> list[str]:
    return [m["content"] for m in server.chat_requests[-1].body["messages"] if m["role"] == "tool"]


def test_functions_from_a_file_run_with_yes_and_each_turn_is_logged(
    endpoint: LoopbackServer, functions: Path
) -> None:
    endpoint.enqueue(
        _asks("c1", "weather", city="Oslo"),
        _asks("c2", "weather", city="Rome"),
        Reply(text="Rome is warmer."),
    )
    out = run_cli("chat", "--functions", str(functions), "--yes", "Warmer in Oslo or Rome?")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Rome is warmer.\n"
    first = endpoint.chat_requests[0].body
    assert [t["function"]["name"] for t in first["tools"]] == ["weather"]  # not join, _suffix
    assert _tool_results(endpoint) == ["4C!", "19C!"]
    rows = json.loads(run_cli("logs", "--json").stdout)
    run_id = rows[0]["run_id"]
    assert run_id is not None
    assert [(r["run_id"], r["turn"]) for r in rows] == [(run_id, 3), (run_id, 2), (run_id, 1)]
    table = run_cli("logs").stdout
    assert f"{run_id}/3" in table


def test_piped_without_yes_is_refused_before_anything_is_sent(
    endpoint: LoopbackServer, functions: Path
) -> None:
    out = run_cli("chat", "--functions", str(functions), stdin="Weather in Oslo?")
    assert out.returncode == 2
    assert "--yes" in out.stderr
    assert endpoint.chat_requests == []


def test_on_a_terminal_each_call_is_asked_and_a_no_is_told_to_the_model(
    endpoint: LoopbackServer, functions: Path
) -> None:
    endpoint.enqueue(
        _asks("c1", "weather", city="Oslo"),
        _asks("c2", "weather", city="Rome"),
        Reply(text="Only Oslo was allowed."),
    )
    term = Terminal("chat", "--functions", str(functions), "Warmer in Oslo or Rome?")
    term.expect('Run tool weather({"city": "Oslo"})? [y/N] ')
    term.write("y\n")
    term.expect('Run tool weather({"city": "Rome"})? [y/N] ')
    term.write("n\n")
    term.expect("Only Oslo was allowed.")
    assert term.finish() == 0
    first, rome = _tool_results(endpoint)
    assert first == "4C!"
    assert "did not allow" in rome


def test_a_plugins_registered_tools_are_picked_by_name(
    endpoint: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    fake_dists.install(
        site,
        "toolbox",
        """
        from moodlemate.ai import Tool, hookimpl


        def shout(text: str) -> str:
            \"\"\"The text in capitals.\"\"\"
            return text.upper()


        def whisper(text: str) -> str:
            \"\"\"The text in small letters.\"\"\"
            return text.lower()


        @hookimpl
        def register_tools():
            return [shout, Tool.from_function(whisper)]
        """,
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("MOODLEMATE_PLUGINS", "openai,openrouter,ollama,toolbox")
    endpoint.enqueue(_asks("c1", "shout", text="hello"), Reply(text="HELLO it is."))
    out = run_cli("chat", "-T", "shout", "--yes", "Shout hello.")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "HELLO it is.\n"
    assert [t["function"]["name"] for t in endpoint.chat_requests[0].body["tools"]] == ["shout"]
    assert _tool_results(endpoint) == ["HELLO"]
    sent = len(endpoint.chat_requests)
    unknown = run_cli("chat", "-T", "sing", "--yes", "Sing.")
    assert unknown.returncode == 2
    assert "no tool named sing" in unknown.stderr
    assert "shout, whisper" in unknown.stderr
    assert len(endpoint.chat_requests) == sent


def test_a_functions_file_that_is_missing_or_has_no_function_is_a_usage_error(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("VALUE = 1\n")
    for path, said in ((tmp_path / "none.py", "no such file"), (empty, "no public function")):
        out = run_cli("chat", "--functions", str(path), "--yes", "Hi")
        assert out.returncode == 2
        assert said in out.stderr
    assert endpoint.chat_requests == []
    assert os.environ.get("MOODLEMATE_ENDPOINT") == endpoint.url


def test_on_a_terminal_the_answer_streams_as_it_arrives(
    endpoint: LoopbackServer, functions: Path
) -> None:
    """The reply's text is shown piece by piece, each turn's, the approval prompt on a line of
    its own after the text that came before it."""
    call = _asks("c1", "weather", city="Oslo")
    endpoint.enqueue(
        Reply(
            chunks=["Let me ", "check."],
            tool_calls=call.tool_calls,
            finish_reason="tool_calls",
        ),
        Reply(chunks=["It is ", "4 degrees", " in Oslo."], chunk_delay=1.5),
    )
    term = Terminal("chat", "--functions", str(functions), "Weather in Oslo?")
    term.expect('Let me check.\r\nRun tool weather({"city": "Oslo"})? [y/N] ')
    term.write("y\n")
    term.expect("It is ")
    shown_first = time.monotonic()
    assert b"4 degrees" not in term.shown  # the rest is still on its way
    term.expect("4 degrees in Oslo.")
    assert time.monotonic() - shown_first > 1.0
    assert term.finish() == 0
    assert _tool_results(endpoint) == ["4C!"]


def test_with_yes_on_a_terminal_the_run_streams_without_asking(
    endpoint: LoopbackServer, functions: Path
) -> None:
    endpoint.enqueue(
        _asks("c1", "weather", city="Rome"),
        Reply(chunks=["Rome: ", "19 degrees."], chunk_delay=0.2),
    )
    term = Terminal("chat", "--functions", str(functions), "--yes", "Weather in Rome?")
    term.expect("Rome: 19 degrees.")
    assert term.finish() == 0
    assert b"[y/N]" not in term.shown
    assert all(r.body.get("stream") is True for r in endpoint.chat_requests)
