"""A project-local ``moodlemate.toml`` (one that came with a cloned repository) is untrusted
input: until the user trusts it, it may not name an environment variable to send, receive a
key it does not hold, or send its own over plain http to another machine; and every setting
held back is named, with the command that trusts the file, never dropped in silence.

Real files in the test's working directory, the real environment, real HTTP to the project's
test server (which records what arrived), and the console script as a subprocess.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from moodlemate.ai import GPT, MissingAPIKeyError, ValidationError
from moodlemate.ai._project_trust import allow_list_path, trust
from moodlemate.ai.testing import LoopbackServer
from support import FAST_RETRY, TEST_KEY

TOKEN = "ghp_0123456789abcdefGHIJKLMNOPqrstuvwx"  # what a CI runner or a shell may hold
USER_KEY = "sk-user-config-7c1d9e3a5b2f4c6d"
_SCRIPT = shutil.which("moodlemate-ai", path=str(Path(sys.executable).parent))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "moodlemate.ai.cli"]
TRUST = "moodlemate-ai config trust"


@pytest.fixture
def attacker() -> Iterator[LoopbackServer]:
    """The server a hostile project file points at: it records whatever reaches it."""
    with LoopbackServer() as srv:
        yield srv


def project_file(text: str) -> Path:
    path = Path("moodlemate.toml")
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def credentials_seen(server: LoopbackServer) -> list[str]:
    """Every Authorization header and every request byte string, to search for keys."""
    return [str(r.headers) + r.raw.decode("latin-1") for r in server.requests]


def ask(gpt: GPT) -> str:
    return gpt.chat_completion("gpt-4o-mini", "Be brief.", "Hi")


# -- an environment variable the file names ----------------------------------------------------


def test_an_untrusted_file_cannot_send_an_environment_variable_it_names(
    attacker: LoopbackServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    path = project_file(f'endpoint = "{attacker.url}"\napi_key_env = "GITHUB_TOKEN"\n')
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        gpt = GPT(retry=FAST_RETRY)
        GPT(retry=FAST_RETRY)  # the warning comes once, not per instance
    warnings = [r.getMessage() for r in caplog.records if "api_key_env" in r.getMessage()]
    assert len(warnings) == 1
    assert str(path.resolve()) in warnings[0]
    assert "GITHUB_TOKEN" in warnings[0]
    assert TRUST in warnings[0]
    assert gpt.api_key is None
    with pytest.raises(MissingAPIKeyError) as refused:
        ask(gpt)
    assert "api_key_env" in str(refused.value)
    assert TRUST in str(refused.value)
    assert attacker.requests == []  # nothing was sent at all
    assert TOKEN not in str(refused.value)


def test_once_trusted_the_file_sends_its_variable_and_an_edit_revokes_the_trust(
    attacker: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_KEY", TOKEN)
    path = project_file(f'endpoint = "{attacker.url}"\napi_key_env = "TEAM_KEY"\n')
    trust(path, os.environ)
    assert ask(GPT(retry=FAST_RETRY)) == "Echo: Hi"
    assert attacker.chat_requests[0].headers["authorization"] == f"Bearer {TOKEN}"

    listing = allow_list_path(os.environ)
    assert stat.S_IMODE(listing.stat().st_mode) == 0o600
    assert stat.S_IMODE(listing.parent.stat().st_mode) == 0o700

    with path.open("a", encoding="utf-8") as more:  # a `git pull` changed it
        more.write('model = "gpt-4o"\n')
    with pytest.raises(MissingAPIKeyError, match="api_key_env"):
        ask(GPT(retry=FAST_RETRY))
    assert len(attacker.requests) == 1


def test_the_ci_variable_trusts_the_project_file_and_takes_only_documented_spellings(
    attacker: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_KEY", TOKEN)
    project_file(f'endpoint = "{attacker.url}"\napi_key_env = "TEAM_KEY"\n')
    monkeypatch.setenv("MOODLEMATE_TRUST_PROJECT_CONFIG", "no")
    with pytest.raises(MissingAPIKeyError):
        ask(GPT(retry=FAST_RETRY))
    monkeypatch.setenv("MOODLEMATE_TRUST_PROJECT_CONFIG", "maybe")
    with pytest.raises(ValidationError, match="MOODLEMATE_TRUST_PROJECT_CONFIG"):
        GPT()
    monkeypatch.setenv("MOODLEMATE_TRUST_PROJECT_CONFIG", "1")
    assert ask(GPT(retry=FAST_RETRY)) == "Echo: Hi"
    assert attacker.chat_requests[0].headers["authorization"] == f"Bearer {TOKEN}"


# -- keys that did not come from the file ---------------------------------------------------


def test_a_key_given_in_code_does_not_follow_an_endpoint_the_untrusted_file_chose(
    attacker: LoopbackServer,
) -> None:
    path = project_file(f'endpoint = "{attacker.url}"\n')
    for gpt in (GPT(api_key=TEST_KEY, retry=FAST_RETRY), GPT(retry=FAST_RETRY)):
        gpt.api_key = TEST_KEY
        assert gpt.api_key is None  # what calls would send
        with pytest.raises(MissingAPIKeyError) as refused:
            ask(gpt)
        message = str(refused.value)
        assert str(path.resolve()) in message
        assert TRUST in message
        assert TEST_KEY not in message
    gpt = GPT(headers={"X-Api-Key": TEST_KEY}, retry=FAST_RETRY)
    with pytest.raises(MissingAPIKeyError, match="headers set in code"):
        ask(gpt)
    assert attacker.requests == []


def test_the_seed_use_in_code_works_beside_an_untrusted_file(
    server: LoopbackServer, attacker: LoopbackServer
) -> None:
    project_file(f'endpoint = "{attacker.url}"\napi_key_env = "GITHUB_TOKEN"\n')
    gpt = GPT()
    gpt.api_key = TEST_KEY
    gpt.endpoint = server.url
    assert gpt.chat_completion("gpt-4o-mini", "Be brief.", "Hi") == "Echo: Hi"
    reverse = GPT()
    reverse.endpoint = server.url
    reverse.api_key = TEST_KEY
    assert reverse.chat_completion("gpt-4o-mini", "Be brief.", "Hi") == "Echo: Hi"
    assert [r.headers["authorization"] for r in server.chat_requests] == [f"Bearer {TEST_KEY}"] * 2
    assert attacker.requests == []


def test_openai_environment_variables_keep_working_beside_an_untrusted_file(
    server: LoopbackServer, attacker: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_file(f'endpoint = "{attacker.url}"\nmodel = "gpt-4o-mini"\n')
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    assert ask(GPT(retry=FAST_RETRY)) == "Echo: Hi"  # the environment outranks the file
    assert server.chat_requests[0].headers["authorization"] == f"Bearer {TEST_KEY}"
    assert attacker.requests == []


def test_a_key_from_the_users_own_config_file_is_not_redirected(
    attacker: LoopbackServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    user_file = tmp_path / "xdg-config" / "moodlemate-ai" / "config.toml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text(
        f'api_key = "{USER_KEY}"\n[headers]\nX-Gateway-Token = "{TOKEN}"\n', encoding="utf-8"
    )
    user_file.chmod(0o600)
    path = project_file(f'endpoint = "{attacker.url}"\n')
    with pytest.raises(MissingAPIKeyError) as refused:
        ask(GPT(retry=FAST_RETRY))
    message = str(refused.value)
    assert f"the api_key of {user_file.resolve()}" in message
    assert f"the headers of {user_file.resolve()}" in message
    assert str(path.resolve()) in message
    assert attacker.requests == []
    trust(path, os.environ)  # the user vouches for the project file: their key may go there
    assert ask(GPT(retry=FAST_RETRY)) == "Echo: Hi"
    assert attacker.chat_requests[0].headers["authorization"] == f"Bearer {USER_KEY}"


def test_moodlemate_api_key_does_not_follow_a_provider_the_untrusted_file_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOODLEMATE_API_KEY", "sk-or-v1-from-the-env-1234567")
    project_file('provider = "openrouter"\n')
    gpt = GPT()
    assert gpt.provider.name == "openrouter"
    assert gpt.api_key is None
    with pytest.raises(MissingAPIKeyError, match="MOODLEMATE_API_KEY"):
        ask(gpt)


def test_an_untrusted_file_naming_the_default_provider_redirects_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project_file('provider = "openai"\nmodel = "gpt-4o"\n')
    assert GPT(api_key=TEST_KEY).api_key == TEST_KEY  # openai's own service, as without it
    project_file('provider = "openrouter"\n')
    assert GPT(api_key="sk-or-v1-from-code-0123456789").api_key is None  # another vendor


# -- the file's own key ----------------------------------------------------------------------


def test_the_files_own_key_goes_to_its_own_loopback_endpoint_untrusted(
    attacker: LoopbackServer,
) -> None:
    own = "sk-local-own-key-0a1b2c3d"
    project_file(f'endpoint = "{attacker.url}"\napi_key = "{own}"\n')
    assert ask(GPT(retry=FAST_RETRY)) == "Echo: Hi"
    assert attacker.chat_requests[0].headers["authorization"] == f"Bearer {own}"


@pytest.mark.parametrize("host", ["192.0.2.10", "llm.example.test", "[2001:db8::1]"])
def test_no_key_goes_over_plain_http_to_another_machine_without_trust(host: str) -> None:
    own = "sk-local-own-key-0a1b2c3d"
    path = project_file(f'endpoint = "http://{host}:9/v1"\napi_key = "{own}"\n')
    with pytest.raises(MissingAPIKeyError) as refused:
        ask(GPT(retry=FAST_RETRY))
    assert "plain http" in str(refused.value)
    assert own not in str(refused.value)
    trust(path, os.environ)
    assert GPT().api_key == own  # trusted: the user's choice, as written


# -- the command line, in a directory like a cloned repository ----------------------------


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def test_the_cli_in_a_cloned_repository_says_what_it_ignored_and_how_to_trust(
    attacker: LoopbackServer, tmp_path: Path
) -> None:
    repo = tmp_path / "cloned-repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "moodlemate.toml").write_text(
        f'endpoint = "{attacker.url}"\napi_key_env = "GITHUB_TOKEN"\n', encoding="utf-8"
    )
    env = {**os.environ, "GITHUB_TOKEN": TOKEN}
    chat = ["chat", "--model", "gpt-4o-mini", "--no-log", "Hi"]

    refused = _cli(*chat, env=env, cwd=repo)
    assert refused.returncode == 1
    assert "WARNING" in refused.stderr
    assert "api_key_env = 'GITHUB_TOKEN'" in refused.stderr
    assert str((repo / "moodlemate.toml").resolve()) in refused.stderr
    assert TRUST in refused.stderr
    with_key = _cli(*chat, "--key", TEST_KEY, env=env, cwd=repo)
    assert with_key.returncode == 1
    assert "not sending the API key set in code (or by --key)" in with_key.stderr
    assert attacker.requests == []
    assert all(TOKEN not in text and TEST_KEY not in text for text in credentials_seen(attacker))

    status = _cli("config", "status", env=env, cwd=repo)
    assert "NOT trusted" in status.stdout
    trusted = _cli("config", "trust", env=env, cwd=repo)
    assert trusted.returncode == 0, trusted.stderr
    assert "$GITHUB_TOKEN" in trusted.stdout  # shown what it trusts
    answered = _cli(*chat, env=env, cwd=repo)
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.strip() == "Echo: Hi"
    assert "WARNING" not in answered.stderr
    assert attacker.chat_requests[0].headers["authorization"] == f"Bearer {TOKEN}"

    assert _cli("config", "untrust", env=env, cwd=repo).returncode == 0
    assert _cli(*chat, env=env, cwd=repo).returncode == 1
    assert len(attacker.requests) == 1


def test_an_allow_list_others_can_write_is_ignored(
    attacker: LoopbackServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TEAM_KEY", TOKEN)
    path = project_file(f'endpoint = "{attacker.url}"\napi_key_env = "TEAM_KEY"\n')
    trust(path, os.environ)
    allow_list_path(os.environ).chmod(0o666)
    with (
        caplog.at_level(logging.WARNING, logger="moodlemate.ai"),
        pytest.raises(MissingAPIKeyError),
    ):
        ask(GPT(retry=FAST_RETRY))
    assert any("writable by others" in r.getMessage() for r in caplog.records)
    assert attacker.requests == []
