"""Benchmark moodlemate-ai against the raw openai SDK and raw tiktoken, in one run.

    python bench/run.py            # full run (about three minutes on 2 cores)
    python bench/run.py --quick    # a smoke run (about half a minute)

Every figure is a median over interleaved rounds, with ours and raw alternating who goes
first. The table is printed and written to bench/results/latest.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import calls
import counting
import first_byte
import imports
import memory
import report
import servers
from measure import Row

HERE = Path(__file__).resolve().parent
SECTIONS = (
    "import",
    "tokens",
    "latency",
    "parts",
    "async",
    "threads",
    "stream",
    "memory",
    "cli",
)
SHARED_TIKTOKEN_CACHE = HERE.parent.parent / "shared" / "tiktoken-cache"

# Many short rounds rather than a few long ones: neighbours' load on a shared machine comes
# and goes within seconds, and alternating often spreads it evenly over both sides.
FULL = {
    "rounds": 30,
    "calls": 50,
    "streams": 10,
    "token_rounds": 15,
    "async_rounds": 6,
    "async_requests": 1024,
    "import_rounds": 15,
    "memory_rounds": 3,
    "memory_calls": 500,
    "retry_repeat": 20000,
}
QUICK = {
    "rounds": 8,
    "calls": 30,
    "streams": 5,
    "token_rounds": 5,
    "async_rounds": 2,
    "async_requests": 512,
    "import_rounds": 5,
    "memory_rounds": 1,
    "memory_calls": 200,
    "retry_repeat": 5000,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds of sequential calls/streams")
    parser.add_argument("--import-rounds", type=int, help="fresh processes per import variant")
    parser.add_argument("--calls", type=int, help="sequential calls per round and side")
    parser.add_argument("--token-rounds", type=int, help="interleaved rounds of token counting")
    parser.add_argument("--async-rounds", type=int, help="interleaved rounds of async throughput")
    parser.add_argument("--async-requests", type=int, help="async requests per round and side")
    parser.add_argument("--streams", type=int, help="whole streams per round and side")
    parser.add_argument("--memory-rounds", type=int, help="fresh processes per side")
    parser.add_argument("--memory-calls", type=int, help="calls each memory process makes")
    parser.add_argument("--retry-repeat", type=int, help="calls timed for the retry overhead row")
    parser.add_argument(
        "--no-nginx",
        action="store_true",
        help="use the project's LoopbackServer even if nginx is installed",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=HERE / "results",
        help="where latest.md and latest.json go (default: bench/results)",
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    return args


def nginx_version() -> str | None:
    binary = servers.find_nginx()
    if binary is None:
        return None
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().split("/")[-1] or None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "TIKTOKEN_CACHE_DIR" not in os.environ and SHARED_TIKTOKEN_CACHE.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED_TIKTOKEN_CACHE)
    rows: list[Row] = []
    notes: list[str] = []
    failed: list[str] = []
    started = time.perf_counter()
    load = report.load_average()

    def step(name: str, fn: Callable[[], list[Row]]) -> None:
        if name not in args.only:
            return
        print(f"... {name}", file=sys.stderr, flush=True)
        try:
            rows.extend(fn())
        except Exception as exc:  # one broken section must not hide the others' figures
            traceback.print_exc()
            rows.append(Row(name, "failed", "", shown=f"error: {type(exc).__name__}"))
            notes.append(f"section {name!r} failed: {type(exc).__name__}: {exc}"[:300])
            failed.append(name)

    step("import", lambda: imports.run(args.import_rounds))
    step(
        "tokens",
        lambda: [*counting.run(args.token_rounds), *counting.first_count(args.import_rounds)],
    )
    needs_server = {"latency", "parts", "async", "threads", "stream", "memory", "cli"} & set(
        args.only
    )
    server_kind = "none"
    if needs_server:
        with servers.reference_server(force_loopback=args.no_nginx) as server:
            server_kind = server.kind
            if server.note:
                notes.append(server.note)
            step(
                "latency",
                lambda: [
                    *calls.sequential(server, args.rounds, args.calls),
                    calls.retry_overhead(args.retry_repeat),
                ],
            )
            step("parts", lambda: calls.image_part(server, args.rounds, args.calls))
            step("async", lambda: calls.concurrent(server, args.async_rounds, args.async_requests))
            step("threads", lambda: calls.threaded(server, args.async_rounds, args.calls))
            step("stream", lambda: calls.streaming(server, args.rounds, args.streams))
            step(
                "memory",
                lambda: memory.run(server.url, args.memory_rounds, args.memory_calls, server.kind),
            )
            step("cli", lambda: first_byte.run(server.url, args.import_rounds, server.kind))
    elapsed = time.perf_counter() - started
    notes.append(f"whole run took {elapsed:.0f} s")
    info = report.machine(server_kind, nginx_version() if server_kind == "nginx" else None, load)
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    print()
    print(report.text_table(rows))
    print(report.summary(info))
    for note in notes:
        print(f"note: {note}")
    md, js = report.write(args.results, rows, info, notes, command)
    print(f"\nwritten: {md} and {js.name}", flush=True)
    return 1 if failed or any(r.verdict == "MISS" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
