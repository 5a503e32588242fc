"""insert-qdq alone: the Q/DQ nodes it materializes from a hand-made context (ranges + plan).

The plan comes from annotate-quantization (or ``build_plan``) on hand-written ranges, so every
scale is known in advance: uint8 asymmetric activations ``s = (max(hi, 0) - min(lo, 0)) / 255``,
int8 symmetric weights ``s_c = max|W_c| / 127`` (tests of exact scales pin ``reduce_range=False``;
numerics tests keep the default, which turns 7-bit weights on where this CPU's kernel saturates),
int32 biases ``s_b = s_x · s_w``.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxq import ir
from onnxq.calibration.ranges import RangeSet
from onnxq.context import PassContext, Skip
from onnxq.errors import PreconditionError
from onnxq.pass_base import make_pass
from onnxq.passes.quantization.annotate import build_plan
from onnxq.passes.quantization.insert_qdq import INT32_MAX, guard_bias_overflow
from onnxq.plan import QuantizationConfig
from tests.helpers import run
from tests.passes.quantization._pass_util import annotate, count, load, measured_ranges, node, parse_with, range_set, run_pass, samples, to_qdq
from tests.passes.quantization.test_annotate import CHAIN, CHAIN_RANGES, CHAIN_WEIGHTS, SHARED, SHARED_WEIGHTS

CONV = """
<ir_version: 8, opset_import: ["" : {opset}]>
conv (float[1,4,6,6] x) => (float[1,8,6,6] y) {{
  [conv] y = Conv <pads=[1,1,1,1]> (x, w, b)
}}
"""
CONV_WEIGHTS = {"w": (8, 4, 3, 3), "b": (8,)}

MATMUL = """
<ir_version: 8, opset_import: ["" : 18]>
mm (float[3,16] x) => (float[3,8] y) {
  [mm] h = MatMul (x, w)
  [relu] y = Relu (h)
}
"""


def _conv(opset: int = 18) -> ir.Model:
    return load(parse_with(CONV.format(opset=opset), CONV_WEIGHTS))


def _uint8(lo: float, hi: float) -> tuple[np.float32, int]:
    scale = (max(hi, 0.0) - min(lo, 0.0)) / 255
    return np.float32(scale), int(np.clip(np.round(-min(lo, 0.0) / scale), 0, 255))


def _dq_of(model: ir.Model, reader: str, index: int) -> ir.Node:
    """The DequantizeLinear feeding input ``index`` of node ``reader``."""
    dq = ir.producer(node(model, reader).inputs[index])
    assert dq is not None and dq.op == "DequantizeLinear"
    return dq


def _params(dq: ir.Node) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stored integers, scale, zero point) of a DequantizeLinear with constant inputs."""
    return tuple(np.asarray(ir.constant_array(t)) for t in dq.inputs[:3])  # type: ignore[return-value]


def _activation_q(model: ir.Model, tensor: str) -> ir.Node:
    return next(n for n in ir.iter_nodes(model.graph) if n.op == "QuantizeLinear" and n.inputs[0].name in (tensor, f"{tensor}/float"))


def test_chain_structure_and_graph_output_name() -> None:
    model = load(parse_with(CHAIN, CHAIN_WEIGHTS))
    model, ctx = to_qdq(model, range_set(CHAIN_RANGES))
    # activations x, r1, r2, y: one Q and one DQ each; 3 weights + 2 biases: one DQ each
    assert count(model, "QuantizeLinear") == 4
    assert count(model, "DequantizeLinear") == 4 + 5
    for conv in ("conv1", "conv2", "conv3"):
        assert all(ir.producer(t).op == "DequantizeLinear" for t in node(model, conv).inputs)  # type: ignore[union-attr]
    # the graph output keeps its name, now on the dequantized tensor
    (out,) = model.graph.outputs
    assert out.name == "y" and ir.producer(out).op == "DequantizeLinear"  # type: ignore[union-attr]
    assert node(model, "conv3").outputs[0].name == "y/float"
    # the Relus are folded into the requantization: no Q/DQ between a conv and its Relu
    assert ir.producer(node(model, "relu1").inputs[0]).name == "conv1"  # type: ignore[union-attr]
    ir.check(model, full=True)


def test_result_stats_and_modified() -> None:
    model = load(parse_with(CHAIN, CHAIN_WEIGHTS))
    ctx = annotate(model, range_set(CHAIN_RANGES))
    result = run_pass("insert-qdq", model, ctx)
    assert result.modified is True
    assert result.stats == {"activations": 4, "weights": 3, "biases": 2, "bias_overflow_channels": 0}


def test_empty_plan_leaves_the_model_alone_and_records_every_float_node() -> None:
    model = load(parse_with(CHAIN, CHAIN_WEIGHTS))
    ctx = annotate(model, range_set(CHAIN_RANGES), op_types=("Gemm",))
    before = ir.to_proto(model).SerializeToString()
    result = run_pass("insert-qdq", model, ctx)
    assert result.modified is False
    assert ir.to_proto(model).SerializeToString() == before
    assert [s.node for s in ctx.skips] == ["conv1", "relu1", "conv2", "relu2", "conv3"]
    assert {s.reason for s in ctx.skips} == {"op type not in --op-types (Gemm)"}


def test_every_float_decision_becomes_a_skip_record() -> None:
    model = load(parse_with(CHAIN, CHAIN_WEIGHTS))
    ctx = annotate(model, range_set(CHAIN_RANGES), keep_first=1, exclude_nodes=("conv3",))
    run_pass("insert-qdq", model, ctx)
    assert ctx.plan is not None
    expected = [Skip(d.node, d.op, d.reason, "insert-qdq", "float") for d in ctx.plan.float_nodes()]
    assert ctx.skips == expected
    assert {s.node for s in ctx.skips} == {"conv1", "relu1", "conv3"}


def test_activation_scale_and_zero_point() -> None:
    model, _ = to_qdq(_conv(), range_set({"x": (-1.5, 2.5), "y": (-4.0, 6.0)}))
    for tensor, (lo, hi) in (("x", (-1.5, 2.5)), ("y", (-4.0, 6.0))):
        q = _activation_q(model, tensor)
        scale, zp = _uint8(lo, hi)
        assert np.asarray(ir.constant_array(q.inputs[1])) == scale
        assert np.asarray(ir.constant_array(q.inputs[2])).dtype == np.uint8
        assert int(np.asarray(ir.constant_array(q.inputs[2]))) == zp
        # the DQ reads the Q's output with the same parameters
        dq = q.outputs[0].outputs[0]
        assert dq.op == "DequantizeLinear" and dq.inputs[1] is q.inputs[1] and dq.inputs[2] is q.inputs[2]


def test_share_group_gets_one_scale_over_the_union_of_its_ranges() -> None:
    model = load(parse_with(SHARED, SHARED_WEIGHTS))
    model, ctx = to_qdq(model, range_set({"x": (-1, 1), "a": (-2, 2), "b": (-3, 1), "cat": (-3, 2), "m": (-2.5, 1.5), "y": (-5, 5)}))
    qs = {t: _activation_q(model, t) for t in ("a", "b", "cat", "m")}
    assert len({id(q.inputs[1]) for q in qs.values()}) == 1  # one scale constant for the group
    assert np.asarray(ir.constant_array(qs["a"].inputs[1])) == _uint8(-3, 2)[0]
    assert np.asarray(ir.constant_array(_activation_q(model, "x").inputs[1])) == _uint8(-1, 1)[0]


def _conv_act_conv(act: str) -> ir.Model:
    """conv1 -> ``act`` -> conv2 on a [1, 4, 6, 6] input, tensors ``c`` (conv1) and ``h`` (the activation)."""
    text = f"""
<ir_version: 8, opset_import: ["" : 18]>
g (float[1,4,6,6] x) => (float[1,4,6,6] y) {{
  [conv1] c = Conv (x, w1)
  [act] h = {act} (c)
  [conv2] y = Conv (h, w2)
}}
"""
    return load(parse_with(text, {"w1": (4, 4, 1, 1), "w2": (4, 4, 1, 1)}))


def test_fixed_range_overrides_the_calibrated_one() -> None:
    model, _ = to_qdq(_conv_act_conv("Sigmoid"), range_set({"x": (-1, 1), "c": (-3, 3), "h": (0.1, 0.4), "y": (-1, 1)}))
    q = _activation_q(model, "h")
    assert np.asarray(ir.constant_array(q.inputs[1])) == np.float32(1 / 255)
    assert int(np.asarray(ir.constant_array(q.inputs[2]))) == 0


def test_tensor_read_only_by_hardswish_is_clamped_to_its_live_interval() -> None:
    model, _ = to_qdq(_conv_act_conv("HardSwish"), range_set({"x": (-1, 1), "c": (-10, 4), "h": (-0.375, 4), "y": (-1, 1)}))
    # HardSwish(x) = 0 for every x <= -3: the grid need not cover [-10, -3)
    assert np.asarray(ir.constant_array(_activation_q(model, "c").inputs[1])) == _uint8(-3, 4)[0]


@pytest.mark.parametrize("per_channel", [True, False])
def test_conv_weight_and_bias_are_stored_quantized(per_channel: bool) -> None:
    model = _conv()
    w = np.asarray(ir.constant_array(node(model, "conv").inputs[1]))
    b = np.asarray(ir.constant_array(node(model, "conv").inputs[2]))
    model, _ = to_qdq(model, range_set({"x": (-2, 2), "y": (-8, 8)}), per_channel=per_channel, reduce_range=False)
    s_x = _uint8(-2, 2)[0]

    w_dq = _dq_of(model, "conv", 1)
    q_w, s_w, z_w = _params(w_dq)
    absmax = np.abs(w).reshape(8, -1).max(axis=1) if per_channel else np.abs(w).max()
    assert q_w.dtype == np.int8 and z_w.dtype == np.int8 and not z_w.any()
    np.testing.assert_array_equal(s_w, (absmax / 127).astype(np.float32))
    np.testing.assert_array_equal(q_w, np.rint(w / (s_w.reshape(-1, 1, 1, 1) if per_channel else s_w)).astype(np.int8))
    assert s_w.shape == ((8,) if per_channel else ())
    assert (w_dq.attrs.get("axis") == 0) if per_channel else ("axis" not in w_dq.attrs)

    b_dq = _dq_of(model, "conv", 2)
    q_b, s_b, z_b = _params(b_dq)
    assert q_b.dtype == np.int32 and z_b.dtype == np.int32 and not z_b.any()
    np.testing.assert_allclose(s_b, np.float64(s_x) * s_w.astype(np.float64), rtol=1e-7)
    np.testing.assert_array_equal(q_b, np.rint(b.astype(np.float64) / s_b.astype(np.float64)).astype(np.int32))
    assert (b_dq.attrs.get("axis") == 0) if per_channel else ("axis" not in b_dq.attrs)


def test_matmul_weight_is_per_output_column() -> None:
    model = load(parse_with(MATMUL, {"w": (16, 8)}))
    w = np.asarray(ir.constant_array(node(model, "mm").inputs[1]))
    model, _ = to_qdq(model, range_set({"x": (-1, 1), "h": (-3, 3), "y": (0, 3)}), reduce_range=False)
    dq = _dq_of(model, "mm", 1)
    q, s, _ = _params(dq)
    assert dq.attrs["axis"] == 1 and s.shape == (8,)
    np.testing.assert_array_equal(s, (np.abs(w).max(axis=0) / 127).astype(np.float32))
    np.testing.assert_array_equal(q, np.rint(w / s).astype(np.int8))


def test_bias_overflow_raises_only_the_overflowing_channels_weight_scales() -> None:
    model = _conv()
    conv = node(model, "conv")
    w = np.asarray(ir.constant_array(conv.inputs[1]))
    b = np.array([300.0, 0.01, -2000.0, 0.2, 50.0, -0.3, 1e4, 0.0], np.float32)
    conv.inputs[2] = ir.make_constant("b_big", b)
    # a nearly constant input: s_x is tiny, so b / (s_x · s_w) exceeds int32 for the large biases
    ranges = range_set({"x": (-1e-4, 1e-4), "y": (-1, 1)})
    s_x = np.float64(_uint8(-1e-4, 1e-4)[0])
    s_w0 = (np.abs(w).reshape(8, -1).max(axis=1) / 127).astype(np.float32).astype(np.float64)
    overflowing = np.abs(b) / (s_x * s_w0) > INT32_MAX
    assert 0 < overflowing.sum() < 8  # the test needs both kinds of channel

    ctx = annotate(model, ranges, reduce_range=False)
    result = run_pass("insert-qdq", model, ctx)
    assert result.stats["bias_overflow_channels"] == int(overflowing.sum())
    q_w, s_w, _ = _params(_dq_of(model, "conv", 1))
    q_b, s_b, _ = _params(_dq_of(model, "conv", 2))
    np.testing.assert_array_equal(s_w[~overflowing], s_w0[~overflowing].astype(np.float32))
    assert (s_w[overflowing] > s_w0[overflowing]).all()
    np.testing.assert_allclose(s_w[overflowing], np.abs(b[overflowing]) / (s_x * INT32_MAX), rtol=1e-5)
    # the weight is stored with the raised scales, and every bias now fits
    np.testing.assert_array_equal(q_w, np.rint(w / s_w.reshape(-1, 1, 1, 1)).astype(np.int8))
    assert (np.abs(q_b.astype(np.int64)) <= INT32_MAX).all()
    np.testing.assert_allclose(q_b.astype(np.float64) * s_b, b, rtol=1e-6, atol=s_b.max())


def test_guard_bias_overflow_is_vectorized() -> None:
    # |b| / (s_x · INT32_MAX) with s_x = 1e-6: 4.7e-4, 466, 4.7e-5, 4.66
    bias = np.array([1.0, -1e6, 0.1, 1e4])
    s_w, raised = guard_bias_overflow(bias, 1e-6, np.array([1.0, 1e-4, 1e-4, 1.0]))
    need = np.abs(bias) / (1e-6 * INT32_MAX)
    assert raised == 2
    np.testing.assert_array_equal(s_w[[0, 2]], [1.0, 1e-4])
    np.testing.assert_allclose(s_w[[1, 3]], need[[1, 3]], rtol=1e-5)
    assert (np.abs(bias) / (1e-6 * s_w) <= INT32_MAX).all()
    # a per-tensor scale broadcasts over the bias (only the 0.1 bias fits its scale of 1e-4)
    s_w, raised = guard_bias_overflow(bias, 1e-6, np.asarray(1e-4))
    assert s_w.shape == (4,) and raised == 3 and s_w[2] == 1e-4
    assert (np.abs(bias) / (1e-6 * s_w) <= INT32_MAX).all()


def _assert_near_fp32(model: ir.Model, proto: object, feeds_list: list[dict[str, np.ndarray]]) -> None:
    """QDQ vs onnxruntime fp32 on in-range inputs, in units of the output's quantization step ``s_y``.

    Tolerance: mean |error| <= 0.5 s_y and max |error| <= 3 s_y. The output's own rounding is at
    most s_y / 2; input and weight rounding propagated through the dot product adds about as much
    again (measured: max 1.4 s_y for the conv, 2.2 s_y for the MatMul, means 0.2-0.4 s_y). A wrong
    scale, zero point or axis misses this by orders of magnitude.
    """
    step = float(np.asarray(ir.constant_array(_activation_q(model, "y").inputs[1])))
    for feeds in feeds_list:
        diff = np.abs(run(model, feeds)[0] - run(proto, feeds)[0])
        assert diff.mean() <= 0.5 * step, f"mean error {diff.mean() / step:.2f} steps"
        assert diff.max() <= 3 * step, f"max error {diff.max() / step:.2f} steps"


@pytest.mark.parametrize(
    "cfg",
    [{}, {"per_channel": False}, {"activation_dtype": "int8", "activation_symmetric": True}],
    ids=["uint8-per-channel", "uint8-per-tensor", "int8-symmetric"],
)
def test_conv_numerics_within_about_one_output_step(cfg: dict[str, object]) -> None:
    proto = parse_with(CONV.format(opset=18), CONV_WEIGHTS)
    calibration = samples((1, 4, 6, 6), 16, seed=0)
    model, _ = to_qdq(load(proto), measured_ranges(proto, calibration), **cfg)
    _assert_near_fp32(model, proto, calibration[:6])


def test_matmul_relu_numerics_within_about_one_output_step() -> None:
    proto = parse_with(MATMUL, {"w": (16, 8)})
    calibration = samples((3, 16), 16, seed=1)
    model, _ = to_qdq(load(proto), measured_ranges(proto, calibration))
    assert count(model, "QuantizeLinear") == 2  # x and the Relu's output; h is folded into the Relu
    _assert_near_fp32(model, proto, calibration[:6])


def test_per_channel_weights_need_opset_13() -> None:
    model = _conv(opset=12)
    ctx = annotate(model, range_set({"x": (-1, 1), "y": (-1, 1)}))
    with pytest.raises(PreconditionError, match=r"per-channel DequantizeLinear\(axis\) needs opset >= 13, model has 12"):
        run_pass("insert-qdq", model, ctx)
    # per-tensor works on the same opset
    model, _ = to_qdq(_conv(opset=12), range_set({"x": (-1, 1), "y": (-1, 1)}), per_channel=False)
    assert count(model, "DequantizeLinear") == 4
    ir.check(model, full=True)


def test_quantize_linear_needs_opset_10() -> None:
    model = _conv(opset=9)
    ctx = annotate(model, range_set({"x": (-1, 1), "y": (-1, 1)}), per_channel=False)
    with pytest.raises(PreconditionError, match="QuantizeLinear needs opset >= 10, model has 9"):
        run_pass("insert-qdq", model, ctx)


@pytest.mark.parametrize("dtype", ["int16", "uint16"])
def test_16_bit_activations_need_opset_21(dtype: str) -> None:
    ranges = range_set({"x": (-1, 1), "y": (-1, 1)})
    model = _conv()
    # a hand-made plan (annotate itself refuses 16 bits below opset 21)
    ctx = PassContext(ranges=ranges, plan=build_plan(model, ranges, QuantizationConfig(activation_dtype=dtype)))
    with pytest.raises(PreconditionError, match="16-bit activations need opset >= 21, model has 18"):
        run_pass("insert-qdq", model, ctx)
    model, _ = to_qdq(_conv(opset=21), ranges, activation_dtype=dtype)
    zp = np.asarray(ir.constant_array(_activation_q(model, "x").inputs[2]))
    assert zp.dtype == np.dtype(dtype)
    ir.check(model, full=True)


def test_missing_plan_is_a_precondition_error() -> None:
    with pytest.raises(PreconditionError, match="insert-qdq needs a quantization plan"):
        make_pass("insert-qdq")(_conv(), PassContext(ranges=RangeSet({})))
