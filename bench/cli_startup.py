"""Start-up of the ``moodlemate-ai`` command: fresh processes, medians over interleaved rounds.

    python bench/cli_startup.py [--rounds N]

Measures ``moodlemate-ai --version`` and a piped ``moodlemate-ai chat`` against the project's
test server (in this process, on 127.0.0.1), each net of a bare ``python -c pass``, and says
which optional display libraries (rich, argcomplete) the piped chat imported: none should be.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import interleaved, median

SCRIPT = shutil.which("moodlemate-ai", path=str(Path(sys.executable).parent)) or "moodlemate-ai"
PROBE = (
    "import runpy, sys, atexit, json\n"
    "atexit.register(lambda: sys.stderr.write('MODULES ' + json.dumps(sorted(m for m in "
    "('rich', 'argcomplete', 'keyring', 'openai', 'tiktoken') if m in sys.modules)) + '\\n'))\n"
    "sys.argv = ['moodlemate-ai', 'chat', 'hi']\n"
    "from moodlemate.ai.cli import main\n"
    "sys.exit(main())\n"
)


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def run(rounds: int) -> dict[str, object]:
    from moodlemate.testing import LoopbackServer

    with LoopbackServer() as server, tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "MOODLEMATE_ENDPOINT": server.url,
            "XDG_CONFIG_HOME": f"{home}/config",
            "XDG_DATA_HOME": f"{home}/data",
        }
        commands = {
            "bare python": [sys.executable, "-c", "pass"],
            "moodlemate-ai --version": [SCRIPT, "--version"],
            "moodlemate-ai chat (piped)": [SCRIPT, "chat", "hi"],
        }
        for argv in commands.values():  # warm the page cache and write bytecode
            _timed(argv, env)
        samples = interleaved(
            rounds,
            {name: (lambda argv=argv: [_timed(argv, env)]) for name, argv in commands.items()},
        )
        probe = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
        )
    bare = median(samples["bare python"])
    modules = next(
        json.loads(line.removeprefix("MODULES "))
        for line in probe.stderr.splitlines()
        if line.startswith("MODULES ")
    )
    return {
        "rounds": rounds,
        "bare_python_ms": round(bare * 1000, 1),
        **{
            f"{name} ms (net)": round((median(s) - bare) * 1000, 1)
            for name, s in samples.items()
            if name != "bare python"
        },
        "optional modules a piped chat imported": modules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(json.dumps(run(args.rounds), indent=2))


if __name__ == "__main__":
    main()
