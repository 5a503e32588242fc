"""tune-latency alone: the accuracy guard, the latency search and replay, on a hand-made context.

The model is a four-layer MLP (``x → mm1 → relu1 → … → mm4 [→ relu4] → y``); the context holds
ranges measured with onnxruntime on the calibration samples (or with ``x`` narrowed by hand to
±0.05 while the data spans about ±3, so that int8 clips almost every input of ``mm1``), the plan
annotate-quantization builds from them, and the samples as a list of feeds.

Accuracy decisions come from real onnxruntime runs (deterministic: same samples, same decisions).
Latency decisions are made against a fake timer: the pass's ``bench_sessions`` is replaced by a
cost model of each candidate plan, so no outcome depends on this machine's timing noise; one test
runs the real timer and checks only the shape of what it records.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import onnxq.passes.quantization.tune_latency as tl
from onnxq import ir
from onnxq.api.report import ConversionReport
from onnxq.calibration.ranges import RangeSet
from onnxq.context import PassContext, Skip
from onnxq.errors import ConfigError
from onnxq.pass_base import make_pass
from onnxq.pass_manager import PassManager
from onnxq.plan import QuantPlan
from onnxq.runtime.bench import Timing
from tests.helpers import run
from tests.passes.quantization._pass_util import annotate, load, measured_ranges, parse_with, range_set, run_pass, samples

MLP = """
<ir_version: 8, opset_import: ["" : 18]>
mlp (float[8,16] x) => (float[8,10] y) {{
  [mm1] h1 = MatMul (x, w1)
  [relu1] r1 = Relu (h1)
  [mm2] h2 = MatMul (r1, w2)
  [relu2] r2 = Relu (h2)
  [mm3] h3 = MatMul (r2, w3)
  [relu3] r3 = Relu (h3)
  {head}
}}
"""
#: "scores" ends in a MatMul (a class-score output: the guard reads top-1 agreement), "relu" in a
#: Relu (the guard reads cosine).
HEADS = {"scores": "[mm4] y = MatMul (r3, w4)", "relu": "[mm4] h4 = MatMul (r3, w4)\n  [relu4] y = Relu (h4)"}
WEIGHTS = {"w1": (16, 32), "w2": (32, 32), "w3": (32, 32), "w4": (32, 10)}
DATA = samples((8, 16), 8, seed=1)
MATMULS = ["mm1", "mm2", "mm3", "mm4"]
RELU_CLASS = "Sigmoid/Softmax/LeakyRelu/Relu"

Cost = Callable[[QuantPlan | None], float]


@functools.cache
def _proto(head: str) -> onnx.ModelProto:
    return parse_with(MLP.format(head=HEADS[head]), WEIGHTS)


@functools.cache
def _ranges(head: str, narrow: bool) -> RangeSet:
    measured = measured_ranges(_proto(head), DATA)
    return range_set({**measured, **({"x": (-0.05, 0.05)} if narrow else {})})


def _context(head: str = "relu", narrow: bool = False) -> tuple[ir.Model, PassContext]:
    """The model and a context with its ranges, annotate's plan and the calibration samples."""
    model = load(_proto(head))
    ctx = annotate(model, _ranges(head, narrow))
    ctx.calibration_data = DATA
    return model, ctx


def _plan(ctx: PassContext) -> QuantPlan:
    assert ctx.plan is not None
    return ctx.plan


def _kept(ctx: PassContext) -> dict[str, str]:
    """Nodes this pass kept float, with their reasons."""
    return {d.node: d.reason for d in _plan(ctx).float_nodes() if d.reason.startswith(tl.KEPT_FLOAT)}


def _steps(ctx: PassContext) -> list[dict[str, Any]]:
    assert ctx.tuning is not None
    return [s.as_dict() for s in ctx.tuning.steps]


def _materialized(model: ir.Model, ctx: PassContext) -> ir.Model:
    """A QDQ copy of ``model`` from the context's (tuned) plan; insert-qdq records the skips in ``ctx``."""
    return run_pass("insert-qdq", ir.clone(model), ctx).model


def _cosine(ref: list[np.ndarray], cand: list[np.ndarray]) -> float:
    r, c = np.concatenate([a.ravel() for a in ref]).astype(np.float64), np.concatenate([a.ravel() for a in cand]).astype(np.float64)
    return float(r @ c / np.sqrt((r @ r) * (c @ c)))


def _outputs(model: object, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    return [run(model, f)[0] for f in feeds]


def int8_twice_as_fast(plan: QuantPlan | None) -> float:
    """Every int8 candidate times the same (no glue class is worth floating), at half float's time."""
    return 10.0 if plan is None else 5.0


def relus_cost(ms: float) -> Cost:
    """int8 at 4 ms plus ``ms`` per quantized Relu (float at 10 ms)."""
    return lambda plan: 10.0 if plan is None else 4.0 + ms * sum(1 for n in plan.quantized_nodes if n.startswith("relu"))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[Cost], None]:
    """Install a fake timer: ``bench_sessions`` returns ``cost(plan)`` for each candidate (None: float)."""

    def install(cost: Cost) -> None:
        plans: dict[int, QuantPlan] = {}
        alive: list[object] = []  # keeps ids unique while the pass runs
        real_build = tl.LatencyTrials.build

        def build(trials: tl.LatencyTrials, forced: dict[str, str]) -> tuple[object, QuantPlan]:
            session, plan = real_build(trials, forced)
            plans[id(session)] = plan
            alive.append(session)
            return session, plan

        def bench(sessions: list[object], feeds: object, *, runs: int = 50, warmup: int = 5) -> list[Timing]:
            return [Timing(c, c, c, runs, [c] * runs) for c in (cost(plans.get(id(s))) for s in sessions)]

        monkeypatch.setattr(tl.LatencyTrials, "build", build)
        monkeypatch.setattr(tl, "bench_sessions", bench)

    return install


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, float]]:
    """Every accuracy evaluation the pass makes (the real ones, recorded)."""
    calls: list[dict[str, float]] = []
    real = tl.LatencyTrials.accuracy

    def spy(trials: tl.LatencyTrials, session: object) -> dict[str, float]:
        calls.append(real(trials, session))
        return calls[-1]

    monkeypatch.setattr(tl.LatencyTrials, "accuracy", spy)
    return calls


def test_guard_floats_only_the_node_reading_the_clipped_tensor(clock: Callable[[Cost], None]) -> None:
    clock(int8_twice_as_fast)
    model, ctx = _context("relu", narrow=True)
    run_pass("tune-latency", model, ctx)
    check, fewest = _steps(ctx)[:2]
    assert check["step"] == "accuracy check" and check["meets_targets"] is False and float(check["cosine"]) < 0.97
    # four MatMuls are the class that gains most; one trial per member ranks them and a binary
    # search keeps the fewest: mm1, the only reader of the clipped x
    assert fewest["step"] == "keep 1 of 4 MatMul/Gemm float (accuracy)" and fewest["meets_targets"] is True
    assert _kept(ctx) == {"mm1": "kept float: int8 MatMul/Gemm cost too much accuracy"}
    plan = _plan(ctx)
    assert set(plan.quantized_nodes) == {"mm2", "relu2", "mm3", "relu3", "mm4", "relu4"} and "x" not in plan.activations
    assert plan.decisions["relu1"].reason.startswith("not between quantized compute ops")  # a consequence, not a decision
    qdq = _materialized(model, ctx)
    assert Skip("mm1", "MatMul", "kept float: int8 MatMul/Gemm cost too much accuracy", "insert-qdq") in ctx.skips
    # against onnxruntime fp32 on all 8 samples: the clipped plan is far off; the tuned one is off by
    # ordinary int8 noise: mean error within one uint8 step of y, max within 8 (3 int8 layers compound)
    ref = _outputs(_proto("relu"), DATA)
    _, untuned = _context("relu", narrow=True)
    assert _cosine(ref, _outputs(_materialized(load(_proto("relu")), untuned), DATA)) < 0.9
    tuned = _outputs(qdq, DATA)
    assert _cosine(ref, tuned) > 0.999
    y = _ranges("relu", True)["y"]
    step = (max(y.max, 0.0) - min(y.min, 0.0)) / 255
    error = np.abs(np.stack(tuned) - np.stack(ref))
    assert error.mean() <= step and error.max() <= 8 * step


@pytest.mark.parametrize(
    ("head", "targets", "ignored"),
    [("scores", {"min_agreement": 0.0, "min_cosine": 1.0}, "cosine"), ("relu", {"min_agreement": 1.0, "min_cosine": 0.0}, "agreement")],
)
def test_guard_reads_agreement_for_scores_and_cosine_otherwise(clock: Callable[[Cost], None], head: str, targets: dict[str, float], ignored: str) -> None:
    """Even the clipped model passes when the only strict target is on the metric its output does not use."""
    clock(int8_twice_as_fast)
    model, ctx = _context(head, narrow=True)
    run_pass("tune-latency", model, ctx, **targets)
    check = _steps(ctx)[0]
    assert check[ignored] == 1.0 and check["meets_targets"] is True
    assert _kept(ctx) == {}
    assert tl.score_like_outputs(model) == ({"y"} if head == "scores" else set())


@pytest.mark.parametrize(("head", "metric"), [("scores", "agreement"), ("relu", "cosine")])
def test_targets_are_thresholds_on_the_measured_metric(clock: Callable[[Cost], None], head: str, metric: str) -> None:
    clock(int8_twice_as_fast)
    option = f"min_{metric}"
    model, ctx = _context(head, narrow=True)
    run_pass("tune-latency", model, ctx, min_agreement=0.0, min_cosine=0.0)
    measured = float(_steps(ctx)[0][metric])
    assert 0.5 < measured < 0.95  # the clipped x costs accuracy on either metric
    model, ctx = _context(head, narrow=True)
    run_pass("tune-latency", model, ctx, **{"min_agreement": 0.0, "min_cosine": 0.0, option: measured})
    assert _kept(ctx) == {} and _steps(ctx)[0]["meets_targets"] is True  # equal to the target is enough
    model, ctx = _context(head, narrow=True)
    run_pass("tune-latency", model, ctx, **{"min_agreement": 0.0, "min_cosine": 0.0, option: measured + 0.01})
    assert _steps(ctx)[0]["meets_targets"] is False
    assert _kept(ctx) == {"mm1": "kept float: int8 MatMul/Gemm cost too much accuracy"}
    assert float(_steps(ctx)[-1][metric]) >= measured + 0.01  # the final step re-measures


@pytest.mark.parametrize(
    ("budget", "step", "kept"),
    [
        # one trial per member plus a binary search does not fit in 12 (it needs remaining > members + 8):
        # the whole class goes float, and with it every Relu (nothing int8 is left around them)
        (12, "keep MatMul/Gemm float (accuracy)", MATMULS),
        (60, "keep 1 of 4 MatMul/Gemm float (accuracy)", ["mm1"]),
    ],
)
def test_trial_budget_bounds_the_accuracy_evaluations(
    clock: Callable[[Cost], None], evaluations: list[dict[str, float]], budget: int, step: str, kept: list[str]
) -> None:
    clock(int8_twice_as_fast)
    model, ctx = _context("relu", narrow=True)
    run_pass("tune-latency", model, ctx, max_accuracy_trials=budget)
    assert _steps(ctx)[1]["step"] == step
    assert sorted(_kept(ctx)) == kept
    assert len(evaluations) <= budget
    if budget == 12:  # initial check, the Relu and MatMul classes, the chosen plan; nothing int8 left to time
        assert len(evaluations) == 4 and _plan(ctx).quantized_nodes == [] and len(_steps(ctx)) == 2


@pytest.mark.parametrize("budget", [1, 2, 3, 4, 5])
def test_small_trial_budgets_are_a_hard_cap(clock: Callable[[Cost], None], evaluations: list[dict[str, float]], budget: int) -> None:
    """However small the budget, the guard never evaluates more plans than it allows."""
    clock(int8_twice_as_fast)
    model, ctx = _context("relu", narrow=True)
    run_pass("tune-latency", model, ctx, max_accuracy_trials=budget)
    assert len(evaluations) <= budget


@pytest.mark.parametrize(("relu_ms", "accepted"), [(1.0, True), (0.05, False)])
def test_latency_steps_and_measured_reasons(clock: Callable[[Cost], None], relu_ms: float, accepted: bool) -> None:
    """Floating the 4 Relus saves 4 ms of 8 (kept float) or 0.2 ms of 4.2 (below min_gain 5 %: kept int8)."""
    clock(relus_cost(relu_ms))
    model, ctx = _context("relu")
    before = ir.to_proto(model).SerializeToString()
    result = run_pass("tune-latency", model, ctx, accuracy=False)
    full, trial, final = (4.0 + 4 * relu_ms), 4.0, 4.0 if accepted else 4.0 + 4 * relu_ms
    steps = _steps(ctx)
    assert steps[:2] == [
        {"step": "full plan", "float_ms": 10.0, "int8_ms": full},
        {"step": f"keep {RELU_CLASS} float", "nodes": 4, "with_ms": full, "without_ms": trial, "accepted": accepted},
    ]
    assert steps[2]["step"] == "final" and (steps[2]["float_ms"], steps[2]["int8_ms"], steps[2]["speedup"]) == (10.0, final, round(10.0 / final, 3))
    assert set(steps[2]) >= {"agreement", "cosine"}  # the final plan is evaluated even with the guard off
    reason = f"kept float: int8 {RELU_CLASS} measured slower ({full:.3f} ms with, {trial:.3f} ms without)"
    assert _kept(ctx) == ({f"relu{i}": reason for i in range(1, 5)} if accepted else {})
    assert set(_plan(ctx).quantized_nodes) >= set(MATMULS)
    # the plan is context data: the model is left as it was, and modified says so
    assert result.modified is False and ir.to_proto(model).SerializeToString() == before
    assert result.stats == {"kept_float": 4 if accepted else 0, "steps": 3}


def test_int8_slower_than_float_keeps_the_whole_model_float(clock: Callable[[Cost], None]) -> None:
    clock(lambda plan: 10.0 if plan is None else 12.0)
    model, ctx = _context("relu")
    result = run_pass("tune-latency", model, ctx, accuracy=False)
    assert [s["step"] for s in _steps(ctx)] == ["full plan", f"keep {RELU_CLASS} float", "whole model float"]
    assert _steps(ctx)[-1] == {"step": "whole model float", "int8_ms": 12.0, "float_ms": 10.0, "accepted": True}
    reason = "kept float: int8 measured slower than float on this model (12.000 ms vs 10.000 ms)"
    assert _kept(ctx) == {n: reason for n in _plan(ctx).decisions}
    assert _plan(ctx).quantized_nodes == [] and _plan(ctx).activations == {}
    assert result.stats == {"kept_float": 8, "steps": 3}


def test_real_timer_records_measured_steps() -> None:
    """Real timings: which side wins is machine noise, so only the record's shape is checked."""
    model, ctx = _context("relu")
    result = run_pass("tune-latency", model, ctx, accuracy=False, budget_s=2.0)
    steps = _steps(ctx)
    assert steps[0]["step"] == "full plan" and float(steps[0]["float_ms"]) > 0 and float(steps[0]["int8_ms"]) > 0
    for s in steps[1:-1]:
        assert s["step"] == f"keep {RELU_CLASS} float" and isinstance(s["accepted"], bool)
        assert float(s["with_ms"]) > 0 and float(s["without_ms"]) > 0
    assert steps[-1]["step"] in ("final", "whole model float")
    if steps[-1]["step"] == "final":
        assert steps[-1]["speedup"] == round(float(steps[-1]["float_ms"]) / float(steps[-1]["int8_ms"]), 3)
    assert all("measured slower" in r for r in _kept(ctx).values())
    assert result.modified is False and result.stats["steps"] == len(steps)


def test_replay_applies_recorded_decisions_without_timing(clock: Callable[[Cost], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clock(relus_cost(1.0))
    model, ctx = _context("relu", narrow=True)
    run_pass("tune-latency", model, ctx)
    # the guard floats mm1, the fake timer the Relus still int8 after that
    assert sorted(_kept(ctx)) == ["mm1", "relu2", "relu3", "relu4"]
    tuned = _materialized(model, ctx)
    report = ConversionReport.from_context(model="mlp", mode="static", options={}, pipeline=[], ctx=ctx, records=[], notes=[])
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report.to_dict()), encoding="utf-8")

    def no_measuring(*args: object, **kwargs: object) -> None:
        raise AssertionError("replay must not build sessions or time anything")

    monkeypatch.setattr(tl, "LatencyTrials", no_measuring)
    replayed_model, replayed = _context("relu", narrow=True)
    replayed.calibration_data = None  # replay needs no samples
    result = run_pass("tune-latency", replayed_model, replayed, replay=str(path))
    assert replayed.plan == ctx.plan
    assert result.modified is False and result.stats == {"replayed": 4}
    assert replayed.tuning is not None and replayed.tuning.as_dict() == {"replayed": str(path), "nodes": 4, "steps": []}
    assert ir.to_proto(_materialized(replayed_model, replayed)).SerializeToString() == ir.to_proto(tuned).SerializeToString()


def test_same_inputs_give_the_same_plan_and_steps(clock: Callable[[Cost], None]) -> None:
    clock(relus_cost(1.0))
    (m1, first), (m2, second) = _context("relu", narrow=True), _context("relu", narrow=True)
    run_pass("tune-latency", m1, first)
    run_pass("tune-latency", m2, second)
    assert first.plan == second.plan and _steps(first) == _steps(second)  # accuracy figures included
    assert sorted(_kept(first)) == ["mm1", "relu2", "relu3", "relu4"]


@pytest.mark.parametrize("head", ["scores", "relu"])
def test_recorded_accuracy_matches_onnxruntime(clock: Callable[[Cost], None], head: str) -> None:
    """The guard's numbers are onnxruntime fp32 vs the materialized plan, on the first eval_samples samples."""
    clock(int8_twice_as_fast)
    model, ctx = _context(head)
    qdq = _materialized(model, ctx)  # the plan annotate made, materialized before tuning
    run_pass("tune-latency", model, ctx, eval_samples=4, min_agreement=0.0, min_cosine=0.0)
    check = _steps(ctx)[0]
    ref, cand = _outputs(_proto(head), DATA[:4]), _outputs(qdq, DATA[:4])
    if head == "scores":
        agreement = np.mean([np.argmax(r, -1) == np.argmax(c, -1) for r, c in zip(ref, cand)])
        assert check["agreement"] == round(float(agreement), 5) and check["cosine"] == 1.0
        assert agreement >= 0.9
    else:
        assert abs(float(check["cosine"]) - _cosine(ref, cand)) <= 1e-6  # rounded to 6 places
        assert check["agreement"] == 1.0 and _cosine(ref, cand) > 0.999


def test_needs_a_plan() -> None:
    model, ctx = _context("relu")
    with pytest.raises(ConfigError, match=r"^tune-latency reads 'plan', which no earlier step writes$"):
        PassManager([make_pass("tune-latency")]).run(model, PassContext(ranges=ctx.ranges, calibration_data=DATA))
    with pytest.raises(ConfigError, match=r"^tune-latency reads 'quant_config', which no earlier step writes$"):
        PassManager([make_pass("tune-latency")]).run(model, PassContext(plan=ctx.plan, ranges=ctx.ranges))
    # called directly, outside a pipeline, it does nothing and says why
    bare = PassContext()
    result = make_pass("tune-latency")(model, bare)
    assert (result.modified, result.stats, bare.notes) == (False, {"skipped": "no quantization plan"}, ["latency tuning skipped: no quantization plan"])
    assert bare.plan is None and bare.tuning is None


@pytest.mark.parametrize(
    ("annotate_options", "data", "stats", "note"),
    [
        ({}, None, {"skipped": "no sample inputs"}, ["latency tuning skipped: no sample inputs (give --data)"]),
        ({}, [], {"skipped": "no sample inputs"}, ["latency tuning skipped: no sample inputs (give --data)"]),
        ({"op_types": ("Gemm",)}, DATA, {"skipped": "nothing quantized"}, []),
    ],
    ids=["no-data", "empty-data", "nothing-quantized"],
)
def test_skips_leave_the_plan_alone(
    annotate_options: dict[str, object], data: list[dict[str, np.ndarray]] | None, stats: dict[str, str], note: list[str]
) -> None:
    model = load(_proto("relu"))
    ctx = annotate(model, _ranges("relu", False), **annotate_options)
    ctx.calibration_data = data
    plan, notes = ctx.plan, list(ctx.notes)  # annotate's notes (reduce_range on this CPU) come first
    result = run_pass("tune-latency", model, ctx)
    assert (result.modified, result.stats, ctx.notes) == (False, stats, notes + note)
    assert ctx.plan is plan and ctx.tuning is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threads": -1}, "threads >= 0"),
        ({"budget_s": 0}, "budget_s > 0"),
        ({"min_gain": 1.0}, "0 <= min_gain < 1"),
        ({"min_cosine": 1.5}, r"min_cosine must be in \[0, 1\], got 1.5"),
        ({"max_accuracy_trials": 0}, "max_accuracy_trials must be >= 1, got 0"),
        ({"replay": "/nonexistent/report.json"}, "replay report '/nonexistent/report.json' does not exist"),
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_pass("tune-latency", options)


def test_guard_floats_one_node_of_a_single_class_model(clock: Callable[[Cost], None]) -> None:
    """Three MatMuls and nothing else: floating mm1 alone fixes the clipped x, as in the MLP above."""
    clock(int8_twice_as_fast)
    proto = parse_with(
        '<ir_version: 8, opset_import: ["" : 18]>\nmm (float[8,16] x) => (float[8,10] y) {\n'
        "  [mm1] h1 = MatMul (x, w1)\n  [mm2] h2 = MatMul (h1, w2)\n  [mm3] y = MatMul (h2, w3)\n}",
        {"w1": (16, 32), "w2": (32, 32), "w3": (32, 10)},
    )
    model = load(proto)
    ctx = annotate(model, range_set({**measured_ranges(proto, DATA), "x": (-0.05, 0.05)}))
    ctx.calibration_data = DATA
    run_pass("tune-latency", model, ctx, min_agreement=0.9)
    assert sorted(_kept(ctx)) == ["mm1"]
