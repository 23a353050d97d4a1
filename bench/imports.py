"""Cold import time, each sample a fresh interpreter, net of a bare ``python -c pass``."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from measure import Row, Target, interleaved, median

SECTION = "import (fresh process, net of bare Python)"
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


def _run(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


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
    bare = median(samples["bare"])
    net = {name: (median(s) - bare) * 1000 for name, s in samples.items()}
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
            "GPT() leaves openai, tiktoken unimported",
            "",
            target=Target("check"),
            ok=not {"openai", "tiktoken"} & set(heavy),
            shown="none imported" if not heavy else "imported: " + ", ".join(heavy),
        ),
    ]
