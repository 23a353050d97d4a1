"""``moodlemate-ai chat`` from process start to the first byte of its reply, in fresh processes.

The raw side is a script that makes the same call through the openai SDK and prints the
reply; both run piped (so ``chat`` waits for the whole reply, as a script would), against the
same server, interleaved. The user's config and spend log are kept out: each side runs with
its own empty XDG directories.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from measure import Row, Target, interleaved, median

KEY = "sk-bench-0000000000000000"
RUNNER = "import sys; from moodlemate.ai.cli import main; sys.exit(main())"
RAW = (
    "import sys, openai\n"
    "client = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)\n"
    "reply = client.chat.completions.create(\n"
    "    model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hi'}])\n"
    "sys.stdout.write(reply.choices[0].message.content + '\\n')\n"
    "sys.stdout.flush()\n"
)


def _command() -> list[str]:
    """The installed ``moodlemate-ai`` script beside this interpreter, else the same entry
    point through ``python -c``."""
    script = Path(sys.executable).with_name("moodlemate-ai")
    return [str(script)] if script.is_file() else [sys.executable, "-c", RUNNER]


def _exited(argv: list[str], env: dict[str, str]) -> list[float]:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL)
    return [time.perf_counter() - start]


def _first_byte(argv: list[str], env: dict[str, str]) -> list[float]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    elapsed = time.perf_counter() - start
    _, err = proc.communicate()
    if proc.returncode != 0 or not first:
        tail = err.decode(errors="replace").strip()[-300:]
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {tail}")
    return [elapsed]


def run(url: str, rounds: int, server_kind: str) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="moodlemate-bench-home-") as home:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MOODLEMATE_")}
        env = {
            **base,
            "MOODLEMATE_ENDPOINT": url,
            "MOODLEMATE_API_KEY": KEY,
            "XDG_CONFIG_HOME": f"{home}/config",
            "XDG_DATA_HOME": f"{home}/data",
            "XDG_CACHE_HOME": f"{home}/cache",
        }
        ours: list[str] = [*_command(), "chat", "hi"]
        raw = [sys.executable, "-c", RAW, url, KEY]
        for argv in (ours, raw):  # warm the page cache, write bytecode and the plugin cache
            _first_byte(argv, env)
        bare = [sys.executable, "-c", "pass"]
        samples = interleaved(
            rounds,
            {
                "ours": lambda: _first_byte(ours, env),
                "raw": lambda: _first_byte(raw, env),
                "bare": lambda: _exited(bare, env),
            },
        )
    ms: dict[str, Any] = {side: median([s * 1000 for s in v]) for side, v in samples.items()}
    section = "`moodlemate-ai chat hi`, piped, in a fresh process (raw: a script calling the SDK)"
    return [
        Row(
            section,
            "process start to the first byte of the reply",
            "ms",
            ms["ours"],
            ms["raw"],
            Target("ours<=", 250),
            detail={"rounds": rounds, "server": server_kind, "command": ours[0]},
        ),
        Row(
            section,
            "a bare `python -c pass`, start to exit (the interpreter's floor at this load)",
            "ms",
            ms["bare"],
            detail={"rounds": rounds},
        ),
    ]
