"""``prune-channels-search``: remove as many channels as the accuracy bound allows, or just enough
for a speed target, measured on onnxruntime; the first half of ``--recipe compact``.

Channel pruning is the only compression that makes a model faster on every CPU kernel (dense,
smaller convolutions), and int8 adds its own gain on top where the CPU has fast int8 kernels:
the ``compact`` recipe runs this pass, then the static int8 pipeline with its accuracy guard.

The search prunes fresh copies of the model at increasing ratios (:func:`.search.prune_until`,
L1-ranked channels rounded to multiples of ``round_to``) and stops at the first ratio whose
``metric`` against the unpruned model leaves ``tolerance``. Without ``min_speedup`` the largest
ratio within tolerance wins. With it, each accepted ratio is timed against the unpruned model
(interleaved medians, 1 thread by default) and the smallest ratio reaching the speedup wins — the
least accuracy spent for the speed asked; when none reaches it, the fastest accepted ratio, and
the stats say the target was missed. The accuracy bound is measured against this pass's input,
so a later int8 guard compares with the *pruned* float model: the report's notes say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from onnxq import ir
from onnxq.errors import ConfigError, PreconditionError
from onnxq.ir import Model
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, make_pass, register_pass
from onnxq.pass_manager import PassManager
from onnxq.runtime.bench import bench_sessions
from onnxq.runtime.session import make_session

from .search import METRICS, prune_until

__all__ = ["PruneChannelsSearchConfig", "PruneChannelsSearch"]


@dataclass(frozen=True)
class PruneChannelsSearchConfig(PassConfig):
    """Options of ``prune-channels-search``.

    Attributes:
        ratios: increasing channel ratios to try (fraction of each group's channels removed).
        metric: ``cosine``, ``sqnr`` or ``top1`` against the unpruned model (see :mod:`.search`).
        tolerance: allowed drop (``cosine``/``top1``: ``1 - tolerance`` is the floor; ``sqnr``: dB floor).
        min_speedup: stop at the smallest ratio at least this much faster than the unpruned model
            (0: no speed target, the largest ratio within tolerance).
        round_to: kept channel counts are multiples of this (onnxruntime blocks channels by 8).
        eval_samples: calibration samples the metric is read on.
        threads: onnxruntime threads for evaluation and timing.
        runs: timed runs per model when ``min_speedup`` is set.
        budget_s: seconds for the accuracy search (no new ratio starts past it; the stats say so).
    """

    ratios: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5)
    metric: str = "cosine"
    tolerance: float = 0.01
    min_speedup: float = 0.0
    round_to: int = 8
    eval_samples: int = 8
    threads: int = 1
    runs: int = 30
    budget_s: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        ratios = [float(r) for r in self.ratios]
        if not ratios or any(not (0 < r < 1) for r in ratios) or any(b <= a for a, b in zip(ratios, ratios[1:])):
            raise ConfigError(f"prune-channels-search: ratios must be increasing and in (0, 1), got {list(self.ratios)}")
        if self.metric not in METRICS or self.metric == "accuracy":
            raise ConfigError(f"prune-channels-search: metric must be one of cosine, sqnr, top1, got '{self.metric}'")
        if not math.isfinite(self.tolerance) or self.tolerance < 0 or self.min_speedup < 0 or self.eval_samples < 1 or self.runs < 1:
            raise ConfigError("prune-channels-search: tolerance >= 0, min_speedup >= 0, eval_samples >= 1 and runs >= 1 required")
        if self.budget_s is not None and not self.budget_s > 0:
            raise ConfigError(f"prune-channels-search: budget_s must be > 0 seconds, got {self.budget_s}")


@register_pass("prune-channels-search")
class PruneChannelsSearch(Pass[PruneChannelsSearchConfig]):
    """Prune channels as far as the accuracy bound allows (or just far enough for ``min_speedup``)."""

    reads = ("calibration_data",)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        cfg = self.config
        if ctx.calibration_data is None:
            raise PreconditionError("prune-channels-search needs calibration samples (--data)")
        feeds = list(islice(ctx.calibration_data, cfg.eval_samples))
        search = prune_until(
            model,
            lambda r: make_pass("prune-channels", {"ratio": r, "round_to": cfg.round_to}),
            cfg.ratios,
            feeds,
            metric=cfg.metric,
            tolerance=cfg.tolerance,
            threads=cfg.threads,
            budget_s=cfg.budget_s,
        )
        accepted = [c for c in search.curve if c["ok"] and c["modified"]]
        stats: dict[str, Any] = {
            "curve": [_curve_row(c) for c in search.curve], "metric": cfg.metric, "tolerance": cfg.tolerance,
            "search_seconds": round(search.seconds, 3), "search_cut_short": search.cut_short,
        }  # fmt: skip
        if not accepted or search.best_model is None:
            stats["ratio"] = 0.0
            stats["reason"] = _why_nothing(search.curve, cfg)
            return PassResult(model, False, stats)
        chosen = float(accepted[-1]["step"])
        if cfg.min_speedup > 0:
            chosen, speedups = _smallest_fast_enough(model, [float(c["step"]) for c in accepted], feeds, cfg)
            stats["speedups"] = {str(k): round(v, 4) for k, v in speedups.items()}
            stats["met_speedup"] = max(speedups.values()) >= cfg.min_speedup
        pruned = search.best_model if chosen == search.best_step else _prune(model, chosen, cfg)
        stats["ratio"] = chosen
        return PassResult(pruned, True, stats)


def _why_nothing(curve: list[dict[str, Any]], cfg: PruneChannelsSearchConfig) -> str:
    """One sentence: the first ratio out of tolerance, or that no ratio changed the model."""
    unchanged = [c["step"] for c in curve if c["ok"] and not c["modified"]]
    failed = next((c for c in curve if not c["ok"]), None)
    parts = [f"ratio {unchanged[-1]} removed no channel (counts rounded to multiples of {cfg.round_to})"] if unchanged else []
    if failed is not None:
        parts.append(f"ratio {failed['step']} left {cfg.metric} {float(failed['metric']):.4g}, out of tolerance {cfg.tolerance}")
    return "; ".join(parts) or "no channel group to prune"


def _curve_row(c: dict[str, Any]) -> dict[str, Any]:
    return {"ratio": c["step"], "metric": round(float(c["metric"]), 6), "ok": c["ok"], "params": c["params"]}


def _prune(model: Model, ratio: float, cfg: PruneChannelsSearchConfig) -> Model:
    return PassManager([make_pass("prune-channels", {"ratio": ratio, "round_to": cfg.round_to})]).run(ir.clone(model), PassContext()).model


def _smallest_fast_enough(
    model: Model, ratios: list[float], feeds: list[Mapping[str, np.ndarray]], cfg: PruneChannelsSearchConfig
) -> tuple[float, dict[float, float]]:
    """The smallest ratio whose pruned model is ``min_speedup`` faster (else the fastest), and every speedup."""
    base = make_session(model, threads=cfg.threads, where=f"{model.source} (unpruned)")
    speedups: dict[float, float] = {}
    for ratio in ratios:
        pruned = make_session(_prune(model, ratio, cfg), threads=cfg.threads, where=f"{model.source} (channels pruned {ratio})")
        t_base, t_pruned = bench_sessions([base, pruned], feeds[:1], runs=cfg.runs)
        speedups[ratio] = t_base.median_ms / max(t_pruned.median_ms, 1e-9)
        if speedups[ratio] >= cfg.min_speedup:
            return ratio, speedups
    return max(speedups, key=lambda r: speedups[r]), speedups
