"""mixed-precision: the search alone (a fake measurer), and whole conversions on the MLP builder and a
hand-made 3-layer LSTM, against tune-latency's greedy fallback.

Accuracy comes from real onnxruntime runs (deterministic: same samples, same decisions). Latency
comes from a fake timer, as in ``test_tune_latency.py``: ``bench_sessions`` returns a cost model of
each candidate (float 10 ms, minus per MatMul/Gemm/LSTM 2 ms when int8 and 1.5 ms when dynamic; int16
and fp16 save nothing, as on this machine's onnxruntime — ``native_clock`` has them save 1.25 ms and
1 ms, as on a runtime with native kernels), so no outcome depends on this machine's timing noise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxq.passes.quantization.mixed_precision as mp
import onnxq.passes.quantization.tune_latency as tl
from models import build
from onnxq import ir
from onnxq.api import ConversionOptions, ConversionReport, ConversionResult, convert
from onnxq.api.pipelines import PipelineInputs, build_steps
from onnxq.errors import ConfigError
from onnxq.pass_base import make_pass
from onnxq.passes.quantization._mixed_search import search
from onnxq.passes.quantization._mixed_units import DYNAMIC, FP16, FP32, INT8, INT16, MixedUnit
from onnxq.plan import QuantPlan
from onnxq.runtime.bench import Timing
from tests.helpers import cosine, run

MLP_SIZES = {"in_features": 64, "hidden": (128, 128, 128)}
_ANCHORS = ("Gemm", "MatMul", "LSTM")


def _mlp_data(n: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"input": rng.standard_normal((64, 64)).astype(np.float32)} for _ in range(n)]


def lstm3(seed: int = 0, inp: int = 16, hidden: int = 32, classes: int = 10) -> onnx.ModelProto:
    """Three stacked LSTMs and a Gemm head on the last hidden state."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    x, size = "x", inp
    for i in range(3):
        w = (rng.standard_normal((1, 4 * hidden, size)) * (0.3 if i else 1.0)).astype(np.float32)
        r = (rng.standard_normal((1, 4 * hidden, hidden)) * 0.3).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(r, f"R{i}")]
        last = i == 2
        nodes.append(helper.make_node("LSTM", [x, f"W{i}", f"R{i}"], ["", f"h{i}"] if last else [f"y{i}"], name=f"lstm{i}", hidden_size=hidden))
        if not last:
            nodes.append(helper.make_node("Squeeze", [f"y{i}", "ax1"], [f"s{i}"], name=f"squeeze{i}"))
            x = f"s{i}"
        size = hidden
    nodes.append(helper.make_node("Squeeze", ["h2", "ax0"], ["h"], name="squeeze_h"))
    inits += [
        numpy_helper.from_array((rng.standard_normal((classes, hidden)) * 0.3).astype(np.float32), "Wh"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "bh"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array([0], np.int64), "ax0"),
    ]
    nodes.append(helper.make_node("Gemm", ["h", "Wh", "bh"], ["logits"], name="head", transB=1))
    graph = helper.make_graph(
        nodes, "lstm3", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", "batch", inp])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _lstm_data(n: int = 8, inp: int = 16) -> list[dict[str, np.ndarray]]:
    """One feature 200x the others: a per-run activation range (dynamic int8) crushes the rest at the
    first LSTM's input; the later LSTMs read hidden states in [-1, 1], which int8 keeps."""
    rng = np.random.default_rng(1)
    scale = np.ones(inp, np.float32)
    scale[0] = 200.0
    return [{"x": (rng.standard_normal((12, 16, inp)) * scale).astype(np.float32)} for _ in range(n)]


_SAVED_MS = {INT8: 2.0, DYNAMIC: 1.5, INT16: 0.0, FP16: 0.0, FP32: 0.0}


def _cost(plan: QuantPlan | None, op_of: Mapping[str, str], got: Mapping[str, str] | None = None) -> float:
    """Fake milliseconds: from the mixed search's node precisions (``got``), else from tune-latency's plan."""
    if got is not None:
        return 10.0 - sum(_SAVED_MS[p] for n, p in got.items() if op_of.get(n) in _ANCHORS)
    if plan is None:
        return 10.0
    return 10.0 - 2.0 * sum(1 for n in plan.quantized_nodes if op_of.get(n) in _ANCHORS)


def _ops(trials: tl.LatencyTrials) -> dict[str, str]:
    return {n.name: n.op for n in ir.iter_nodes(trials.model.graph)}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake timer for both tuners: each candidate session costs ``_cost`` of its plan (float: 10 ms)."""
    costs: dict[int, float] = {}
    alive: list[object] = []  # keeps ids unique while the pass runs
    greedy_build, mixed_build = tl.LatencyTrials.build, mp._MixedTrials.build_precisions

    def greedy(trials: tl.LatencyTrials, forced: dict[str, str]) -> tuple[object, QuantPlan]:
        session, plan = greedy_build(trials, forced)
        costs[id(session)] = _cost(plan, _ops(trials))
        alive.append(session)
        return session, plan

    def mixed(trials: mp._MixedTrials, precisions: Mapping[str, str]) -> tuple[object, QuantPlan, dict[str, str]]:
        session, plan, got = mixed_build(trials, precisions)
        costs[id(session)] = _cost(plan, _ops(trials), got)
        alive.append(session)
        return session, plan, got

    def bench(sessions: list[object], feeds: object, *, runs: int = 50, warmup: int = 5) -> list[Timing]:
        return [Timing(c, c, c, runs, [c] * runs) for c in (costs.get(id(s), 10.0) for s in sessions)]

    monkeypatch.setattr(tl.LatencyTrials, "build", greedy)
    monkeypatch.setattr(mp._MixedTrials, "build_precisions", mixed)
    monkeypatch.setattr(tl, "bench_sessions", bench)


@pytest.fixture
def native_clock(clock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``clock`` on a runtime with native int16 and fp16 kernels: both save time over fp32."""
    monkeypatch.setitem(_SAVED_MS, INT16, 1.25)
    monkeypatch.setitem(_SAVED_MS, FP16, 1.0)


def _agreement(reference: onnx.ModelProto, candidate: ConversionResult, feeds: list[dict[str, np.ndarray]]) -> float:
    hits = [np.argmax(run(reference, f)[0], -1) == np.argmax(run(candidate.model, f)[0], -1) for f in feeds]
    return float(np.mean(hits))


def _fake_ms(report: dict[str, Any]) -> float:
    """The cost model of a converted model: from its report's quantized nodes."""
    mixed = report["mixed_precision"]
    if mixed is not None:
        chosen = next(p for p in mixed["frontier"] if p["label"] == mixed["chosen"])
        return float(chosen["latency_ms"])
    final = report["latency"]["steps"][-1]
    return float(final.get("int8_ms", 10.0))


def test_mlp_target_between_int8_and_fp32_keeps_more_int8_than_greedy(clock: None) -> None:
    """At agreement >= 0.99 (all-int8 agrees about 0.98 here, fp32 1.0) the search keeps at least as
    many Gemms int8 as tune-latency's fallback (it floated every Gemm before choose-weight-range made
    all-int8 more accurate; now both float one), and is at least as fast (fake timer)."""
    model = build("mlp", **MLP_SIZES)
    data = _mlp_data()
    greedy = convert(model, data, min_agreement=0.99)
    mixed = convert(model, data, accuracy_target="agreement>=0.99")
    record = mixed.report.mixed_precision
    assert record is not None and record["met"] is True and record["unmet"] == ""
    low = record["frontier"][0]
    assert low["label"] == "all lowest" and low["meets_accuracy"] is False and low["value"] < 0.99  # the target is between all-int8 and fp32
    assert greedy.report.quantized_nodes is not None and mixed.report.quantized_nodes is not None
    assert mixed.report.quantized_nodes >= greedy.report.quantized_nodes
    assert _fake_ms(mixed.report.to_dict()) <= _fake_ms(greedy.report.to_dict()) < 10.0
    # the report: evaluations spent, the precision map, the frontier
    assert record["evaluations"]["search"] <= 60 and record["evaluations"]["sensitivity"] == 4
    assert set(record["precisions"].values()) <= {INT8, DYNAMIC, FP32} and INT8 in record["precisions"].values()
    assert {"label", "latency_ms", "value", "int8_nodes", "dynamic_nodes", "meets_accuracy"} <= set(record["frontier"][0])
    # the output is valid, runs, and meets the target against onnxruntime fp32 on the guard's samples
    onnx.checker.check_model(ir.to_proto(mixed.model), full_check=True)
    assert _agreement(model, mixed, data[:8]) >= 0.99


def test_lstm_dynamic_on_the_later_lstms_first_stays_float(clock: None) -> None:
    model = lstm3()
    data = _lstm_data()
    result = convert(model, data, accuracy_target="cosine>=0.999")
    record = result.report.mixed_precision
    assert record is not None and record["met"] is True
    assert {k: record["precisions"][k] for k in ("lstm0", "lstm1", "lstm2")} == {"lstm0": FP32, "lstm1": DYNAMIC, "lstm2": DYNAMIC}
    ops = [n.op for n in ir.iter_nodes(result.model.graph)]
    assert ops.count("DynamicQuantizeLSTM") == 2 and ops.count("LSTM") == 1
    # the dynamic LSTMs are not reported as left float
    assert not [s for s in result.report.float_nodes if s.node in ("lstm1", "lstm2")]
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    ref = np.concatenate([run(model, f)[0].ravel() for f in data])
    out = np.concatenate([run(result.model, f)[0].ravel() for f in data])
    assert cosine(ref, out) >= 0.999
    # all dynamic misses the target: the first LSTM is what costs it
    assert record["frontier"][0]["label"] == "all lowest" and record["frontier"][0]["meets_accuracy"] is False


def test_impossible_target_writes_the_best_plan_and_says_so() -> None:
    model = build("mlp", **MLP_SIZES)
    result = convert(model, _mlp_data(), accuracy_target="cosine>=1.01")
    record = result.report.mixed_precision
    assert record is not None and record["met"] is False
    assert record["unmet"].startswith("accuracy target cosine>=1.01 not met even with every unit fp32")
    assert record["chosen"] == "all fp32" and result.report.quantized_nodes == 0
    assert record["unmet"] in result.report.notes
    assert ConversionReport.from_dict(result.report.to_dict()).mixed_precision == record  # the JSON reads back


def test_unreachable_speedup_is_reported(clock: None) -> None:
    model = build("mlp", **MLP_SIZES)
    result = convert(model, _mlp_data(), accuracy_target="agreement>=0.9", min_speedup=100.0)
    record = result.report.mixed_precision
    assert record is not None and record["met"] is False and record["unmet"].startswith("latency constraint not met: speedup")
    assert result.report.quantized_nodes  # the fastest plan meeting the accuracy target is still written


class _Fake:
    """A measurer whose accuracy is ``1 - Σ damage`` of the units not fp32 (dynamic: half the damage)."""

    def __init__(self, damages: list[float], bar: float, budget: int = 60) -> None:
        self.damages, self.bar, self.left, self.calls = damages, bar, budget, 0

    #: share of a unit's damage left at each precision, and the milliseconds a unit saves there
    LOSS = {INT8: 1.0, DYNAMIC: 0.5, INT16: 0.2, FP16: 0.1, FP32: 0.0}
    SAVED = {INT8: 1.0, DYNAMIC: 0.5, INT16: 0.3, FP16: 0.2, FP32: 0.0}

    def evaluate(self, assignment: tuple[str, ...]) -> tuple[Mapping[str, float], Mapping[str, int]]:
        self.left -= 1
        self.calls += 1
        loss = sum(d * self.LOSS[p] for d, p in zip(self.damages, assignment))
        return {"cosine": 1.0 - loss}, {p: assignment.count(p) for p in set(assignment)}

    def time_pair(self, a: tuple[str, ...] | None, b: tuple[str, ...]) -> tuple[float, float]:
        def ms(x: tuple[str, ...] | None) -> float:
            return 20.0 if x is None else 20.0 - sum(self.SAVED[p] for p in x)

        return ms(a), ms(b)

    def meets(self, reading: Mapping[str, float]) -> bool:
        return reading["cosine"] >= self.bar

    def gain(self, before: Mapping[str, float], after: Mapping[str, float]) -> float:
        return after["cosine"] - before["cosine"]

    def budget_left(self) -> int:
        return self.left


def _units(n: int, dynamic: bool = True) -> list[MixedUnit]:
    ladder = (INT8, DYNAMIC, FP32) if dynamic else (INT8, FP32)
    return [MixedUnit(f"u{i}", (f"u{i}",), ("MatMul",), ladder, f"u{i}" if dynamic else "") for i in range(n)]


def test_search_bisects_then_requantizes() -> None:
    """16 units, most sensitive first; 0.06 of loss allowed: unit 0 (0.08) must leave int8, dynamic
    (0.04) is enough for it, and the others (0.001 each) stay int8."""
    damages = [0.08] + [0.001] * 15
    fake = _Fake(damages, bar=0.94)
    result = search(_units(16), fake, classes={}, min_gain=0.05, max_latency_ms=None, min_speedup=None)
    assert result.accuracy_met and result.latency_met
    assert result.chosen.assignment == (DYNAMIC,) + (INT8,) * 15
    # all lowest, all fp32, a binary search over 16 (4), then unit 0 at int8 (= all lowest, cached) and at dynamic
    assert fake.calls == result.evaluations <= 2 + math.ceil(math.log2(16)) + 1


def test_search_without_a_feasible_plan_returns_the_most_accurate() -> None:
    fake = _Fake([0.1, 0.1], bar=1.5)
    result = search(_units(2), fake, classes={}, min_gain=0.05, max_latency_ms=None, min_speedup=None)
    assert not result.accuracy_met and result.chosen.assignment == (FP32, FP32)


def test_search_stops_at_the_evaluation_budget() -> None:
    fake = _Fake([0.08] + [0.001] * 15, bar=0.94, budget=3)
    result = search(_units(16), fake, classes={}, min_gain=0.05, max_latency_ms=None, min_speedup=None)
    assert fake.calls == 3 and result.accuracy_met  # all lowest, all fp32, one bisection step: it keeps the best feasible


def test_latency_constraint_compares_the_chosen_median() -> None:
    fake = _Fake([0.0] * 4, bar=0.9)
    result = search(_units(4, dynamic=False), fake, classes={}, min_gain=0.05, max_latency_ms=15.0, min_speedup=None)
    assert result.chosen.assignment == (INT8,) * 4 and result.chosen.ms == 16.0
    assert not result.latency_met and result.latency_shortfall == "latency 16.000 ms > 15 ms"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"accuracy_target": "agreement>=1.5"}, r"an agreement bar is a share in \[0, 1\]"),
        ({"accuracy_target": "cosine"}, "has no bar"),
        ({"accuracy_target": "nosuchmetric>=1"}, "nosuchmetric"),
        ({"max_latency_ms": 0.0}, "max_latency_ms must be a positive number"),
        ({"min_speedup": -1.0}, "min_speedup must be a positive number"),
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_pass("mixed-precision", options)
    with pytest.raises(ConfigError, match=message):
        ConversionOptions(**options)  # type: ignore[arg-type]


def test_the_static_pipeline_runs_mixed_precision_in_place_of_tune_latency() -> None:
    given = PipelineInputs(has_data=True, has_ranges=False)
    plain = [s["pass"] for s in build_steps(ConversionOptions(), given)]
    mixed = build_steps(ConversionOptions(accuracy_target=("cosine>=0.999",), min_speedup=1.2), given)
    names = [s["pass"] for s in mixed]
    assert "tune-latency" in plain and "mixed-precision" not in plain
    assert "tune-latency" not in names
    assert names.index("annotate-quantization") < names.index("mixed-precision") == names.index("insert-qdq") - 1
    assert names.index("apply-precision-map") == names.index("insert-qdq") + 1
    assert mixed[0] == {"pass": "upgrade-opset", "target": 21}  # int16 units need 16-bit Q/DQ
    assert build_steps(ConversionOptions(), given)[0] == {"pass": "upgrade-opset", "target": 17}
    step = mixed[names.index("mixed-precision")]
    assert step["accuracy_target"] == ("cosine>=0.999",) and step["min_speedup"] == 1.2 and step["max_latency_ms"] is None
    with pytest.raises(ConfigError, match="--no-tune turns off"):
        ConversionOptions(accuracy_target=("cosine>=0.999",), tune=False)
    with pytest.raises(ConfigError, match="does not apply to --mode dynamic"):
        ConversionOptions(mode="dynamic", max_latency_ms=3.0)


def test_apply_precision_map_is_truthful_about_modified() -> None:
    model = lstm3()
    with_dynamic = convert(model, _lstm_data(), accuracy_target="cosine>=0.5")  # everything may be lowered
    records = {r.name: r for r in with_dynamic.report.passes}
    assert records["mixed-precision"].modified is False  # it writes the plan and the map, not the model
    assert records["apply-precision-map"].modified is True and records["apply-precision-map"].stats["dynamic"] >= 3
    all_float = convert(model, _lstm_data(), accuracy_target="cosine>=1.01")
    records = {r.name: r for r in all_float.report.passes}
    assert records["apply-precision-map"].modified is False and records["apply-precision-map"].stats == {"dynamic": 0, "fp16": 0}


# -- int16 and fp16 units -------------------------------------------------------------------------


def test_search_keeps_a_measured_rung_only_when_timed_faster() -> None:
    """Unit 0 must leave int8 (0.08 of loss, 0.06 allowed) and has no dynamic rung: fp16 meets the bar,
    but is kept only when the timer says it beats fp32."""
    units = [MixedUnit(f"u{i}", (f"u{i}",), ("MatMul",), (INT8, FP16, FP32)) for i in range(4)]

    class Native(_Fake):
        SAVED = {**_Fake.SAVED, FP16: 1.5}  # fp16 with native kernels: 1.5 of fp32's 17 ms saved

    fake = Native([0.08, 0.001, 0.001, 0.001], bar=0.94)
    result = search(units, fake, classes={}, min_gain=0.05, max_latency_ms=None, min_speedup=None)
    assert result.chosen.assignment == (FP16, INT8, INT8, INT8)
    assert result.chosen.nodes[FP16] == 1 and result.chosen.nodes[INT8] == 3

    class NoFaster(_Fake):
        SAVED = {**_Fake.SAVED, FP16: 0.0}  # fp16 as on this CPU: no faster than fp32

    slow = NoFaster([0.08, 0.001, 0.001, 0.001], bar=0.94)
    result = search(units, slow, classes={}, min_gain=0.05, max_latency_ms=None, min_speedup=None)
    assert result.chosen.assignment == (FP32, INT8, INT8, INT8)
    assert any(p.label == "u0 back to fp16" and p.meets for p in result.points)  # tried, met, not kept


def _logits(model: Any, data: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([run(model, f)[0] for f in data])


def _restricted(*precisions: str) -> dict[str, Any]:
    return {"pass_options": {"mixed-precision": {"precisions": list(precisions)}}}


def _q_types(model: ir.Model) -> set[str]:
    """The element types of every QuantizeLinear output (``uint8``, ``uint16``...)."""
    proto = ir.to_proto(model)
    zps = {i.name: i.data_type for i in proto.graph.initializer}
    return {onnx.helper.tensor_dtype_to_np_dtype(zps[n.input[2]]).name for n in proto.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}


def test_fp16_units_where_the_search_space_forces_them() -> None:
    """Only fp16 or fp32 allowed: every Gemm and Relu computes in float16, Casts at the borders;
    within float16 rounding of onnxruntime's fp32 outputs."""
    model = build("mlp", **MLP_SIZES)
    data = _mlp_data()
    result = convert(model, data, accuracy_target="cosine>=0.9999", **_restricted(FP16))
    record = result.report.mixed_precision
    assert record is not None and record["met"] is True and record["chosen"] == "all lowest"
    assert set(record["precisions"].values()) == {FP16} and set(record["assignment"].values()) == {FP16}
    assert record["frontier"][0]["fp16_nodes"] == len(record["precisions"]) == 7
    proto = ir.to_proto(result.model)
    onnx.checker.check_model(proto, full_check=True)
    halves = [i for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT16]
    assert len(halves) == 8 and not [i for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT]  # 4 weights + 4 biases
    assert [n.op_type for n in proto.graph.node].count("Cast") == 2  # in and out: the float16 region is the whole MLP
    assert [i.type.tensor_type.elem_type for i in proto.graph.output] == [TensorProto.FLOAT]
    ref, out = _logits(model, data), _logits(result.model, data)
    assert cosine(ref, out) >= 0.9999 and np.max(np.abs(ref - out)) <= 2e-2 * np.max(np.abs(ref))
    assert records_of(result)["apply-precision-map"].stats == {"dynamic": 0, "fp16": 7}


def records_of(result: ConversionResult) -> dict[str, Any]:
    return {r.name: r for r in result.report.passes}


def test_int16_units_where_the_search_space_forces_them() -> None:
    """Only int16 or fp32 allowed: every activation Q/DQ is uint16 (opset 21), weights stay int8."""
    model = build("mlp", **MLP_SIZES)
    data = _mlp_data()
    result = convert(model, data, accuracy_target="cosine>=0.999", **_restricted(INT16))
    record = result.report.mixed_precision
    assert record is not None and record["met"] is True and record["chosen"] == "all lowest"
    assert set(record["precisions"].values()) == {INT16} and record["frontier"][0]["int16_nodes"] == 7
    assert result.model.opset == 21 and _q_types(result.model) == {"uint16"}
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    ref, out = _logits(model, data), _logits(result.model, data)
    assert cosine(ref, out) >= 0.999


def test_int16_unit_beside_int8_units(native_clock: None) -> None:
    """agreement >= 0.98: all-int8 misses it, the most sensitive Gemm at fp32 meets it; the sweep finds
    int16 enough for that Gemm and (fake timer: int16 saves 1.25 ms) faster than fp32, so it keeps it.
    The tensors around it are uint16, the rest uint8."""
    model = build("mlp", **MLP_SIZES)
    data = _mlp_data()
    result = convert(model, data, accuracy_target="agreement>=0.98", **_restricted(INT8, INT16))
    record = result.report.mixed_precision
    assert record is not None and record["met"] is True
    assert record["frontier"][0]["meets_accuracy"] is False  # all int8 misses
    assert sorted(record["assignment"].values()) == sorted([INT8, INT8, INT8, INT16])
    assert _q_types(result.model) == {"uint8", "uint16"}
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    assert _agreement(model, result, data) >= 0.98


def test_fp16_unit_beside_int8_units(native_clock: None) -> None:
    model = build("mlp", **MLP_SIZES)
    data = _mlp_data()
    result = convert(model, data, accuracy_target="agreement>=0.99", **_restricted(INT8, FP16))
    record = result.report.mixed_precision
    assert record is not None and record["met"] is True
    assert FP16 in record["assignment"].values() and INT8 in record["assignment"].values()
    ops = [n.op for n in ir.iter_nodes(result.model.graph)]
    assert "Cast" in ops and "QuantizeLinear" in ops
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    assert _agreement(model, result, data) >= 0.99


# -- replay ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "target", "options"),
    [
        ("lstm", "cosine>=0.999", {}),  # dynamic LSTMs and an int8 head
        ("mlp", "agreement>=0.98", _restricted(INT8, INT16)),  # int8 and int16 units
        ("mlp", "agreement>=0.99", _restricted(INT8, FP16)),  # int8 and fp16 units
    ],
)
def test_replay_gives_the_same_bytes_without_measuring(
    native_clock: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, builder: str, target: str, options: dict[str, Any]
) -> None:
    model, data = (lstm3(), _lstm_data()) if builder == "lstm" else (build("mlp", **MLP_SIZES), _mlp_data())
    first = convert(model, data, accuracy_target=target, **options)
    record = first.report.mixed_precision
    assert record is not None and len(set(record["assignment"].values())) >= 2  # a real mix to replay
    path = tmp_path / "report.json"
    path.write_text(json.dumps(first.report.to_dict()), encoding="utf-8")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a replay must not evaluate or time anything")

    monkeypatch.setattr(tl, "bench_sessions", refuse)
    monkeypatch.setattr(tl.LatencyTrials, "__init__", refuse)
    monkeypatch.setattr(mp, "rank_units", refuse)
    again = convert(model, data, accuracy_target=target, replay=str(path), **options)
    assert ir.to_proto(again.model).SerializeToString() == ir.to_proto(first.model).SerializeToString()
    replayed = again.report.mixed_precision
    assert replayed is not None and replayed["replayed"] == str(path) and replayed["frontier"] == [] and replayed["evaluations"] == {}
    assert replayed["assignment"] == record["assignment"] and replayed["precisions"] == record["precisions"]
    assert records_of(again)["mixed-precision"].stats["replayed"] == len(record["assignment"])


def test_replay_refuses_a_report_of_the_other_tuner(tmp_path: Any) -> None:
    model, data = build("mlp", **MLP_SIZES), _mlp_data(4)
    greedy, mixed = tmp_path / "greedy.json", tmp_path / "mixed.json"
    greedy.write_text(json.dumps(convert(model, data).report.to_dict()), encoding="utf-8")
    mixed.write_text(json.dumps(convert(model, data, accuracy_target="cosine>=0.5").report.to_dict()), encoding="utf-8")
    with pytest.raises(ConfigError, match="records no mixed-precision search"):
        convert(model, data, accuracy_target="cosine>=0.5", replay=str(greedy))
    with pytest.raises(ConfigError, match="records a mixed-precision search; replay it with its targets \\(--accuracy-target 'cosine>=0.5'\\)"):
        convert(model, data, replay=str(mixed))
    with pytest.raises(ConfigError, match="does not exist"):
        make_pass("mixed-precision", {"replay": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match="unknown precision"):
        make_pass("mixed-precision", {"precisions": ["int4"]})


# -- deployment targets ---------------------------------------------------------------------------


def test_targets_set_the_runtime_and_the_search_space() -> None:
    from onnxq.api.targets import adapt_steps
    from onnxq.targets import get_target

    given = PipelineInputs(has_data=True, has_ranges=False)
    for name, runtime, space, opset in [
        ("ort-cpu", "onnxruntime", (INT8, DYNAMIC, INT16, FP16, FP32), 21),
        ("openvino", "openvino", (INT8, FP16, FP32), 17),  # no contrib ops, 8-bit activations only
    ]:
        opts = ConversionOptions(accuracy_target=("cosine>=0.99",), target=name)
        steps, _ = adapt_steps(opts, get_target(name), build_steps(opts, given))
        step = next(s for s in steps if s["pass"] == "mixed-precision")
        assert (step["runtime"], step["precisions"], steps[0]["target"]) == (runtime, space, opset), name
    for name in ("tensorrt", "qnn", "generic"):
        with pytest.raises(ConfigError, match=f"with --target {name}: the mixed-precision search times its candidates on the target's runtime"):
            ConversionOptions(accuracy_target=("cosine>=0.99",), target=name)


def test_ort_cpu_target_runs_the_search() -> None:
    model = build("mlp", **MLP_SIZES)
    data = _mlp_data()
    result = convert(model, data, accuracy_target="agreement>=0.98", target="ort-cpu")
    record = result.report.mixed_precision
    assert record is not None and record["met"] is True and record["runtime"] == "onnxruntime"
    assert result.report.target is not None and result.report.target["name"] == "ort-cpu"
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    assert _agreement(model, result, data) >= 0.98


def test_openvino_target_searches_on_openvino_without_dynamic_units() -> None:
    pytest.importorskip("openvino")
    model = lstm3()
    data = _lstm_data()
    result = convert(model, data, accuracy_target="cosine>=0.99", target="openvino")
    record = result.report.mixed_precision
    assert record is not None and record["runtime"] == "openvino" and record["met"] is True
    assert DYNAMIC not in record["precisions"].values() and INT16 not in record["precisions"].values()
    assert not [n for n in ir.iter_nodes(result.model.graph) if n.domain]  # no com.microsoft ops
    assert result.model.opset == 17
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    ref = np.concatenate([run(model, f)[0].ravel() for f in data])
    out = np.concatenate([run(result.model, f)[0].ravel() for f in data])
    assert cosine(ref, out) >= 0.99
