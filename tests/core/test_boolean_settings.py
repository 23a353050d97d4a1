"""On/off settings take one documented set of spellings (true/false, yes/no, on/off, 1/0, any
case) from every source: ``"no"`` is false, never true for being a non-empty string, and
anything else is a typed error naming the setting and where it came from."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from moodlemate.ai import GPT, BudgetStoreError, ConfigurationError, ValidationError
from moodlemate.ai._flags import parse_flag
from moodlemate.ai.testing import LoopbackServer
from support import TEST_KEY

TRUE = ["true", "True", "YES", "on", "1", " yes "]
FALSE = ["false", "FALSE", "no", "No", "off", "0"]
NONSENSE = ["maybe", "", "2", "y", "n", "tru", "none", "enabled"]


@pytest.mark.parametrize("word", TRUE)
def test_true_spellings(word: str) -> None:
    assert parse_flag(word, "x") is True


@pytest.mark.parametrize("word", FALSE)
def test_false_spellings(word: str) -> None:
    assert parse_flag(word, "x") is False


@pytest.mark.parametrize("word", NONSENSE)
def test_anything_else_is_an_error_naming_the_setting(word: str) -> None:
    with pytest.raises(ValidationError, match="the_setting must be true/false, yes/no"):
        parse_flag(word, "the_setting")


def _unreachable_redis() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{probe.getsockname()[1]}/0"


def _budgeted(server: LoopbackServer, fail_open: object) -> GPT:
    return GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        budget=1,
        budget_scope="team",
        budget_fail_open=fail_open,  # type: ignore[arg-type]
        redis=_unreachable_redis(),
        pacing=False,
    )


@pytest.mark.parametrize("word", ["no", "off", "0", "False"])
def test_budget_fail_open_no_fails_closed(server: LoopbackServer, word: str) -> None:
    with pytest.raises(BudgetStoreError):
        _budgeted(server, word).complete("gpt-4o-mini", "", "hi")
    assert server.chat_requests == []  # "no" did not open the gate


@pytest.mark.parametrize("word", ["yes", "on", "1", "True"])
def test_budget_fail_open_yes_fails_open(server: LoopbackServer, word: str) -> None:
    assert _budgeted(server, word).complete("gpt-4o-mini", "", "hi").text == "Echo: hi"
    assert len(server.chat_requests) == 1


def test_budget_fail_open_maybe_is_an_error(server: LoopbackServer) -> None:
    with pytest.raises(ValidationError, match="budget_fail_open must be"):
        _budgeted(server, "maybe")


@pytest.mark.parametrize(("word", "on"), [("no", False), ("OFF", False), ("yes", True)])
def test_moodlemate_pacing_spellings(monkeypatch: pytest.MonkeyPatch, word: str, on: bool) -> None:
    monkeypatch.setenv("MOODLEMATE_PACING", word)
    assert (GPT().pacer is not None) is on


def test_moodlemate_pacing_nonsense_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOODLEMATE_PACING", "maybe")
    with pytest.raises(ValidationError, match="MOODLEMATE_PACING must be"):
        GPT()


def test_pacing_argument_spellings() -> None:
    assert GPT(pacing="no").pacer is None
    assert GPT(pacing="on").pacer is not None
    with pytest.raises(ValidationError, match="pacing must be"):
        GPT(pacing="maybe")


@pytest.mark.parametrize("where", ["user", "explicit"])
def test_a_config_files_pacing_takes_the_spellings_and_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "user":
        path = tmp_path / "xdg-config" / "moodlemate-ai" / "config.toml"
        path.parent.mkdir(parents=True)
    else:
        path = tmp_path / "team.toml"
        monkeypatch.setenv("MOODLEMATE_CONFIG", str(path))
    path.write_text('redis = "redis://127.0.0.1:1/0"\npacing = "no"\n', encoding="utf-8")
    assert GPT().pacer is None  # Redis alone would turn pacing on: "no" turned it off
    path.write_text('model = "gpt-4o"\npacing = "Yes"\n', encoding="utf-8")
    assert GPT().pacer is not None
    path.write_text('model = "gpt-4o"\n\npacing = "maybe"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        GPT()
    assert f"{path}:3:" in str(caught.value)
    assert "'pacing' must be true/false, yes/no, on/off or 1/0" in str(caught.value)


def test_otel_capture_content_takes_the_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from moodlemate.ai._plugins import PluginRegistry
    from moodlemate.ai.otel import CAPTURE_CONTENT_ENV, instrument

    for word, on in (("1", True), ("yes", True), ("no", False), ("", False)):
        monkeypatch.setenv(CAPTURE_CONTENT_ENV, word)
        assert instrument(plugins=PluginRegistry()).capture_content is on
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "maybe")
    with pytest.raises(ValidationError, match=CAPTURE_CONTENT_ENV):
        instrument(plugins=PluginRegistry())
