"""``tune-latency``: keep float wherever int8 is measured to be slower on onnxruntime.

int8 is not free: every boundary between int8 and float regions costs a Quantize/Dequantize pass
over the tensor, and some int8 kernels (depthwise convolutions, ops without QLinear kernels such as
HardSwish) are not faster than their float versions. A MobileNetV3-style net can come out slower
than fp32. This pass measures instead of guessing:

1. time the float model and the fully planned int8 model (interleaved runs, same inputs);
2. for each class of quantized nodes (depthwise Conv, activations without int8 kernels,
   element-wise Add/Mul, pooling, data movement, Conv, MatMul/Gemm), time the current plan with
   that class kept float and accept the change when it is faster by at least ``min_gain``;
3. if the best plan is still slower than float, keep the whole model float.

Every decision (class, nodes, both medians) is recorded in ``ctx.artifacts["latency_decisions"]``
and the nodes kept float carry the measurement as their reason. Runs use ``threads`` intra-op
threads (1 by default: timings at 2 threads swing too much on small machines) and stay within
``budget_s`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxq import ir
from onnxq.errors import ConfigError
from onnxq.ir import Model, Node
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass
from onnxq.runtime.bench import auto_runs, bench_sessions
from onnxq.runtime.session import make_session

from ._plan import QuantPlan
from .annotate import build_plan
from .insert_qdq import materialize

__all__ = ["TuneLatency", "TuneLatencyConfig", "NODE_CLASSES"]

log = logging.getLogger(__name__)


def _is_depthwise(node: Node) -> bool:
    if node.op != "Conv":
        return False
    group = int(node.attrs.get("group", 1))
    w = ir.constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    return group > 1 and w is not None and w.shape[1] == 1


#: Node classes tried in order (most likely to lose first). Each is a predicate on a node.
NODE_CLASSES: dict[str, Callable[[Node], bool]] = {
    "depthwise Conv": _is_depthwise,
    "activations without int8 kernels (HardSigmoid/HardSwish/Clip/ReduceMean)": lambda n: n.op in ("HardSigmoid", "HardSwish", "Clip", "ReduceMean"),
    "element-wise Add/Mul": lambda n: n.op in ("Add", "Mul"),
    "pooling": lambda n: n.op in ("AveragePool", "GlobalAveragePool", "MaxPool"),
    "data movement (Concat/Resize/Reshape/Transpose/Slice/...)": lambda n: n.op
    in ("Concat", "Resize", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Pad", "Gather"),
    "Sigmoid/Softmax/LeakyRelu/Relu": lambda n: n.op in ("Sigmoid", "Softmax", "LeakyRelu", "Relu", "Where"),
    "Conv/ConvTranspose": lambda n: n.op in ("Conv", "ConvTranspose") and not _is_depthwise(n),
    "MatMul/Gemm": lambda n: n.op in ("MatMul", "Gemm"),
}


@dataclass(frozen=True)
class TuneLatencyConfig(PassConfig):
    """Options of ``tune-latency``: threads for timing, time budget, required gain."""

    threads: int = 1
    budget_s: float = 30.0
    min_gain: float = 0.03

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threads < 0 or self.budget_s <= 0 or not 0 <= self.min_gain < 1:
            raise ConfigError("tune-latency: threads >= 0, budget_s > 0 and 0 <= min_gain < 1 required")


def _first_sample(data: Any) -> Mapping[str, np.ndarray] | None:
    if data is None:
        return None
    if isinstance(data, (list, tuple)):
        return data[0] if data else None
    try:
        return next(iter(data), None)
    except TypeError:
        return None


class _Timer:
    """Builds sessions for candidate plans and times them against each other."""

    def __init__(self, model: Model, ranges: Mapping[str, Any], cfg: Any, feeds: Mapping[str, np.ndarray], threads: int, deadline: float) -> None:
        self.model = model
        self.ranges = dict(ranges)
        self.cfg = cfg
        self.feeds = feeds
        self.threads = threads
        self.deadline = deadline
        self.float_session = make_session(model, threads=threads, where=f"{model.source} (float)")
        self.runs = 20

    def session_for(self, forced: dict[str, str]) -> tuple[Any, QuantPlan]:
        plan = build_plan(self.model, self.ranges, self.cfg, forced)
        variant = ir.clone(self.model)
        materialize(variant, plan, self.ranges)
        ir.normalize(variant)
        return make_session(variant, threads=self.threads, where=f"{self.model.source} (int8 candidate)"), plan

    def calibrate_runs(self, sessions: list[Any]) -> None:
        start = time.perf_counter()
        bench_sessions(sessions, [self.feeds], runs=2, warmup=1)
        per_run = (time.perf_counter() - start) / (3 * len(sessions))
        remaining = max(self.deadline - time.perf_counter(), 1.0)
        # Spend about a tenth of the remaining budget on each comparison.
        self.runs = auto_runs(per_run, remaining / 10, models=len(sessions), minimum=7, maximum=100)

    def compare(self, sessions: list[Any]) -> list[float]:
        return [t.median_ms for t in bench_sessions(sessions, [self.feeds], runs=self.runs, warmup=2)]

    def out_of_time(self) -> bool:
        return time.perf_counter() > self.deadline


@register_pass("tune-latency")
class TuneLatency(Pass):
    """Measure int8 vs float on onnxruntime per node class and keep float where int8 is slower."""

    Config = TuneLatencyConfig
    changes_structure = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        plan: QuantPlan | None = ctx.artifacts.get("quant_plan")
        cfg = ctx.artifacts.get("quant_config")
        ranges = ctx.artifacts.get("ranges")
        feeds = _first_sample(ctx.artifacts.get("calibration_data"))
        if plan is None or cfg is None or ranges is None:
            return PassResult(model, False, {"skipped": "no quantization plan"})
        if feeds is None:
            ctx.artifacts.setdefault("notes", []).append("latency tuning skipped: no sample inputs (ranges given without data)")
            return PassResult(model, False, {"skipped": "no sample inputs"})
        if not plan.quantized_nodes:
            return PassResult(model, False, {"skipped": "nothing quantized"})
        timer = _Timer(model, ranges, cfg, feeds, self.config.threads, time.perf_counter() + self.config.budget_s)
        forced: dict[str, str] = {}
        current, current_plan = timer.session_for(forced)
        timer.calibrate_runs([timer.float_session, current])
        t_float, t_current = timer.compare([timer.float_session, current])
        decisions: list[dict[str, Any]] = [{"step": "full plan", "int8_ms": round(t_current, 4), "float_ms": round(t_float, 4)}]
        node_of = {n.name: n for n in ir.iter_nodes(model.graph)}
        for label, predicate in NODE_CLASSES.items():
            members = [n for n in current_plan.quantized_nodes if predicate(node_of[n])]
            if not members or timer.out_of_time():
                continue
            trial_forced = {**forced, **{n: f"kept float: int8 {label} measured slower" for n in members}}
            trial, trial_plan = timer.session_for(trial_forced)
            if not trial_plan.quantized_nodes:
                continue
            t_cur, t_trial = timer.compare([current, trial])
            accepted = t_trial < t_cur * (1 - self.config.min_gain)
            decisions.append({"step": f"keep {label} float", "nodes": len(members), "with_ms": round(t_cur, 4), "without_ms": round(t_trial, 4), "accepted": accepted})
            if accepted:
                for n in members:
                    trial_forced[n] = f"kept float: int8 {label} measured slower ({t_cur:.3f} ms with, {t_trial:.3f} ms without)"
                forced, current, current_plan = trial_forced, trial, trial_plan
        t_float, t_final = timer.compare([timer.float_session, current])
        if t_final >= t_float:
            reason = f"kept float: int8 measured slower than float on this model ({t_final:.3f} ms vs {t_float:.3f} ms)"
            forced = {n: reason for n in current_plan.quantized_nodes} | forced
            current_plan = build_plan(model, dict(ranges), cfg, forced)
            decisions.append({"step": "whole model float", "int8_ms": round(t_final, 4), "float_ms": round(t_float, 4), "accepted": True})
        else:
            decisions.append({"step": "final", "int8_ms": round(t_final, 4), "float_ms": round(t_float, 4), "speedup": round(t_float / t_final, 3)})
        ctx.artifacts["quant_plan"] = current_plan
        ctx.artifacts["latency_decisions"] = {"threads": self.config.threads, "runs": timer.runs, "steps": decisions}
        kept_float = sum(1 for d in current_plan.float_nodes() if d.reason.startswith("kept float: int8"))
        return PassResult(model, False, {"float_by_latency": kept_float, "steps": len(decisions)})
