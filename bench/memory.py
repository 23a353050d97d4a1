"""A fresh process making N chat completions: time to its first reply, and its peak memory.

Run as a script, it is that process: ``python bench/memory.py ours|raw URL N`` prints the
seconds from before the first import to the first reply, then its peak RSS in MB. On Linux
the peak is VmHWM from /proc/self/status, not ru_maxrss: Linux carries ru_maxrss across fork
and exec, so a child of the (large) benchmark process would report the parent's size.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KEY = "sk-bench-0000000000000000"
SECTION = "fresh process making sequential chat completions"


def _child(kind: str, url: str, calls: int) -> None:
    # Only the stdlib and payloads are imported before the clock starts, so each side pays
    # for everything it imports.
    from payloads import MODEL, SYSTEM, TEMPERATURE, USER

    start = time.perf_counter()
    first = replied_at = 0.0
    if kind == "ours":
        from moodlemate.ai import GPT

        gpt = GPT(endpoint=url, api_key=KEY)
        for _ in range(calls):
            gpt.chat_completion(MODEL, SYSTEM, USER, TEMPERATURE)
            first = first or time.perf_counter() - start
            replied_at = replied_at or time.time()
    else:
        import openai

        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
        messages: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
        for _ in range(calls):
            client.chat.completions.create(model=MODEL, messages=messages, temperature=TEMPERATURE)
            first = first or time.perf_counter() - start
            replied_at = replied_at or time.time()
    print(first)
    print(peak_rss_mb())
    print(replied_at)


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def _fresh(kind: str, url: str, calls: int) -> list[tuple[float, float, float]]:
    """(first reply as timed inside, peak RSS, process start to first reply by the clock
    outside: the interpreter's own start included)."""
    started = time.time()
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), kind, url, str(calls)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    first, peak, replied_at = out.split()[-3:]
    return [(float(first), float(peak), float(replied_at) - started)]


def run(url: str, rounds: int, calls: int, server_kind: str) -> list[Any]:
    from measure import Row, Target, interleaved, median

    samples = interleaved(
        rounds,
        {
            "ours": lambda: _fresh("ours", url, calls),
            "raw": lambda: _fresh("raw", url, calls),
        },
    )
    first = {side: median([f * 1000 for f, _, _ in s]) for side, s in samples.items()}
    peak = {side: median([p for _, p, _ in s]) for side, s in samples.items()}
    wall = {side: median([w * 1000 for _, _, w in s]) for side, s in samples.items()}
    detail = {"rounds": rounds, "calls": calls, "server": server_kind}
    return [
        Row(
            SECTION,
            "time to first reply (imports, client, first call)",
            "ms",
            first["ours"],
            first["raw"],
            detail=detail,
        ),
        Row(
            SECTION,
            "process start to first reply (wall clock, the interpreter's start included)",
            "ms",
            wall["ours"],
            wall["raw"],
            Target("ours<=", 200),
            detail=detail,
        ),
        Row(
            SECTION,
            f"peak RSS after {calls:,} calls",
            "MB",
            peak["ours"],
            peak["raw"],
            Target("delta<=", 15),
            detail=detail,
        ),
    ]


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
