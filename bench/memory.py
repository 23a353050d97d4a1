"""Peak resident memory of a fresh process making N chat completions.

Run as a script, it is that process: ``python bench/memory.py ours|raw URL N`` prints its
peak RSS in MB. On Linux that is VmHWM from /proc/self/status, not ru_maxrss: Linux carries
ru_maxrss across fork and exec, so a child of the (large) benchmark process would report the
parent's size instead of its own.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from measure import Row, Target, interleaved, median

KEY = "sk-bench-0000000000000000"


def _child(kind: str, url: str, calls: int) -> None:
    from payloads import MODEL, SYSTEM, TEMPERATURE, USER

    if kind == "ours":
        from moodlemate.ai import GPT

        gpt = GPT(endpoint=url, api_key=KEY)
        for _ in range(calls):
            gpt.chat_completion(MODEL, SYSTEM, USER, TEMPERATURE)
    else:
        import openai

        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
        for _ in range(calls):
            client.chat.completions.create(model=MODEL, messages=messages, temperature=TEMPERATURE)
    print(peak_rss_mb())


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def _peak(kind: str, url: str, calls: int) -> list[float]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), kind, url, str(calls)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [float(out.strip().splitlines()[-1])]


def run(url: str, rounds: int, calls: int, server_kind: str) -> list[Row]:
    samples = interleaved(
        rounds,
        {
            "ours": lambda: _peak("ours", url, calls),
            "raw": lambda: _peak("raw", url, calls),
        },
    )
    return [
        Row(
            "peak memory (fresh process, peak RSS)",
            f"after {calls:,} sequential chat completions",
            "MB",
            median(samples["ours"]),
            median(samples["raw"]),
            Target("delta<=", 15),
            detail={"rounds": rounds, "server": server_kind},
        )
    ]


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
