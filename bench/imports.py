"""Cold import time, each sample a fresh interpreter, net of a bare ``python -c pass``."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from measure import Row, Target, interleaved, median

SECTION = "cold import (fresh process; wall time net of a bare `python -c pass`)"
SNIPPETS = {
    "bare": "pass",
    "core": "import moodlemate.ai",
    "core+GPT()": "import moodlemate.ai; moodlemate.ai.GPT()",
    "openai": "import openai",
}
CHECK = (
    "import json, sys, moodlemate.ai; moodlemate.ai.GPT(); "
    "print(json.dumps(sorted(m for m in ('openai', 'tiktoken', 'httpx', 'httpx2', 'pydantic') "
    "if m in sys.modules)))"
)


def _run(code: str) -> tuple[float, float]:
    """Wall time of the whole process, and the time ``code`` took timed inside it."""
    timed_code = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", timed_code], check=True, capture_output=True, text=True
    ).stdout
    return time.perf_counter() - start, float(out)


def heavy_modules_after_gpt() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], check=True, capture_output=True, text=True
    ).stdout
    return list(json.loads(out))


def run(rounds: int) -> list[Row]:
    for code in SNIPPETS.values():  # warm the page cache and write bytecode
        _run(code)
    samples = interleaved(
        rounds, {name: (lambda code=code: [_run(code)]) for name, code in SNIPPETS.items()}
    )
    bare = median([wall for wall, _ in samples["bare"]])
    net = {name: (median([w for w, _ in s]) - bare) * 1000 for name, s in samples.items()}
    inside = {name: median([i for _, i in s]) * 1000 for name, s in samples.items()}
    detail = {"bare_python_ms": bare * 1000, "rounds": rounds}
    heavy = heavy_modules_after_gpt()
    return [
        Row(
            SECTION,
            "import moodlemate.ai (raw: import openai)",
            "ms",
            net["core"],
            net["openai"],
            Target("ours<=", 30),
            detail=detail,
        ),
        Row(
            SECTION,
            "import moodlemate.ai + GPT() (raw: import openai)",
            "ms",
            net["core+GPT()"],
            net["openai"],
            detail=detail,
        ),
        Row(
            SECTION,
            "the same, timed inside the process (steadier)",
            "ms",
            inside["core+GPT()"],
            inside["openai"],
            detail={"core_alone_ms": inside["core"], "rounds": rounds},
        ),
        Row(
            SECTION,
            "GPT() leaves openai, tiktoken unimported",
            "",
            target=Target("check"),
            ok=not {"openai", "tiktoken"} & set(heavy),
            shown="none imported" if not heavy else "imported: " + ", ".join(heavy),
        ),
    ]
