"""``measure-fixed-point``: what rounding every scale to a power of two costs, measured before insert-qdq.

Fixed-point scales (``power_of_two_scales``) let an integer-only NPU or DSP requantize by a shift:
with ``s_x``, ``s_w`` and ``s_y`` all powers of two, ``s_x·s_w / s_y = 2^-n``. Every scale is rounded
*up* (:func:`onnxq.calibration.qparams.power_of_two_ceil`), so no value clips that did not clip
before, but each tensor's grid gets up to twice as coarse (up to one bit lost; on average
``log2(s'/s)`` ≈ half a bit). Whether a model can afford that is a measurement, not a rule:

1. the final plan (after tuning) is materialized twice on copies of the model, once with exact
   scales and once with power-of-two scales;
2. both, and the float model, run on the first ``eval_samples`` calibration samples on ``runtime``;
3. each output's accuracy guard (:func:`onnxq.metrics.choose_guards`: top-1 agreement, cosine, ...)
   is read for both, and how far the scales moved (median and largest ``s'/s`` over activations).

The numbers go to the pass's stats and one sentence of the report's notes. The model is unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from onnxq import ir
from onnxq.errors import ConfigError
from onnxq.ir import Model
from onnxq.metrics import GuardSet, choose_guards
from onnxq.pass_base import Pass, PassContext, PassResult, register_pass
from onnxq.plan import AccuracyGuardConfig, QuantPlan
from onnxq.runtime.backends import make_runtime_session, runtime_names

from .insert_qdq import activation_qparams, materialize

__all__ = ["MeasureFixedPoint", "MeasureFixedPointConfig"]


@dataclass(frozen=True)
class MeasureFixedPointConfig(AccuracyGuardConfig):
    """Options (the accuracy guard's metrics and samples, and where to run).

    Attributes:
        runtime: where the three models run (:data:`onnxq.runtime.backends.RUNTIMES`).
        threads: intra-op threads.
    """

    runtime: str = "onnxruntime"
    threads: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.runtime not in runtime_names():
            raise ConfigError(f"measure-fixed-point: unknown runtime '{self.runtime}'; valid: {', '.join(runtime_names())}")


def scale_ratios(plan: QuantPlan, ranges: Mapping[str, Any]) -> np.ndarray:
    """``s'/s`` of every planned activation: its power-of-two scale over its exact one."""
    exact = activation_qparams(dataclasses.replace(plan, power_of_two=False), ranges)
    rounded = activation_qparams(dataclasses.replace(plan, power_of_two=True), ranges)
    return np.asarray([float(rounded[n].scale) / float(exact[n].scale) for n in sorted(exact)], np.float64)


@register_pass("measure-fixed-point")
class MeasureFixedPoint(Pass[MeasureFixedPointConfig]):
    """Measure the accuracy cost of power-of-two scales against exact scales (reads the plan; changes nothing)."""

    changes_structure = False
    reads = ("plan", "ranges")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        plan, ranges = ctx.plan, ctx.ranges
        if plan is None or ranges is None or not plan.activations:
            return PassResult(model, False, {"skipped": "nothing quantized"})
        ratios = scale_ratios(plan, ranges)
        stats: dict[str, Any] = {
            "scales": int(ratios.size),
            "median_scale_ratio": round(float(np.median(ratios)), 4),
            "max_scale_ratio": round(float(ratios.max()), 4),
        }
        samples = list(islice(ctx.calibration_data, self.config.eval_samples)) if ctx.calibration_data is not None else []
        if not samples:
            ctx.note("power-of-two scales: accuracy impact not measured (no samples; give --data)")
            return PassResult(model, False, stats)
        readings = self._readings(model, plan, ranges, samples)
        stats["exact"], stats["power_of_two"] = dict(readings["exact"]), dict(readings["power_of_two"])
        impact = ", ".join(f"{k} {readings['power_of_two'][k]:g} (exact scales {readings['exact'][k]:g})" for k in readings["exact"])
        grew = f"x{stats['median_scale_ratio']:g} median, x{stats['max_scale_ratio']:g} max"
        ctx.note(f"power-of-two scales on {self.config.runtime}: {impact}; scales grew by {grew}")
        return PassResult(model, False, stats)

    def _readings(self, model: Model, plan: QuantPlan, ranges: Mapping[str, Any], samples: list[Mapping[str, np.ndarray]]) -> dict[str, dict[str, float]]:
        cfg = self.config
        guards = GuardSet(
            choose_guards(model, cfg.accuracy_metric, min_agreement=cfg.min_agreement, min_cosine=cfg.min_cosine, ranges=ranges),
            min_agreement=cfg.min_agreement,
            min_cosine=cfg.min_cosine,
        )
        float_session = make_runtime_session(model, cfg.runtime, threads=cfg.threads, where=f"{model.source} (float)")
        names = [o.name for o in float_session.get_outputs()]
        reference = [float_session.run(None, dict(s)) for s in samples]
        out: dict[str, dict[str, float]] = {}
        for label, pow2 in (("exact", False), ("power_of_two", True)):
            variant = ir.clone(model)
            materialize(variant, dataclasses.replace(plan, power_of_two=pow2), ranges)
            ir.normalize(variant)
            session = make_runtime_session(variant, cfg.runtime, threads=cfg.threads, where=f"{model.source} ({label} scales)")
            out[label] = dict(guards.read(names, ((ref, session.run(None, dict(s))) for s, ref in zip(samples, reference))))
        return out
