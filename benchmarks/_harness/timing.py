"""Interleaved latency of several models on the same input at the same thread count.

The machines are shared and noisy, so all contenders of one model are timed in *one* run,
round-robin with a rotating start (``onnxq.runtime.bench.bench_sessions``: round ``r`` runs
models ``r, r+1, ..., r-1`` mod n), and only medians from that same run are compared.

How many runs each model gets is a :class:`RunPlan`, decided from a short probe:

=========  ====================================================================================  ===========
rule       runs                                                                                  used by
=========  ====================================================================================  ===========
fastest    the fastest model gets ``budget_s``: ``ceil(budget / min t)`` (t: median of 3 warm     bench_static
           runs of each model)
round      one round of all models fits ``budget_s`` ``budget / sum t`` (t: one warm run each)   bench_dynamic
share      the models share ``budget_s`` ``budget / (t0 * n)`` (t0: one run of the first model)  bench_pruning
=========  ====================================================================================  ===========

always clamped to ``min_runs..max_runs``; ``fixed > 0`` skips the probe. ``drift_pct`` (the gap between
the medians of the first and the second half of the runs) flags an unstable measurement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import onnxq_api
from .report import one_line, progress

__all__ = ["RunPlan", "TimingSpec", "drift_pct", "interleaved", "load_ms", "time_contenders"]

RULES = ("fastest", "round", "share")


@dataclass(frozen=True)
class RunPlan:
    """How many interleaved runs each model gets (see the module docstring)."""

    budget_s: float
    min_runs: int
    max_runs: int
    rule: str = "fastest"
    fixed: int = 0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"run plan rule must be one of {', '.join(RULES)}, got {self.rule!r}")

    def runs(self, probe_s: Sequence[float], models: int) -> int:
        """Runs per model from the probe times (seconds) of :meth:`probe`."""
        if self.fixed > 0:
            return self.fixed
        if self.rule == "fastest":
            wanted: float = math.ceil(self.budget_s / max(min(probe_s), 1e-6))
        elif self.rule == "round":
            wanted = self.budget_s / max(sum(probe_s), 1e-6)
        else:
            if probe_s[0] <= 0:
                return self.max_runs
            wanted = self.budget_s / (probe_s[0] * max(models, 1))
        return int(np.clip(wanted, self.min_runs, self.max_runs))

    def probe(self, sessions: Sequence[Any], feed: Mapping[str, np.ndarray]) -> list[float]:
        """Seconds per run for the rule: each model's (warm) run time, or the first model's."""
        if self.fixed > 0:
            return []
        if self.rule == "share":
            start = time.perf_counter()
            onnxq_api.run_session(sessions[0], feed)
            return [time.perf_counter() - start]
        repeats = 3 if self.rule == "fastest" else 1
        out = []
        for sess in sessions:
            onnxq_api.run_session(sess, feed)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                onnxq_api.run_session(sess, feed)
                times.append(time.perf_counter() - start)
            out.append(float(np.median(times)))
        return out


@dataclass(frozen=True)
class TimingSpec:
    """Thread counts to time, the run plan and warm-up rounds; ``reuse_sessions``: time at the
    evaluation's thread count with the sessions the evaluation opened (else fresh ones)."""

    threads: Sequence[int]
    plan: RunPlan
    warmup: int
    reuse_sessions: bool = False


def drift_pct(samples_ms: Sequence[float], median_ms: float) -> float | None:
    """Relative gap (%) between the medians of the first and the second half of the runs."""
    half = len(samples_ms) // 2
    if half < 2 or not median_ms:
        return None
    a, b = np.median(samples_ms[:half]), np.median(samples_ms[half:])
    return round(float(abs(a - b) / median_ms * 100), 2)


def interleaved(sessions: Mapping[str, Any], feed: Mapping[str, np.ndarray], plan: RunPlan, warmup: int, label: str = "") -> dict[str, dict[str, Any]]:
    """Medians of every session on ``feed``, timed interleaved in one run: name -> timing dict."""
    names = list(sessions)
    listed = [sessions[n] for n in names]
    runs = plan.runs(plan.probe(listed, feed), len(listed))
    progress(f"  timing {len(names)} models{label}: {runs} interleaved runs")
    timings = onnxq_api.bench_sessions(listed, feed, runs=runs, warmup=warmup)
    out = {}
    for name, t in zip(names, timings):
        entry = t.as_dict()
        drift = drift_pct(t.samples_ms, t.median_ms)
        if drift is not None:
            entry["drift_pct"] = drift
        out[name] = entry
    return out


def time_contenders(models: Mapping[str, Any], feed: Mapping[str, np.ndarray], spec: TimingSpec, *,
                    sessions: dict[str, Any] | None = None, session_threads: int = 1) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, str]]:
    """Interleaved timing of ``models`` (name -> path or model) at each of ``spec.threads``.

    ``sessions`` (opened at ``session_threads``) are reused at that thread count when
    ``spec.reuse_sessions`` (and taken out of the dict); otherwise every thread count gets fresh
    sessions, freed after it. ``models`` values are only read for fresh sessions.

    Returns:
        ``(latency, errors)``: name -> {threads: timing dict}, and thread count -> why it failed.
    """
    latency: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in models}
    errors: dict[str, str] = {}
    for threads in spec.threads:
        current: dict[str, Any] = {}
        try:
            if spec.reuse_sessions and sessions and threads == session_threads:
                current = dict(sessions)
                sessions.clear()  # handed over: freed after this thread count, before the next opens its own
            else:
                current = {n: onnxq_api.make_session(m, threads=threads) for n, m in models.items()}
            timed = interleaved(current, feed, spec.plan, spec.warmup, f" at {threads} thread(s)")
        except Exception as e:  # noqa: BLE001 - one thread count failing keeps the others
            errors[str(threads)] = one_line(e)
            continue
        finally:
            del current
        for name, entry in timed.items():
            latency[name][str(threads)] = entry
    return latency, errors


def load_ms(openers: Mapping[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time (ms) of each opener (session creation, ``compile_model``), interleaved.

    Round ``r`` opens every model once, in the same rotating order as the latency runs, so noise from
    the shared machine falls on all of them alike; each opened session is dropped before the next
    opens (only one model's memory is held at a time).
    """
    names = list(openers)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(max(repeats, 1)):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            start = time.perf_counter()
            opened = openers[name]()
            samples[name].append((time.perf_counter() - start) * 1e3)
            del opened
    return {n: float(np.median(v)) for n, v in samples.items()}
