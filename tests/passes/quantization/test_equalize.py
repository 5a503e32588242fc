"""``equalize-cross-layer``: exact in float, equal ranges after it, a per-tensor quantization that it rescues,
the pairs it refuses (ReLU6, other readers) and models without any pair."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxq import ir
from onnxq.passes.compensation.equalize_cross_layer import equalization_scales, find_pairs
from tests.passes.quantization._compensation_util import outputs, quantized_sqnr, run_steps, sqnr_db, static_steps
from tests.passes.quantization._pass_util import parse_with
from tests.passes.quantization._separable_model import build_separable_cnn, image_samples

CALIB = image_samples(16, 1)
HELD_OUT = image_samples(8, 2, batch=4)
PREP = [{"pass": "upgrade-opset", "target": 17}, {"pass": "record-batchnorm-stats"}, {"pass": "cleanup"}]


@pytest.fixture(scope="module")
def separable() -> onnx.ModelProto:
    return build_separable_cnn()


def _max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_scales_make_both_ranges_the_geometric_mean() -> None:
    r1, r2 = np.array([4.0, 0.01, 0.0, 2.0]), np.array([1.0, 1.0, 3.0, 0.0])
    s = equalization_scales(r1, r2)
    assert np.allclose((r1 / s)[:2], (r2 * s)[:2]) and np.allclose((r1 / s)[:2], np.sqrt(r1 * r2)[:2])
    assert np.all(s[2:] == 1.0)  # a zero range has nothing to balance


def test_float_output_unchanged_and_ranges_equal(separable: onnx.ModelProto) -> None:
    model, ctx, recs = run_steps(separable, [*PREP, {"pass": "equalize-cross-layer", "absorb_high_bias": False}], CALIB)
    st = recs["equalize-cross-layer"].stats
    assert recs["equalize-cross-layer"].modified
    # stem→dw1, dw→pw in each of 3 blocks, pw→dw between blocks, last pw → (GAP, Flatten) → Gemm
    assert st["pairs"] == 7 and st["refused"] == 0 and st["max_scale"] > 10
    ref, got = outputs(separable, HELD_OUT), outputs(model, HELD_OUT)
    assert _max_rel_diff(ref, got) <= 1e-4
    pairs, _ = find_pairs(model)  # the converged state: every pair's ranges agree
    for p in pairs:
        assert np.allclose(p.first.out_ranges(), p.second.in_ranges(), rtol=5e-3)


def _weight(model: ir.Model, name: str, index: int = 1) -> np.ndarray:
    value = ir.constant_array(next(n for n in model.graph.nodes if n.name == name).inputs[index])
    assert value is not None
    return value.astype(np.float64)


def test_batchnorm_statistics_follow_the_rescaling(separable: onnx.ModelProto) -> None:
    folded, before, _ = run_steps(separable, PREP, None)
    model, after, _ = run_steps(separable, [*PREP, {"pass": "equalize-cross-layer", "absorb_high_bias": False}], None)
    assert before.batchnorm_stats is not None and after.batchnorm_stats is not None
    # output channel c of the stem was divided by s_c (its weights say which); its mean and std too
    inv_s = (_weight(model, "stem/conv") / _weight(folded, "stem/conv")).reshape(16, -1)[:, 0]
    assert inv_s.max() / inv_s.min() > 10
    old, new = before.batchnorm_stats["stem/conv"], after.batchnorm_stats["stem/conv"]
    assert np.allclose(new.std, old.std * inv_s) and np.allclose(new.mean, old.mean * inv_s)


def test_per_tensor_quantization_gains(separable: onnx.ModelProto) -> None:
    plain = quantized_sqnr(separable, static_steps(), CALIB, HELD_OUT)
    cle = quantized_sqnr(separable, static_steps(before=[{"pass": "equalize-cross-layer"}]), CALIB, HELD_OUT)
    # measured 12.7 dB → 25.4 dB: the folded depthwise filters span two decades; per-tensor int8 crushes the small ones
    assert cle > plain + 8.0, (plain, cle)


def _high_bias(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The separable net with depthwise BN beta raised to 0-4 gamma: mostly-positive pre-activations."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    inits = {t.name: t for t in out.graph.initializer}
    rng = np.random.default_rng(5)
    for bn in (n for n in out.graph.node if n.op_type == "BatchNormalization" and "/dw/" in n.name):
        gamma = numpy_helper.to_array(inits[bn.input[1]])
        inits[bn.input[2]].CopyFrom(numpy_helper.from_array((rng.uniform(0, 4, gamma.size) * gamma).astype(np.float32), bn.input[2]))
    return out


def test_high_bias_absorption(separable: onnx.ModelProto) -> None:
    proto = _high_bias(separable)
    ref = outputs(proto, HELD_OUT)
    model, ctx, recs = run_steps(proto, [*PREP, {"pass": "equalize-cross-layer"}], CALIB)
    assert recs["equalize-cross-layer"].stats["absorbed_channels"] > 0
    # exact wherever h >= c: far below int8 noise on held-out data
    assert sqnr_db(ref, outputs(model, HELD_OUT)) > 60
    # the depthwise pre-activation mean moved into the pointwise bias, and the recorded statistics say so
    plain, ctx_eq, _ = run_steps(proto, [*PREP, {"pass": "equalize-cross-layer", "absorb_high_bias": False}], CALIB)
    dw = "block1/dw/conv"
    b_abs, b_eq = _weight(model, dw, 2), _weight(plain, dw, 2)
    assert np.all(b_abs <= b_eq + 1e-6) and np.any(b_abs < b_eq - 1e-3)
    assert ctx.batchnorm_stats is not None and ctx_eq.batchnorm_stats is not None
    assert np.allclose(ctx.batchnorm_stats[dw].mean, ctx_eq.batchnorm_stats[dw].mean - (b_eq - b_abs), atol=1e-4)


RELU6 = """
<ir_version: 8, opset_import: ["" : 17]>
relu6 (float[1,4,8,8] x) => (float[1,6,8,8] y) <float lo = {0.0}, float hi = {6.0}> {
  [conv1] a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  [clip] r = Clip (a, lo, hi)
  [conv2] y = Conv (r, w2, b2)
}
"""
RELU6_WEIGHTS = {"w1": (8, 4, 3, 3), "b1": (8,), "w2": (6, 8, 1, 1), "b2": (6,)}


def test_relu6_breaks_homogeneity_and_is_skipped() -> None:
    model, ctx, recs = run_steps(parse_with(RELU6, RELU6_WEIGHTS), [{"pass": "equalize-cross-layer"}], None)
    assert not recs["equalize-cross-layer"].modified
    assert recs["equalize-cross-layer"].stats["pairs"] == 0 and recs["equalize-cross-layer"].stats["refused"] == 1
    (skip,) = [s for s in ctx.skips if s.pass_name == "equalize-cross-layer"]
    assert skip.node == "conv2" and "not positively homogeneous" in skip.reason and "conv1" in skip.reason


MLP = """
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[4,16] x) => (float[4,8] y) {
  [mm1] h = MatMul (x, w1)
  [add1] hb = Add (h, b1)
  [relu] r = Relu (hb)
  [gemm] g = Gemm <transB=1> (r, w2, b2)
  [relu2] r2 = Relu (g)
  [mm2] y = MatMul (r2, w3)
}
"""
MLP_WEIGHTS = {"w1": (16, 32), "b1": (32,), "w2": (24, 32), "b2": (24,), "w3": (24, 8)}


def test_matmul_gemm_pairs_are_exact() -> None:
    proto = parse_with(MLP, MLP_WEIGHTS, seed=3)
    # make the hidden channels unbalanced, as trained layers are
    inits = {t.name: t for t in proto.graph.initializer}
    w1 = numpy_helper.to_array(inits["w1"]) * np.logspace(-2, 0, 32, dtype=np.float32)[None, :]
    inits["w1"].CopyFrom(numpy_helper.from_array(w1.astype(np.float32), "w1"))
    feeds = [{"x": np.random.default_rng(i).standard_normal((4, 16)).astype(np.float32)} for i in range(4)]
    model, _, recs = run_steps(proto, [{"pass": "equalize-cross-layer", "absorb_high_bias": False}], feeds)
    assert recs["equalize-cross-layer"].stats["pairs"] == 2 and recs["equalize-cross-layer"].stats["max_scale"] > 5
    assert _max_rel_diff(outputs(proto, feeds), outputs(model, feeds)) <= 1e-4


SINGLE = """
<ir_version: 8, opset_import: ["" : 17]>
single (float[1,4,8,8] x) => (float[1,8,8,8] y) {
  [conv] c = Conv <pads=[1,1,1,1]> (x, w, b)
  [sig] y = HardSwish (c)
}
"""


def test_no_pair_no_change() -> None:
    proto = parse_with(SINGLE, {"w": (8, 4, 3, 3), "b": (8,)})
    model, ctx, recs = run_steps(proto, [{"pass": "equalize-cross-layer"}], None)
    assert not recs["equalize-cross-layer"].modified
    assert recs["equalize-cross-layer"].stats == {"pairs": 0, "sweeps": 0, "absorbed_channels": 0, "refused": 0}
    assert not [s for s in ctx.skips if s.pass_name == "equalize-cross-layer"]
    assert ir.to_proto(model).SerializeToString() == ir.to_proto(ir.load(proto)).SerializeToString()
