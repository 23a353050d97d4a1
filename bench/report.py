"""The printed table, and the same results as Markdown and JSON, with the machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from measure import Row

HEADER = ("metric", "ours", "raw", "ours/raw", "target", "verdict")


def summary(info: dict[str, Any]) -> str:
    keys = (
        "cpu",
        "cpus",
        "python",
        "openai",
        "tiktoken",
        "json parser",
        "server",
        "load average before the run",
    )
    return "machine: " + ", ".join(f"{k} {info[k]}" for k in keys if info.get(k) is not None)


def machine(server_kind: str, nginx_version: str | None, load: str | None) -> dict[str, Any]:
    def dist(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "moodlemate-ai": dist("moodlemate-ai"),
        "openai": dist("openai"),
        "tiktoken": dist("tiktoken"),
        "stamina": dist("stamina"),
        # orjson (the fast extra) when installed: it changes the stream rows most.
        "json parser": "orjson " + (dist("orjson") or "") if dist("orjson") else "json",
        "server": server_kind,
        "nginx": nginx_version,
        "commit": commit or None,
        # The machine may be shared: the load before the run says how quiet it was.
        "load average before the run": load,
    }


def load_average() -> str | None:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return None


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit in ("us", "req/s") and abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}".strip()


def cells(row: Row) -> tuple[str, ...]:
    ratio = row.ratio
    return (
        row.metric,
        row.shown if row.shown is not None else _number(row.ours, row.unit),
        "" if row.shown is not None else _number(row.raw, row.unit),
        f"{ratio:.3f}x" if ratio is not None and row.shown is None else "",
        row.target.describe(row.unit) if row.target else "",
        row.verdict,
    )


def text_table(rows: list[Row]) -> str:
    table = [HEADER, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    out: list[str] = []
    section = None
    for row, line in zip([None, *rows], table, strict=True):
        if row is not None and row.section != section:
            section = row.section
            out.append(f"\n{section}")
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    return "\n".join(out).lstrip("\n")


def markdown(rows: list[Row], info: dict[str, Any], notes: list[str], command: str) -> str:
    lines = [
        "# moodlemate-ai benchmark results",
        "",
        f"`{command}`, ratios are ours / raw measured in the same run.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(HEADER) - 1)) + " |",
    ]
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines.append(f"| **{section}** |" + " |" * (len(HEADER) - 1))
        lines.append("| " + " | ".join(cells(row)) + " |")
    lines += ["", "Machine:", ""]
    lines += [f"- {key}: {value}" for key, value in info.items() if value is not None]
    if notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def write(
    directory: Path, rows: list[Row], info: dict[str, Any], notes: list[str], command: str
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / "latest.md"
    js = directory / "latest.json"
    md.write_text(markdown(rows, info, notes, command))
    data = {
        "command": command,
        "machine": info,
        "notes": notes,
        "rows": [r.as_dict() for r in rows],
    }
    js.write_text(json.dumps(data, indent=2) + "\n")
    return md, js
