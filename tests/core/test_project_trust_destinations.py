"""An untrusted project ``moodlemate.toml`` may not choose where data goes: its ``log`` (the
file every call is recorded in, with the CLI the prompts and replies too) and its ``redis``
(the server that shared budgets and pacing tell about every call) are ignored, each named in
one warning with the command that trusts the file. Once trusted, and from the user's own
config file, the environment or code, both work as documented.

Real files, the real environment, a real redis-server, real HTTP to the project's test
server, and the console script as a subprocess.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from moodlemate.ai import GPT
from moodlemate.ai._project_trust import trust
from moodlemate.ai.testing import LoopbackServer
from support import FAST_RETRY

_SCRIPT = shutil.which("moodlemate-ai", path=str(Path(sys.executable).parent))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "moodlemate.ai.cli"]
TRUST = "moodlemate-ai config trust"


def project_file(text: str) -> Path:
    path = Path("moodlemate.toml")
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def user_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xdg-config" / "moodlemate-ai" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def keys_in(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.dbsize())
    finally:
        client.close()


def logged_calls(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("select count(*) from calls").fetchone()[0])


def warnings_about(caplog: pytest.LogCaptureFixture, setting: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and f"ignoring {setting} = " in r.getMessage()
    ]


def ask(gpt: GPT) -> str:
    return gpt.chat_completion("gpt-4o-mini", "Be brief.", "Hi")


# -- the spend log ------------------------------------------------------------------------------


def test_an_untrusted_file_cannot_choose_where_the_spend_log_is_written(
    server: LoopbackServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "home" / "notes.db"  # a file the user owns, outside the project
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"the user's own bytes\n")
    path = project_file(f'endpoint = "{server.url}"\nlog = "{elsewhere}"\n')
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        gpt = GPT(retry=FAST_RETRY)
        GPT(retry=FAST_RETRY)  # one warning, not one per instance
    assert gpt.log is None
    assert ask(gpt) == "Echo: Hi"  # the rest of the file still applies
    assert elsewhere.read_bytes() == b"the user's own bytes\n"
    (warning,) = warnings_about(caplog, "log")
    assert str(path.resolve()) in warning
    assert str(elsewhere) in warning
    assert f"{TRUST} {path.resolve()}" in warning

    elsewhere.unlink()
    trust(path, os.environ)  # the user vouches for the file: its log is theirs
    gpt = GPT(retry=FAST_RETRY)
    assert gpt.log is not None
    assert gpt.log.path == elsewhere
    assert ask(gpt) == "Echo: Hi"
    assert logged_calls(elsewhere) == 1


def test_a_profiles_log_is_ignored_too_and_the_users_own_log_stays(
    server: LoopbackServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = tmp_path / "mine.db"
    planted = tmp_path / "planted.db"
    user_file(tmp_path, f'log = "{own}"\n')
    project_file(
        f'profile = "team"\nendpoint = "{server.url}"\n[profiles.team]\nlog = "{planted}"\n'
    )
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        gpt = GPT(retry=FAST_RETRY)
    assert "[profiles.team]" in warnings_about(caplog, "log")[0]
    assert gpt.log is not None
    assert gpt.log.path == own  # the user's file still decides
    assert ask(gpt) == "Echo: Hi"
    assert logged_calls(own) == 1
    assert not planted.exists()


def test_a_log_given_in_code_or_by_the_users_file_works_beside_an_untrusted_file(
    server: LoopbackServer, tmp_path: Path
) -> None:
    project_file(f'endpoint = "{server.url}"\nmodel = "gpt-4o-mini"\n')  # nothing withheld
    chosen = tmp_path / "chosen.db"
    assert ask(GPT(log=chosen, retry=FAST_RETRY)) == "Echo: Hi"
    assert logged_calls(chosen) == 1
    own = tmp_path / "mine.db"
    user_file(tmp_path, f'log = "{own}"\n')
    assert ask(GPT(retry=FAST_RETRY)) == "Echo: Hi"
    assert logged_calls(own) == 1


# -- Redis ----------------------------------------------------------------------------------


def test_an_untrusted_file_cannot_point_budgets_and_pacing_at_its_redis(
    server: LoopbackServer, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = project_file(f'endpoint = "{server.url}"\nredis = "{redis_url}"\n')
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        gpt = GPT(budget=1, budget_scope="team", log=tmp_path / "own.db", retry=FAST_RETRY)
    assert gpt.redis is None
    assert gpt.pacer is None  # on by default only with Redis
    assert ask(gpt) == "Echo: Hi"
    assert keys_in(redis_url) == 0  # nothing about the call reached the file's server
    (warning,) = warnings_about(caplog, "redis")
    assert str(path.resolve()) in warning
    assert TRUST in warning

    trust(path, os.environ)
    gpt = GPT(budget=1, budget_scope="team", retry=FAST_RETRY)
    assert gpt.redis == redis_url
    assert ask(gpt) == "Echo: Hi"
    assert keys_in(redis_url) > 0  # trusted: the shared budget lives there


def test_the_warning_about_an_ignored_redis_url_never_shows_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "hunter2-redis-0123456789"
    project_file(
        f'redis = "redis://:{secret}@127.0.0.1:9/0"\n'
        f'[profiles.ci]\nredis = "redis://127.0.0.1:9/0?password={secret}"\n'
    )
    with caplog.at_level(logging.WARNING, logger="moodlemate.ai"):
        assert GPT().redis is None
        assert GPT(profile="ci").redis is None
    shown = warnings_about(caplog, "redis")
    assert len(shown) == 2
    assert all("***" in text and secret not in text for text in shown)
    assert secret not in caplog.text


def test_redis_from_the_environment_or_code_works_beside_an_untrusted_file(
    server: LoopbackServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_file(f'endpoint = "{server.url}"\nredis = "redis://127.0.0.1:9/0"\n')
    monkeypatch.setenv("MOODLEMATE_REDIS_URL", redis_url)
    gpt = GPT(budget=1, budget_scope="env", retry=FAST_RETRY)
    assert gpt.redis == redis_url
    assert ask(gpt) == "Echo: Hi"
    assert keys_in(redis_url) > 0
    monkeypatch.delenv("MOODLEMATE_REDIS_URL")
    assert GPT(redis=redis_url).redis == redis_url


# -- the command line in a cloned repository ------------------------------------------------


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def test_the_cli_ignores_a_cloned_repositorys_log_and_redis_until_trusted(
    server: LoopbackServer, redis_url: str, tmp_path: Path
) -> None:
    repo = tmp_path / "cloned-repo"
    (repo / ".git").mkdir(parents=True)
    planted = tmp_path / "shared" / "everyones-prompts.db"
    planted.parent.mkdir()
    (repo / "moodlemate.toml").write_text(
        f'log = "{planted}"\nredis = "{redis_url}"\n'
        'pacing = { "gpt-4o-mini" = { requests_per_minute = 10 } }\n',
        encoding="utf-8",
    )
    env: dict[str, Any] = {**os.environ, "MOODLEMATE_ENDPOINT": server.url}
    chat = ["chat", "--model", "gpt-4o-mini", "Hi"]

    untrusted = _cli(*chat, env=env, cwd=repo)
    assert untrusted.returncode == 0, untrusted.stderr  # the call itself is not refused
    assert untrusted.stdout.strip() == "Echo: Hi"
    assert f"ignoring log = '{planted}'" in untrusted.stderr
    assert "ignoring redis = " in untrusted.stderr
    assert untrusted.stderr.count(TRUST) == 2
    assert not planted.exists()
    assert keys_in(redis_url) == 0
    default_log = tmp_path / "xdg-data" / "moodlemate-ai" / "logs.db"
    assert logged_calls(default_log) == 1  # recorded where the user's settings say

    logs = _cli("logs", env=env, cwd=repo)  # reads the same log the calls went to
    assert logs.returncode == 0, logs.stderr
    assert "Hi" in logs.stdout

    trusted = _cli("config", "trust", env=env, cwd=repo)
    assert trusted.returncode == 0, trusted.stderr
    assert f"writes the spend log to {planted}" in trusted.stdout  # shown what it trusts
    assert "Redis at redis://127.0.0.1" in trusted.stdout
    answered = _cli(*chat, env=env, cwd=repo)
    assert answered.returncode == 0, answered.stderr
    assert "WARNING" not in answered.stderr
    assert logged_calls(planted) == 1
    assert keys_in(redis_url) > 0  # its pacing counts go there once trusted
