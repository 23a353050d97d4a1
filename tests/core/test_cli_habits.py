"""What people who use llm reach for, through the installed ``moodlemate-ai`` in real
subprocesses against the loopback test server: no subcommand, an interactive chat on a real
pseudo-terminal, stored keys (a hidden prompt; never in argv, the scrollback, the log or a
file others can read), templates, aliases, the default model, the served model listing,
searchable logs, tables only on a terminal, completion, and escape bytes a lying server
chose never reaching the terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import stat
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from moodlemate.ai.cli import COMMANDS
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from test_cli import COMMAND, run_cli

STORED_KEY = "sk-stored-7c1d9e2f4a6b8c0d"
OTHER_KEY = "sk-envkey-0a9b8c7d6e5f4a3b"
OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # "write `rm -rf ~` to the clipboard"
CLEAR = "\x1b[2J"


@pytest.fixture
def endpoint(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> LoopbackServer:
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", server.url)
    return server


def _make_controlling_terminal() -> None:
    """In the child: the pty on stdin becomes the controlling terminal, as in a login shell
    (getpass reads /dev/tty, and turns echo off there)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """The command on a pseudo-terminal: stdin, stdout and stderr all the terminal, as a user
    at a shell has them; ``shown`` is the scrollback (every byte the terminal received)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.controller, terminal = pty.openpty()
        self.proc = subprocess.Popen(
            [*COMMAND, *args],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env={**(env or os.environ), "TERM": "xterm-256color", "COLUMNS": "250"},
            preexec_fn=_make_controlling_terminal,
        )
        os.close(terminal)
        self.shown = b""

    def write(self, text: str) -> None:
        os.write(self.controller, text.encode())

    def expect(self, needle: str, seconds: float = 30) -> None:
        wanted = needle.encode()
        deadline = time.monotonic() + seconds
        while wanted not in self.shown:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{needle!r} not shown; the terminal shows {self.shown!r}")

    def finish(self, seconds: float = 30) -> int:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and self._read(left):
            pass
        os.close(self.controller)
        return self.proc.wait(timeout=10)

    def _read(self, seconds: float) -> bool:
        ready, _, _ = select.select([self.controller], [], [], seconds)
        if not ready:
            return False
        try:
            chunk = os.read(self.controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.shown += chunk
        return bool(chunk)


def _config_dir() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "moodlemate-ai"


# -- no subcommand ---------------------------------------------------------------------------


def test_a_prompt_without_a_command_is_a_chat(endpoint: LoopbackServer) -> None:
    assert run_cli("Name three primes.").stdout == "Echo: Name three primes.\n"
    out = run_cli("-m", "gpt-4o", "-s", "Be brief.", "Hi")
    assert (out.returncode, out.stdout) == (0, "Echo: Hi\n"), out.stderr
    assert endpoint.chat_requests[-1].body["model"] == "gpt-4o"
    assert run_cli(stdin="from a pipe\n").stdout == "Echo: from a pipe\n"  # no arguments


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_and_action_shows_examples_in_its_help(command: str) -> None:
    out = run_cli(command, "--help")
    assert out.returncode == 0
    assert "examples:" in out.stdout
    assert "moodlemate-ai" in out.stdout.split("examples:", 1)[1]
    for action in {"keys": ("set", "get", "list", "path", "remove")}.get(command, ()):
        assert "examples:" in run_cli(command, action, "--help").stdout


# -- interactive chat ------------------------------------------------------------------------


def test_interactive_chat_keeps_the_conversation_across_turns(endpoint: LoopbackServer) -> None:
    term = Terminal("chat", "-s", "Be brief.")
    term.expect("Chatting with gpt-4o-mini")
    term.expect("> ")
    term.write("My name is Ada.\n")
    term.expect("Echo: My name is Ada.")
    term.write("!multi\n")
    term.expect("... ")
    term.write("first line\nsecond line\n!end\n")
    term.expect("second line\r\n> ")
    term.write("!exit\n")
    assert term.finish() == 0
    first, second = (r.body["messages"] for r in endpoint.chat_requests)
    assert first == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
    ]
    assert second == [
        *first,
        {"role": "assistant", "content": "Echo: My name is Ada."},
        {"role": "user", "content": "first line\nsecond line"},
    ]
    # saved like any chat: -c goes on with it from a later process
    assert run_cli("-c", "And now?").returncode == 0
    assert len(endpoint.chat_requests[-1].body["messages"]) == 6


def test_interactive_chat_ends_on_ctrl_d_and_on_quit(endpoint: LoopbackServer) -> None:
    term = Terminal("chat")
    term.expect("> ")
    term.write("\x04")  # Ctrl-D at the prompt
    assert term.finish() == 0
    term = Terminal()  # no arguments and no pipe: help, then nothing waits
    assert term.finish() == 0
    assert b"examples:" in term.shown
    term = Terminal("chat")
    term.expect("> ")
    term.write("!quit\n")
    assert term.finish() == 0
    assert endpoint.chat_requests == []


# -- keys --------------------------------------------------------------------------------------


def _argv_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def test_keys_set_reads_a_hidden_prompt_and_stores_the_key_privately() -> None:
    term = Terminal("keys", "set", "openai")
    term.expect("(not shown): ")
    argv = _argv_of(term.proc.pid)  # while the key is being asked for
    term.write(STORED_KEY + "\n")
    assert term.finish() == 0
    assert STORED_KEY.encode() not in term.shown  # not echoed: not in the scrollback
    assert STORED_KEY[-4:].encode() in term.shown  # but the masked form says which it was
    assert STORED_KEY.encode() not in argv
    path = _config_dir() / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"openai": STORED_KEY}
    listed = run_cli("keys", "list")
    got = run_cli("keys", "get", "openai")
    assert got.stdout == f"sk-...{STORED_KEY[-4:]}\n"
    assert STORED_KEY not in listed.stdout + listed.stderr + got.stdout + got.stderr
    assert "openai" in listed.stdout
    assert run_cli("keys", "path").stdout == f"{path}\n"


def test_keys_set_reads_a_pipe_and_refuses_a_malformed_key() -> None:
    assert run_cli("keys", "set", "openrouter", stdin=STORED_KEY + "\n").returncode == 0
    bad = run_cli("keys", "set", "openai", stdin="sk-with space-0123456\n")
    assert bad.returncode == 2
    assert "whitespace" in bad.stderr
    assert run_cli("keys", "remove", "openrouter").returncode == 0
    assert run_cli("keys", "get", "openrouter").returncode == 1
    assert run_cli("keys", "set", "openai", STORED_KEY).returncode == 2  # never from argv


def test_a_stored_key_goes_where_the_providers_variable_may_and_ranks_below_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run_cli("keys", "set", "openai", stdin=STORED_KEY).returncode == 0
    with LoopbackServer(api_key=STORED_KEY) as keyed:
        # OPENAI_BASE_URL names where the provider's own keys may go
        env = {**os.environ, "OPENAI_BASE_URL": keyed.url}
        out = run_cli("chat", "-vv", "hi", env=env)
        assert out.returncode == 0, out.stderr
        assert keyed.chat_requests[-1].headers["authorization"] == f"Bearer {STORED_KEY}"
        assert "DEBUG" in out.stderr
        assert STORED_KEY not in out.stderr + out.stdout  # the debug log included
        # the environment ranks above the stored key
        out = run_cli("chat", "hi", env={**env, "OPENAI_API_KEY": OTHER_KEY})
        assert keyed.chat_requests[-1].headers["authorization"] == f"Bearer {OTHER_KEY}"
        assert out.returncode == 1  # the server wanted the stored one
        # a custom endpoint does not get it
        env = {**os.environ, "MOODLEMATE_ENDPOINT": keyed.url}
        out = run_cli("chat", "hi", env=env)
        assert out.returncode == 1
        assert "a key is stored for openai but was not sent" in out.stderr
        assert "authorization" not in keyed.chat_requests[-1].headers
        assert STORED_KEY not in out.stderr
    log = Path(os.environ["XDG_DATA_HOME"]) / "moodlemate-ai" / "logs.db"
    assert STORED_KEY.encode() not in log.read_bytes()


def test_a_keys_file_others_can_read_is_ignored() -> None:
    assert run_cli("keys", "set", "openai", stdin=STORED_KEY).returncode == 0
    path = _config_dir() / "keys.json"
    path.chmod(0o644)
    with LoopbackServer(api_key=STORED_KEY) as keyed:
        out = run_cli("chat", "hi", env={**os.environ, "OPENAI_BASE_URL": keyed.url})
        assert out.returncode == 1
        assert "must be yours and private" in out.stderr
        assert "authorization" not in keyed.chat_requests[-1].headers


# -- templates, aliases, the default model -----------------------------------------------------


def test_templates_aliases_and_the_default_model(endpoint: LoopbackServer) -> None:
    assert run_cli("aliases", "set", "big", "gpt-4o").returncode == 0
    saved = run_cli("chat", "--save", "fr", "-s", "Answer in French.", "-m", "big")
    assert saved.returncode == 0
    assert endpoint.chat_requests == []  # saving sends nothing
    assert run_cli("-t", "fr", "Hello").returncode == 0
    body = endpoint.chat_requests[-1].body
    assert body["model"] == "gpt-4o"
    assert body["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert run_cli("-t", "fr", "-m", "gpt-4.1", "Hello").returncode == 0  # flags win
    assert endpoint.chat_requests[-1].body["model"] == "gpt-4.1"
    assert "fr" in run_cli("templates", "list").stdout
    assert json.loads(run_cli("templates", "show", "fr").stdout)["model"] == "big"
    assert run_cli("models", "default", "big").returncode == 0
    assert run_cli("models", "default").stdout == "big\n"
    assert run_cli("Hi").returncode == 0
    assert endpoint.chat_requests[-1].body["model"] == "gpt-4o"
    env = {**os.environ, "MOODLEMATE_MODEL": "o3-mini"}  # the environment ranks above
    assert run_cli("Hi", env=env).returncode == 0
    assert endpoint.chat_requests[-1].body["model"] == "o3-mini"
    assert "big" in run_cli("aliases", "list").stdout
    assert run_cli("aliases", "remove", "big").returncode == 0
    assert run_cli("models", "default", "--clear").returncode == 0
    assert run_cli("Hi").returncode == 0
    assert endpoint.chat_requests[-1].body["model"] == "gpt-4o-mini"
    assert stat.S_IMODE((_config_dir() / "cli.json").stat().st_mode) == 0o600
    missing = run_cli("-t", "nope", "Hi")
    assert missing.returncode == 2
    assert "no template 'nope'" in missing.stderr


def test_the_stored_default_model_ranks_below_every_configured_model(
    endpoint: LoopbackServer, tmp_path: Path
) -> None:
    """`models default` is the CLI's default: -m > MOODLEMATE_MODEL > a config file's model
    (the project's, the chosen profile's, the user's) > it > the provider's default."""
    user_file = _config_dir() / "config.toml"
    user_file.parent.mkdir(parents=True, exist_ok=True)
    user_file.write_text('[profiles.local]\nmodel = "llama3.2"\n', encoding="utf-8")
    set_default = run_cli("models", "default", "gpt-4o")
    assert set_default.returncode == 0
    assert "note:" not in set_default.stderr  # nothing outranks it yet
    assert run_cli("Hi").returncode == 0
    assert endpoint.chat_requests[-1].body["model"] == "gpt-4o"
    assert run_cli("--profile", "local", "Hi").returncode == 0  # the profile's model wins
    assert endpoint.chat_requests[-1].body["model"] == "llama3.2"

    project = tmp_path / "project"
    project.mkdir()
    (project / "moodlemate.toml").write_text('model = "qwen2.5"\n', encoding="utf-8")
    in_project = subprocess.run(
        [*COMMAND, "Hi"], capture_output=True, text=True, cwd=project, timeout=60
    )
    assert in_project.returncode == 0, in_project.stderr
    assert endpoint.chat_requests[-1].body["model"] == "qwen2.5"  # the project's model
    noted = subprocess.run(
        [*COMMAND, "models", "default", "gpt-4.1"],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=60,
    )
    assert noted.returncode == 0
    assert "note:" in noted.stderr
    assert "'qwen2.5'" in noted.stderr
    assert str((project / "moodlemate.toml").resolve()) in noted.stderr
    env = {**os.environ, "MOODLEMATE_MODEL": "o3-mini"}
    assert run_cli("Hi", env=env).returncode == 0
    assert endpoint.chat_requests[-1].body["model"] == "o3-mini"
    assert run_cli("-m", "gpt-4o-mini", "Hi", env=env).returncode == 0
    assert endpoint.chat_requests[-1].body["model"] == "gpt-4o-mini"
    assert run_cli("Hi").returncode == 0  # nothing configured here: the stored default
    assert endpoint.chat_requests[-1].body["model"] == "gpt-4.1"


# -- models --------------------------------------------------------------------------------


def test_models_lists_what_the_server_serves_with_what_we_know(endpoint: LoopbackServer) -> None:
    endpoint.models = [
        {"id": "gpt-4o-mini", "object": "model", "owned_by": "system"},
        {"id": "local-llama", "object": "model", "owned_by": "me", "max_model_len": 4096},
    ]
    out = run_cli("models")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = ["MODEL", "CONTEXT", "MAX", "OUTPUT", "INPUT", "CACHED", "INPUT", "OUTPUT"]
    assert lines[0].split() == header
    assert lines[1].split() == ["gpt-4o-mini", "128000", "16384", "0.15", "0.075", "0.60"]
    assert lines[2].split() == ["local-llama", "4096", "?", "?", "?", "?"]
    records = json.loads(run_cli("models", "--json").stdout)
    assert [(r["model"], r["known"]) for r in records] == [
        ("gpt-4o-mini", True),
        ("local-llama", False),
    ]
    assert records[1]["served_context_window"] == 4096
    with LoopbackServer(api_key=STORED_KEY) as keyed:
        refused = run_cli("models", "--endpoint", keyed.url)
        assert refused.returncode == 1
        assert "AuthenticationError" in refused.stderr


# -- logs and spend ------------------------------------------------------------------------


def test_logs_show_search_and_follow_conversations(endpoint: LoopbackServer) -> None:
    for prompt in ("Tell me about prime numbers", "And the weather?"):
        assert run_cli("--conversation", "maths", prompt).returncode == 0
    assert run_cli("A sonnet about primes, please").returncode == 0
    assert run_cli("Something else").returncode == 0
    table = run_cli("logs").stdout.splitlines()
    assert table[0].split()[-2:] == ["PROMPT", "REPLY"]
    assert table[1].split()[-5:] == ["Something", "else", "Echo:", "Something", "else"]
    found = run_cli("logs", "-q", "primes").stdout.splitlines()
    assert len(found) == 2  # header and the sonnet (words match whole: "prime" is not "primes")
    assert "sonnet" in found[1]
    both = json.loads(run_cli("logs", "-q", "prime numbers", "--json").stdout)
    assert [json.loads(r["prompt"])[-1]["content"] for r in both] == ["Tell me about prime numbers"]
    assert json.loads(run_cli("logs", "-q", 'NEAR("x" OR', "--json").stdout) == []
    turns = json.loads(run_cli("logs", "--cid", "maths", "--json").stdout)
    assert [r["reply"] for r in turns] == [
        "Echo: And the weather?",
        "Echo: Tell me about prime numbers",
    ]
    path = run_cli("logs", "path").stdout.strip()
    assert path == str(Path(os.environ["XDG_DATA_HOME"]) / "moodlemate-ai" / "logs.db")
    assert run_cli("logs", "off").returncode == 0
    assert run_cli("unrecorded").returncode == 0
    assert run_cli("logs", "on").returncode == 0
    assert run_cli("recorded").returncode == 0
    prompts = [r["reply"] for r in json.loads(run_cli("logs", "-n", "2", "--json").stdout)]
    assert prompts == ["Echo: recorded", "Echo: Something else"]
    assert json.loads(run_cli("spend", "--by", "provider", "--json").stdout)["total"]["calls"] == 5


def test_a_piped_command_never_imports_rich_a_terminal_draws_with_it(
    endpoint: LoopbackServer,
) -> None:
    probe = (
        "import sys; from moodlemate.ai.cli import main; code = main(sys.argv[1:]); "
        "print('rich' in sys.modules, 'argcomplete' in sys.modules, file=sys.stderr)"
    )
    for args in (["chat", "hi"], ["logs"], ["spend"]):
        out = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stderr.splitlines()[-1] == "False False", args
    term = Terminal("logs")
    assert term.finish() == 0
    assert b"\x1b[1m" in term.shown  # rich's bold header


# -- escape bytes from a lying server (issue 29, finding 13) -----------------------------


def test_escape_bytes_a_server_chose_never_reach_the_terminal(endpoint: LoopbackServer) -> None:
    endpoint.enqueue(Reply(text=f"fine{OSC52} then{CLEAR}", model=f"gpt-4o{CLEAR}"))
    reply = Terminal("chat", "--usage", "hi")
    assert reply.finish() == 0
    endpoint.enqueue(Fault.status(400, message=f"bad{OSC52}request\x9b31m"))
    error = Terminal("chat", "hi")
    assert error.finish() == 1
    listing = Terminal("logs")
    assert listing.finish() == 0
    totals = Terminal("spend", "--by", "model")
    assert totals.finish() == 0
    endpoint.models = [{"id": f"evil{OSC52}", "object": "model", "owned_by": "x"}]
    models = Terminal("models")
    assert models.finish() == 0
    for term in (reply, error, listing, totals, models):
        assert b"\x1b]52" not in term.shown
        assert b"\x1b[2J" not in term.shown
        assert b"\x07" not in term.shown
        assert "\x9b".encode() not in term.shown
    assert b"fine\\x1b]52;c;cm0gLXJmIH4=\\x07 then\\x1b[2J" in reply.shown  # the reply, shown
    assert b"gpt-4o\\x1b[2J" in reply.shown  # --usage's model
    assert b"bad\\x1b]52;c;cm0gLXJmIH4=\\x07request\\x9b31m" in error.shown
    assert b"gpt-4o\\x1b[2J" in listing.shown + totals.shown
    assert b"evil\\x1b]52" in models.shown
    # a retry's warning quotes the server's message: escaped too, in a log file as well
    endpoint.enqueue(Fault.status(503, message=f"busy{OSC52}"), Reply(text="ok"))
    retried = run_cli("hi")
    assert retried.returncode == 0
    assert "busy\\x1b]52" in retried.stderr
    assert "\x1b" not in retried.stderr
    # a pipe gets the reply as it came: it is data there, not a display
    endpoint.enqueue(Reply(text=f"raw{CLEAR}"))
    assert run_cli("hi").stdout == f"raw{CLEAR}\n"


# -- completion ----------------------------------------------------------------------------


def test_completion_prints_shell_code_and_answers_the_shell(tmp_path: Path) -> None:
    code = run_cli("completion", "bash")
    assert code.returncode == 0
    assert "moodlemate-ai" in code.stdout
    answer = tmp_path / "completions"
    line = "moodlemate-ai ke"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    subprocess.run(COMMAND, env=env, capture_output=True, timeout=60, check=False)
    assert [word.strip() for word in answer.read_text().split("\x0b")] == ["keys"]
    # what the user saved completes too: templates, aliases, and models by alias or name
    assert run_cli("chat", "--save", "french", "-s", "En français.").returncode == 0
    assert run_cli("aliases", "set", "big", "gpt-4o").returncode == 0
    for line, expected in (
        ("moodlemate-ai chat -t fr", ["french"]),
        ("moodlemate-ai templates show f", ["french"]),
        ("moodlemate-ai aliases remove b", ["big"]),
        ("moodlemate-ai chat -m gpt-4o-mini-a", ["gpt-4o-mini-audio-preview"]),
        ("moodlemate-ai keys set open", ["openai", "openrouter"]),
    ):
        asked = {**env, "COMP_LINE": line, "COMP_POINT": str(len(line))}
        subprocess.run(COMMAND, env=asked, capture_output=True, timeout=60, check=False)
        words = [word.strip() for word in answer.read_text().split("\x0b")]
        assert words == expected, line


def test_keys_set_keyring_keeps_the_key_out_of_the_file(tmp_path: Path) -> None:
    pytest.importorskip("keyring")
    ring = tmp_path / "ring.json"
    tests_dir = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "keyring_file_backend.FileKeyring",
        "PYTHONPATH": str(tests_dir),
        "MOODLEMATE_TEST_KEYRING": str(ring),
    }
    stored = run_cli("keys", "set", "openai", "--keyring", stdin=STORED_KEY, env=env)
    assert stored.returncode == 0, stored.stderr
    assert json.loads((_config_dir() / "keys.json").read_text()) == {"openai": {"keyring": True}}
    assert json.loads(ring.read_text()) == {"moodlemate-ai/openai": STORED_KEY}
    listed = run_cli("keys", "list", env=env)
    assert listed.stdout.splitlines()[1].split() == [
        "openai",
        f"sk-...{STORED_KEY[-4:]}",
        "keyring",
    ]
    with LoopbackServer(api_key=STORED_KEY) as keyed:
        out = run_cli("chat", "hi", env={**env, "OPENAI_BASE_URL": keyed.url})
        assert out.returncode == 0, out.stderr
        assert keyed.chat_requests[-1].headers["authorization"] == f"Bearer {STORED_KEY}"
    assert run_cli("keys", "remove", "openai", env=env).returncode == 0
    assert json.loads(ring.read_text()) == {}
