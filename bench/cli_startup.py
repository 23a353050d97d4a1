"""Start-up of the ``moodlemate-ai`` command: fresh processes, medians over interleaved rounds.

    python bench/cli_startup.py [--rounds N] [--baseline GIT_REF]

Measures ``moodlemate-ai --version`` and a piped ``moodlemate-ai chat`` against the project's
test server (in this process, on 127.0.0.1), each net of a bare ``python -c pass``, and says
which optional display libraries (rich, argcomplete) the piped chat imported: none should be.
With ``--baseline``, the core package's source at that commit runs the same commands in the
same interleaved rounds (the other packages as installed), and each row gets a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import interleaved, median

RUNNER = "import sys; from moodlemate.ai.cli import main; sys.exit(main())"
HERE = Path(__file__).resolve().parent
PROBE = (
    "import runpy, sys, atexit, json\n"
    "atexit.register(lambda: sys.stderr.write('MODULES ' + json.dumps(sorted(m for m in "
    "('rich', 'argcomplete', 'keyring', 'openai', 'tiktoken') if m in sys.modules)) + '\\n'))\n"
    "sys.argv = ['moodlemate-ai', 'chat', 'hi']\n"
    "from moodlemate.ai.cli import main\n"
    "sys.exit(main())\n"
)


def _baseline_source(ref: str, into: str) -> str:
    """The core package's ``src`` directory as it was at ``ref``, exported into ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", ref, "packages/core/src"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return f"{into}/packages/core/src"


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def run(rounds: int, baseline: str | None = None) -> dict[str, object]:
    from moodlemate.testing import LoopbackServer

    with (
        LoopbackServer() as server,
        tempfile.TemporaryDirectory() as home,
        tempfile.TemporaryDirectory() as old,
    ):
        env = {
            **os.environ,
            "MOODLEMATE_ENDPOINT": server.url,
            "XDG_CONFIG_HOME": f"{home}/config",
            "XDG_DATA_HOME": f"{home}/data",
        }
        sides = {"ours": env}
        if baseline is not None:
            source = _baseline_source(baseline, old)
            sides[baseline] = {**env, "PYTHONPATH": source}
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "bare python": ([sys.executable, "-c", "pass"], env)
        }
        for side, side_env in sides.items():
            for what, args in (("--version", ["--version"]), ("chat (piped)", ["chat", "hi"])):
                argv = [sys.executable, "-c", RUNNER, *args]
                commands[f"moodlemate-ai {what} [{side}]"] = (argv, side_env)
        for argv, side_env in commands.values():  # warm the page cache and write bytecode
            _timed(argv, side_env)
        samples = interleaved(
            rounds,
            {
                name: (lambda argv=argv, e=e: [_timed(argv, e)])
                for name, (argv, e) in commands.items()
            },
        )
        probe = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
        )
    bare = median(samples["bare python"])
    net = {name: (median(s) - bare) * 1000 for name, s in samples.items() if name != "bare python"}
    modules = next(
        json.loads(line.removeprefix("MODULES "))
        for line in probe.stderr.splitlines()
        if line.startswith("MODULES ")
    )
    result: dict[str, object] = {"rounds": rounds, "bare_python_ms": round(bare * 1000, 1)}
    result.update({f"{name} ms (net)": round(ms, 1) for name, ms in net.items()})
    if baseline is not None:
        for what in ("--version", "chat (piped)"):
            ours, theirs = (
                net[f"moodlemate-ai {what} [ours]"],
                net[f"moodlemate-ai {what} [{baseline}]"],
            )
            result[f"{what} ours/{baseline}"] = round(ours / theirs, 3)
    result["optional modules a piped chat imported"] = modules
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline", metavar="GIT_REF", help="compare with core at this commit")
    args = parser.parse_args()
    print(json.dumps(run(args.rounds, args.baseline), indent=2))


if __name__ == "__main__":
    main()
