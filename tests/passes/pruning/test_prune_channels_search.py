"""prune-channels-search and ``--recipe compact``: the ratio chosen by the accuracy bound or the speed
target, the refusal when nothing fits, and the recipe end to end against onnxruntime's fp32 output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxq.passes.pruning.prune_channels_search as search_module
from onnxq import ConfigError, PassContext, PassManager, ir, make_pass
from onnxq.runtime.bench import Timing
from tests.helpers import invoke

HIDDEN, LIVE = 64, 24  # 40 of the 64 hidden units are dead (zero weights and bias): pruning them is free


def redundant_mlp(seed: int = 0) -> onnx.ModelProto:
    """x[N,32] → Gemm(64) → Relu → Gemm(10); hidden units LIVE.. have zero weights and bias."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((HIDDEN, 32)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(HIDDEN).astype(np.float32) * 0.1
    w1[LIVE:], b1[LIVE:] = 0.0, 0.0
    w2 = rng.standard_normal((10, HIDDEN)).astype(np.float32) * 0.3
    b2 = np.zeros(10, np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph(nodes, "redundant_mlp", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def feeds(n: int = 8, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(n)]


def run_search(options: dict[str, Any], model: onnx.ModelProto | None = None) -> tuple[ir.Model, bool, dict[str, Any]]:
    ctx = PassContext(calibration_data=feeds())
    result = PassManager([make_pass("prune-channels-search", options)], check=True).run(ir.load(model or redundant_mlp()), ctx)
    return result.model, result.records[0].modified, result.records[0].stats


def hidden_units(model: ir.Model) -> int:
    fc1 = next(n for n in ir.iter_nodes(model.graph) if n.name == "fc1")
    return int(np.asarray(ir.constant_array(fc1.inputs[1])).shape[0])


def fp32_outputs(model: onnx.ModelProto | ir.Model, samples: list[dict[str, np.ndarray]]) -> np.ndarray:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in samples])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_largest_ratio_within_the_bound_is_kept_and_matches_fp32() -> None:
    model, modified, stats = run_search({"ratios": [0.25, 0.5, 0.625, 0.75], "round_to": 8})
    assert modified and stats["ratio"] == 0.625  # 64 → 24 live units: 0.625 removes exactly the 40 dead ones
    assert [c["ok"] for c in stats["curve"]] == [True, True, True, False]  # stops at the first ratio that cuts live units
    assert hidden_units(model) == LIVE
    held_out = feeds(4, seed=7)
    assert cosine(fp32_outputs(model, held_out), fp32_outputs(redundant_mlp(), held_out)) >= 0.9999  # dead units only: exact up to rounding


def test_no_ratio_within_the_bound_leaves_the_model_and_says_why() -> None:
    source = redundant_mlp()
    model, modified, stats = run_search({"ratios": [0.75, 0.875], "tolerance": 0.001})
    assert not modified and stats["ratio"] == 0.0
    assert "ratio 0.75 left cosine" in stats["reason"] and "out of tolerance 0.001" in stats["reason"]
    assert hidden_units(model) == HIDDEN
    held_out = feeds(2, seed=3)
    np.testing.assert_allclose(fp32_outputs(model, held_out), fp32_outputs(source, held_out), rtol=1e-6, atol=1e-6)


def test_speed_target_picks_the_smallest_ratio_that_reaches_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cost-model timer: time proportional to the hidden units (no wall clock in a unit test)."""

    def fake_bench(sessions: list[_CostSession], _feeds: Any, runs: int = 50, warmup: int = 5) -> list[Timing]:
        return [Timing(float(s.units), float(s.units), float(s.units), runs) for s in sessions]

    monkeypatch.setattr(search_module, "bench_sessions", fake_bench)
    monkeypatch.setattr(search_module, "make_session", lambda model, **_: _CostSession(hidden_units(model)))
    _, modified, stats = run_search({"ratios": [0.25, 0.5, 0.625], "min_speedup": 1.5})
    assert modified and stats["ratio"] == 0.5  # 64/48 = 1.33x < 1.5 <= 64/32 = 2x
    assert stats["met_speedup"] and stats["speedups"] == {"0.25": pytest.approx(64 / 48, abs=1e-4), "0.5": 2.0}  # rounded to 4 places in the stats
    _, _, missed = run_search({"ratios": [0.25, 0.5], "min_speedup": 5.0})
    assert missed["ratio"] == 0.5 and missed["met_speedup"] is False  # none reaches it: the fastest accepted


class _CostSession:
    """Stands in for an onnxruntime session: its model's hidden-unit count is its cost."""

    def __init__(self, units: int) -> None:
        self.units = units


@pytest.mark.parametrize(
    "options",
    [{"ratios": []}, {"ratios": [0.5, 0.25]}, {"ratios": [1.0]}, {"metric": "accuracy"}, {"metric": "f1"}, {"tolerance": -1}, {"min_speedup": -1}],
)
def test_bad_options_are_one_line_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="prune-channels-search"):
        make_pass("prune-channels-search", options)


def test_needs_samples() -> None:
    with pytest.raises(ConfigError, match="calibration_data"):
        PassManager([make_pass("prune-channels-search")]).run(ir.load(redundant_mlp()), PassContext())


def test_recipe_compact_end_to_end(tmp_path: Path) -> None:
    src, out, again = tmp_path / "mlp.onnx", tmp_path / "mlp.compact.onnx", tmp_path / "again.onnx"
    onnx.save(redundant_mlp(), src)
    np.savez(tmp_path / "data.npz", x=np.stack([f["x"] for f in feeds(16)]))
    for target in (out, again):
        # latency off: whether int8 beats fp32 on a 4-row MLP is the machine's call, not this test's
        args = ("--data", str(tmp_path / "data.npz"), "--recipe", "compact", "--pass-option", "tune-latency.latency=false")
        code, _, err = invoke("convert", str(src), "-o", str(target), *args)
        assert code == 0, err
    assert out.read_bytes() == again.read_bytes()  # deterministic
    onnx.checker.check_model(onnx.load(out), full_check=True)
    result = onnx.load(out)
    assert any(n.op_type == "DequantizeLinear" for n in result.graph.node)  # int8 after pruning
    fc1_weight = next(i for i in result.graph.initializer if i.dims and i.dims[0] < HIDDEN and len(i.dims) == 2 and i.dims[1] == 32)
    assert fc1_weight.dims[0] == HIDDEN // 2  # the recipe tries ratios up to 1/2: every one removes only dead units
    held_out = feeds(8, seed=11)
    assert cosine(fp32_outputs(result, held_out), fp32_outputs(redundant_mlp(), held_out)) >= 0.99  # pruning free, int8 within the guard


def test_budget_stops_the_search_after_the_first_ratio() -> None:
    _, modified, stats = run_search({"ratios": [0.25, 0.5, 0.625], "budget_s": 1e-9})
    assert stats["search_cut_short"] is True and [c["ratio"] for c in stats["curve"]] == [0.25]
    assert modified and stats["ratio"] == 0.25  # the one ratio that ran is within the bound
    _, _, free = run_search({"ratios": [0.25, 0.5]})
    assert free["search_cut_short"] is False and free["search_seconds"] >= 0
