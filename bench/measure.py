"""Rows of the report, their targets, and the statistics behind them."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile: p99 of 1,000 samples is the 990th smallest."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def interleaved(rounds: int, contenders: dict[str, Callable[[], list[T]]]) -> dict[str, list[T]]:
    """Run each contender once per round, alternating who goes first, and pool the samples.

    Alternating the order cancels drift (CPU frequency, a neighbour's load) between the two.
    """
    pooled: dict[str, list[T]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            gc.collect()
            pooled[name].extend(contenders[name]())
    return pooled


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Seconds each of ``repeat`` calls of ``fn`` took."""
    clock = time.perf_counter
    samples = []
    for _ in range(repeat):
        start = clock()
        fn()
        samples.append(clock() - start)
    return samples


def timed_cpu(fn: Callable[[], object], repeat: int, cpu: list[float]) -> list[float]:
    """:func:`timed`, also appending this process's CPU seconds per call to ``cpu``: what a
    loaded machine moves least (waiting for a core takes wall time, not CPU time)."""
    start = time.process_time()
    samples = timed(fn, repeat)
    cpu.append((time.process_time() - start) / repeat)
    return samples


@dataclass(frozen=True)
class Target:
    """What a row must show: ``kind`` is one of ratio<=, ratio>=, ours<=, delta<=, check."""

    kind: str
    limit: float = 0.0

    def describe(self, unit: str) -> str:
        if self.kind == "ratio<=":
            return f"<= {self.limit:g}x"
        if self.kind == "ratio>=":
            return f">= {self.limit:g}x"
        if self.kind == "ours<=":
            return f"ours <= {self.limit:g} {unit}"
        if self.kind == "delta<=":
            return f"ours <= raw + {self.limit:g} {unit}"
        return "yes"

    def met(self, ours: float | None, raw: float | None, ok: bool | None) -> bool | None:
        if self.kind == "check":
            return ok
        if ours is None:
            return None
        if self.kind == "ours<=":
            return ours <= self.limit
        if raw is None:
            return None
        if self.kind == "delta<=":
            return ours - raw <= self.limit
        ratio = ours / raw
        return ratio <= self.limit if self.kind == "ratio<=" else ratio >= self.limit


@dataclass
class Row:
    section: str
    metric: str
    unit: str
    ours: float | None = None
    raw: float | None = None
    target: Target | None = None
    ok: bool | None = None
    """For check rows: whether the check held."""
    shown: str | None = None
    """Text shown instead of the numbers (a check's finding, "n/a (not available)")."""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.raw is None or self.raw == 0:
            return None
        return self.ours / self.raw

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info" if self.shown is None else "n/a"
        met = self.target.met(self.ours, self.raw, self.ok)
        if met is None:
            return "n/a"
        return "PASS" if met else "MISS"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = self.target.describe(self.unit) if self.target else None
        data["ratio"] = self.ratio
        data["verdict"] = self.verdict
        return data


def not_available(section: str, metric: str, unit: str, target: Target, why: str) -> Row:
    return Row(section, metric, unit, target=target, shown=f"n/a ({why})")
