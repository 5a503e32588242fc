"""Latency measurement with interleaved runs.

Models are run round-robin (the starting model rotates each round), so a noisy neighbour, a
frequency change or a thermal drift hits every model alike; medians and p90 are reported, and
ratios are taken between medians measured in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .session import make_session

__all__ = ["Timing", "bench_sessions", "bench_models", "auto_runs"]


@dataclass
class Timing:
    """Latency statistics of one model (milliseconds)."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": round(self.median_ms, 4), "p90_ms": round(self.p90_ms, 4), "mean_ms": round(self.mean_ms, 4), "runs": self.runs}


def _timing(samples: list[float]) -> Timing:
    arr = np.asarray(samples) * 1000.0
    return Timing(float(np.median(arr)), float(np.percentile(arr, 90)), float(arr.mean()), len(samples), arr.tolist())


def bench_sessions(sessions: Sequence[Any], feeds: Sequence[Mapping[str, np.ndarray]], *, runs: int = 50, warmup: int = 5) -> list[Timing]:
    """Time each session on ``feeds[i]`` (one feed dict per session, or one shared), interleaved."""
    if len(feeds) == 1 and len(sessions) > 1:
        feeds = list(feeds) * len(sessions)
    prepared = []
    for sess, f in zip(sessions, feeds):
        names = {i.name for i in sess.get_inputs()}
        prepared.append({k: v for k, v in f.items() if k in names})
    for _ in range(warmup):
        for sess, f in zip(sessions, prepared):
            sess.run(None, f)
    times: list[list[float]] = [[] for _ in sessions]
    n = len(sessions)
    for r in range(runs):
        for k in range(n):
            i = (r + k) % n
            start = time.perf_counter()
            sessions[i].run(None, prepared[i])
            times[i].append(time.perf_counter() - start)
    return [_timing(t) for t in times]


def auto_runs(single_run_s: float, budget_s: float, *, models: int, minimum: int = 10, maximum: int = 200) -> int:
    """Runs per model so that ``models`` models fit in ``budget_s`` seconds."""
    if single_run_s <= 0:
        return maximum
    return int(np.clip(budget_s / (single_run_s * max(models, 1)), minimum, maximum))


def bench_models(models: Sequence[Any], feeds: Mapping[str, np.ndarray], *, threads: int = 1, runs: int = 50, warmup: int = 5) -> list[Timing]:
    """Create CPU sessions for ``models`` and time them interleaved on the same inputs."""
    sessions = [make_session(m, threads=threads) for m in models]
    return bench_sessions(sessions, [feeds], runs=runs, warmup=warmup)
