"""close-float-islands alone: each rule closes its island, keeps the numbers, refuses with a reason.

Models: float graphs quantized the way the pipeline does it (annotate-quantization + insert-qdq on
ranges measured here with onnxruntime), or QDQ graphs written by hand for the refusals and for
requantize chains (onnxq's own insert-qdq never writes one).

Tolerances: against onnxruntime fp32, cosine >= 0.99 (one quantization step of the coarsest
activation on these sizes); a rewrite against the QDQ graph it started from, within one output step
(hardsigmoid-add computes the same integers up to float rounding; fold-weight-dq the same weights).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq import ir
from onnxq.api.options import ConversionOptions
from onnxq.api.pipelines import PipelineInputs, build_steps
from onnxq.context import PassContext
from onnxq.errors import ConfigError
from onnxq.passes.quantization.close_float_islands import CloseFloatIslandsConfig, close_islands, float_islands
from tests.helpers import cosine, optimized_ops, run
from tests.passes.quantization._pass_util import count, load, measured_ranges, parse_with, run_pass, samples, to_qdq

H18 = '<ir_version: 8, opset_import: ["" : 18]>\n'

#: A squeeze-excite-like gate: conv -> HardSigmoid gate -> Mul -> conv (the gate between int8 ops).
SE_GATE = (
    H18
    + """
g (float[1, 4, 8, 8] x) => (float[1, 4, 8, 8] y) {
  c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  gate = HardSigmoid <alpha = 0.1666667, beta = 0.5> (c1)
  m = Mul (c1, gate)
  y = Conv <pads = [1, 1, 1, 1]> (m, w2, b2)
}
"""
)
SE_WEIGHTS = {"w1": (4, 4, 3, 3), "b1": (4,), "w2": (4, 4, 3, 3), "b2": (4,)}


def _quantized_gate() -> tuple[onnx.ModelProto, ir.Model, list[dict[str, np.ndarray]]]:
    proto = parse_with(SE_GATE, SE_WEIGHTS, seed=1)
    data = samples((1, 4, 8, 8), 8, seed=2)
    model, _ = to_qdq(load(proto), measured_ranges(proto, data))
    return proto, model, data


def _full_check(model: ir.Model) -> None:
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


# ---- hardsigmoid-add -----------------------------------------------------------------------------
def test_hardsigmoid_gate_becomes_an_int8_add(tmp_path: Path) -> None:
    proto, model, data = _quantized_gate()
    assert [n.op for n in float_islands(model)] == ["HardSigmoid"]
    before = ir.clone(model)
    assert "HardSigmoid" in optimized_ops(before, tmp_path)  # onnxruntime runs it in float: the island

    res = run_pass("close-float-islands", model, PassContext())
    assert res.modified and res.stats["closed.hardsigmoid-add"] == 1
    assert res.stats["islands_before"] == 1 and res.stats["islands_after"] == 0
    assert float_islands(res.model) == [] and count(res.model, "HardSigmoid") == 0
    _full_check(res.model)
    executed = optimized_ops(res.model, tmp_path)
    assert "HardSigmoid" not in executed and "QLinearAdd" in executed

    for feeds in data[:3]:
        ref, old, new = run(proto, feeds)[0], run(before, feeds)[0], run(res.model, feeds)[0]
        assert cosine(ref, new) >= 0.99
        assert cosine(ref, new) >= cosine(ref, old) - 1e-3  # same integers up to float rounding


def test_second_run_changes_nothing() -> None:
    _, model, _ = _quantized_gate()
    run_pass("close-float-islands", model, PassContext())
    again = run_pass("close-float-islands", model, PassContext())
    assert not again.modified and again.stats["closed"] == 0


def _hand_gate(out_scale: float, out_zp: int, alpha: float = 0.2) -> onnx.ModelProto:
    """``x → Q → DQ → HardSigmoid → Q(out) → DQ → y`` with hand-picked parameters."""
    c = [numpy_helper.from_array(np.asarray(v, t), n) for n, v, t in
         [("s", 0.05, np.float32), ("z", 128, np.uint8), ("so", out_scale, np.float32), ("zo", out_zp, np.uint8)]]  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("HardSigmoid", ["xd"], ["h"], alpha=alpha, beta=0.5, name="gate"),
        helper.make_node("QuantizeLinear", ["h", "so", "zo"], ["hq"]),
        helper.make_node("DequantizeLinear", ["hq", "so", "zo"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], c)  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    return proto


def test_hand_gate_numbers_match_float() -> None:
    proto = _hand_gate(1 / 255, 0)
    x = {"x": np.linspace(-6, 6, 16, dtype=np.float32).reshape(1, 16)}
    res = run_pass("close-float-islands", load(proto), PassContext())
    assert res.modified
    expected = np.clip(0.2 * x["x"] + 0.5, 0, 1)
    np.testing.assert_allclose(run(res.model, x)[0], expected, atol=0.05 * 0.2 + 1 / 255)  # input step·α + output step
    np.testing.assert_allclose(run(res.model, x)[0], run(proto, x)[0], atol=1 / 255 + 1e-6)


@pytest.mark.parametrize(
    ("scale", "zp", "alpha", "why"),
    [(2 / 255, 128, 0.2, "exceeds [0, 1]"), (2 / 255, 0, 0.2, "exceeds [0, 1]"), (1 / 255, 0, -0.2, "not positive")],
)
def test_gate_refusals_keep_the_graph(scale: float, zp: int, alpha: float, why: str) -> None:
    ctx = PassContext()
    res = run_pass("close-float-islands", load(_hand_gate(scale, zp, alpha)), ctx)
    assert not res.modified and count(res.model, "HardSigmoid") == 1
    assert any(why in s.reason for s in ctx.skips)


# ---- requantize-chain ----------------------------------------------------------------------------
def _chain(s1: float, z1: int, s2: float, z2: int) -> onnx.ModelProto:
    """``x → Q1 → DQ1 → Q2 → DQ2 → Relu → y`` (the Relu keeps DQ2 from being the graph output)."""
    c = [numpy_helper.from_array(np.asarray(v, t), n) for n, v, t in
         [("s1", s1, np.float32), ("z1", z1, np.uint8), ("s2", s2, np.float32), ("z2", z2, np.uint8)]]  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s1", "z1"], ["q1"], name="q1"),
        helper.make_node("DequantizeLinear", ["q1", "s1", "z1"], ["d1"], name="dq1"),
        helper.make_node("QuantizeLinear", ["d1", "s2", "z2"], ["q2"], name="q2"),
        helper.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["d2"], name="dq2"),
        helper.make_node("Relu", ["d2"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], c)  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _qdq_pairs(model: ir.Model) -> int:
    return count(model, "QuantizeLinear")


def test_requantize_chain_becomes_one_quantization() -> None:
    proto = _chain(0.04, 128, 0.02, 128)  # Q1 covers [-5.1, 5.1], Q2 [-2.6, 2.5]
    x = {"x": np.linspace(-4, 4, 64, dtype=np.float32).reshape(1, 64)}
    res = run_pass("close-float-islands", load(proto), PassContext())
    assert res.modified and res.stats["closed.requantize-chain"] == 1
    assert _qdq_pairs(res.model) == 1  # Q1 and DQ1 now unread: removed by the pass manager
    _full_check(res.model)
    expected = np.maximum(np.clip(x["x"], -2.56, 2.54), 0)
    np.testing.assert_allclose(run(res.model, x)[0], expected, atol=0.02 / 2 + 1e-6)  # half a step: one rounding
    np.testing.assert_allclose(run(res.model, x)[0], run(proto, x)[0], atol=0.02 + 1e-6)


def test_identical_pair_is_dropped() -> None:
    proto = _chain(0.02, 128, 0.02, 128)
    x = {"x": np.linspace(-4, 4, 64, dtype=np.float32).reshape(1, 64)}
    res = run_pass("close-float-islands", load(proto), PassContext())
    assert res.modified and _qdq_pairs(res.model) == 1
    np.testing.assert_array_equal(run(res.model, x)[0], run(proto, x)[0])


def test_chain_whose_first_step_clips_more_is_kept() -> None:
    ctx = PassContext()
    res = run_pass("close-float-islands", load(_chain(0.01, 128, 0.04, 128)), ctx)
    assert not res.modified and _qdq_pairs(res.model) == 2
    assert any("does not cover" in s.reason for s in ctx.skips)


# ---- bypass-float-reader -------------------------------------------------------------------------
#: SmoothQuant's shape: a LayerNorm output read by an int8 MatMul and by a per-channel "unsmooth" Mul.
RESIDUAL = (
    H18
    + """
g (float[1, 16, 32] x) => (float[1, 16, 32] y) {
  ln = LayerNormalization <axis = -1> (x, gamma, beta)
  m = MatMul (ln, w)
  u = Mul (ln, c)
  y = Add (m, u)
}
"""
)


def test_float_reader_reads_the_float_tensor(tmp_path: Path) -> None:
    proto = parse_with(RESIDUAL, {"gamma": (32,), "beta": (32,), "w": (32, 32), "c": (32,)}, seed=5)
    data = samples((1, 16, 32), 8, seed=6)
    model, _ = to_qdq(load(proto), measured_ranges(proto, data))
    mul = next(n for n in ir.iter_nodes(model.graph) if n.op == "Mul")
    assert ir.producer(mul.inputs[0]).op == "DequantizeLinear"  # type: ignore[union-attr]
    before = ir.clone(model)
    res = run_pass("close-float-islands", model, PassContext())
    assert res.modified and res.stats["closed.bypass-float-reader"] == 1
    mul = next(n for n in ir.iter_nodes(res.model.graph) if n.op == "Mul")
    matmul = next(n for n in ir.iter_nodes(res.model.graph) if n.op == "MatMul")
    assert ir.producer(mul.inputs[0]).op == "LayerNormalization"  # type: ignore[union-attr]
    assert ir.producer(matmul.inputs[0]).op == "DequantizeLinear"  # type: ignore[union-attr]
    _full_check(res.model)
    assert optimized_ops(res.model, tmp_path).count("DequantizeLinear") < optimized_ops(before, tmp_path).count("DequantizeLinear")
    for feeds in data[:3]:
        ref, old, new = run(proto, feeds)[0], run(before, feeds)[0], run(res.model, feeds)[0]
        assert cosine(ref, new) >= 0.99 and cosine(ref, new) >= cosine(ref, old) - 1e-4
    assert not run_pass("close-float-islands", res.model, PassContext()).modified


def test_int8_producer_keeps_its_sole_quantize() -> None:
    """A Conv's output feeds its Q only (else onnxruntime cannot make it a QLinearConv): no bypass."""
    _, model, _ = _quantized_gate()
    res = run_pass("close-float-islands", model, PassContext(), rules=("bypass-float-reader",))
    assert not res.modified


# ---- fold-weight-dq ------------------------------------------------------------------------------
UPSAMPLE = (
    H18
    + """
g (float[1, 4, 8, 8] x) => (float[1, 4, 16, 16] y) {
  c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  r1 = Relu (c1)
  u = ConvTranspose <strides = [2, 2]> (r1, wt, bt)
  r2 = Relu (u)
  y = Conv <pads = [1, 1, 1, 1]> (r2, w2, b2)
}
"""
)


def test_unfused_conv_transpose_reads_float_weights() -> None:
    proto = parse_with(UPSAMPLE, {"w1": (4, 4, 3, 3), "b1": (4,), "wt": (4, 4, 2, 2), "bt": (4,), "w2": (4, 4, 3, 3), "b2": (4,)}, seed=3)
    data = samples((1, 4, 8, 8), 8, seed=4)
    model, _ = to_qdq(load(proto), measured_ranges(proto, data))
    convt = next(n for n in ir.iter_nodes(model.graph) if n.op == "ConvTranspose")
    assert all(ir.producer(t) is not None and ir.producer(t).op == "DequantizeLinear" for t in convt.inputs[1:])  # type: ignore[union-attr]
    before = ir.clone(model)
    res = run_pass("close-float-islands", model, PassContext())
    assert res.stats["closed.fold-weight-dq"] == 2  # weight and bias
    convt = next(n for n in ir.iter_nodes(res.model.graph) if n.op == "ConvTranspose")
    assert all(ir.is_constant(t) for t in convt.inputs[1:])
    _full_check(res.model)
    for feeds in data[:2]:
        # Same weights, same numbers as the graph interpreted node by node; onnxruntime's optimized
        # graph may round the island's output one step differently (its fusions differ once the
        # weight is a constant), which the cosine against fp32 covers.
        np.testing.assert_allclose(_unoptimized(res.model, feeds), _unoptimized(before, feeds), atol=1e-5)
        assert cosine(run(proto, feeds)[0], run(res.model, feeds)[0]) >= 0.99


def _unoptimized(model: ir.Model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(ir.to_proto(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


# ---- config and pipeline -------------------------------------------------------------------------
def test_rules_can_be_chosen_and_are_checked() -> None:
    _, model, _ = _quantized_gate()
    res = run_pass("close-float-islands", model, PassContext(), rules=("requantize-chain",))
    assert not res.modified and count(res.model, "HardSigmoid") == 1
    with pytest.raises(ConfigError, match="unknown rule"):
        CloseFloatIslandsConfig(rules=("no-such-rule",))


def test_static_pipeline_runs_it_after_insert_qdq() -> None:
    names = [s["pass"] for s in build_steps(ConversionOptions(), PipelineInputs(has_data=True, has_ranges=False))]
    assert names.index("close-float-islands") == names.index("insert-qdq") + 1 or "apply-precision-map" in names
    assert names.index("close-float-islands") > names.index("insert-qdq")


def test_quantize_static_leaves_no_hardsigmoid_island(tmp_path: Path) -> None:
    """End to end (mobilenet builder: HardSwish written out, SE gates): every gate runs in int8."""
    from models import build
    from onnxq.api import quantize_static
    from tests.helpers import random_feeds

    src = build("mobilenet", input_size=32, width=8)
    data = [random_feeds(src, seed=i, dims={"N": 2}) for i in range(4)]
    res = quantize_static(src, data, tune=False)
    assert float_islands(res.model) == []
    executed = optimized_ops(res.model, tmp_path)
    assert "HardSigmoid" not in executed and "QLinearAdd" in executed
    stats = next(p for p in res.report.to_dict()["passes"] if p["pass"] == "close-float-islands")["stats"]
    assert stats["islands_before"] > 0 and stats["islands_after"] == 0
    assert cosine(run(src, data[0])[0], run(res.model, data[0])[0]) >= 0.99


def test_close_islands_outside_a_pipeline() -> None:
    """The helper a tuner calls on its candidate graphs: same rewrite, dead Q/DQ gone, still valid."""
    _, model, _ = _quantized_gate()
    dq_before = count(model, "DequantizeLinear")
    stats = close_islands(model)
    assert stats["closed.hardsigmoid-add"] == 1 and float_islands(model) == []
    assert count(model, "DequantizeLinear") == dq_before + 2  # the scaled DQ and beta's DQ in, the old DQ still read by Mul
    _full_check(model)
