"""The code blocks of the README and the documentation site, as tests/test_docs.py runs them.

A block is a fenced ``python``, ``bash``, ``sh``, ``shell`` or ``console`` block (for
``console``, the lines after a ``$ `` prompt). It runs unless the line right before its fence
is ``<!-- docs: not-run (reason) -->``. Python blocks run as written; shell blocks run in
``bash -e`` with ``MOODLEMATE_ENDPOINT`` pointing at the test server, as in a shell where
the quick start's ``export`` was typed. Both run against ``moodlemate-ai serve`` on
127.0.0.1:8000, or on a free port when 8000 is taken: then ``127.0.0.1:8000`` and
``localhost:8000`` in the block are rewritten to that port before it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PORT = 8000
PYTHON = frozenset({"python", "py"})
SHELL = frozenset({"bash", "sh", "shell", "console"})
NOT_RUN = re.compile(r"^\s*<!-- docs: not-run \((?P<reason>.+)\) -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    source: str
    not_run: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def kind(self) -> str:
        return "python" if self.lang in PYTHON else "shell"

    def script(self, port: int) -> str:
        text = self.source
        if self.lang == "console":
            text = "\n".join(line[2:] for line in text.splitlines() if line.startswith("$ "))
        if port != DEFAULT_PORT:
            for host in ("127.0.0.1", "localhost"):
                text = text.replace(f"{host}:{DEFAULT_PORT}", f"127.0.0.1:{port}")
        return text


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every runnable-language block of one Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, lang = opening.group("indent"), opening.group("lang").lower()
        end = i + 1
        while end < len(lines) and not lines[end].startswith(f"{indent}```"):
            end += 1
        if lang in PYTHON | SHELL:
            body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
            marker = NOT_RUN.match(lines[i - 1]) if i > 0 else None
            reason = marker.group("reason") if marker else None
            found.append(Block(path, i + 1, lang, body + "\n", reason))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]
