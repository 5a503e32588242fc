"""``correct-bias``: the grid it assumes is insert-qdq's, the mean output error it removes, the data-free
variant from BatchNormalization statistics, biases it adds (and plans), and what it refuses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxq import ir
from onnxq.errors import ConfigError
from onnxq.passes.compensation._grid import weight_grid
from onnxq.passes.compensation.correct_bias import clipped_normal_mean
from tests.passes.quantization._compensation_util import outputs, run_steps, sqnr_db, static_steps
from tests.passes.quantization._pass_util import parse_with
from tests.passes.quantization._separable_model import build_separable_cnn, image_samples

CALIB = image_samples(16, 1)
HELD_OUT = image_samples(8, 2, batch=4)
CLE = [{"pass": "equalize-cross-layer"}]


@pytest.fixture(scope="module")
def separable() -> onnx.ModelProto:
    return build_separable_cnn()


def _dq_weights(model: ir.Model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{reader node: (stored integers, dequantized values)}`` of every weight DequantizeLinear."""
    out = {}
    for dq in model.graph.nodes:
        q = ir.constant_array(dq.inputs[0]) if dq.op == "DequantizeLinear" else None
        if q is None or q.dtype != np.int8:
            continue
        scale = np.asarray(ir.constant_array(dq.inputs[1]), np.float32)
        axis = dq.attrs.get("axis")
        shape = [-1 if i == axis else 1 for i in range(q.ndim)] if axis is not None else []
        reader = dq.outputs[0].outputs[0]
        out[reader.name] = (q, (q.astype(np.float32) * (scale.reshape(shape) if shape else scale)).astype(np.float32))
    return out


@pytest.mark.parametrize("per_channel", [False, True])
def test_grid_is_the_one_insert_qdq_stores(separable: onnx.ModelProto, per_channel: bool) -> None:
    steps = static_steps(per_channel=per_channel)
    before, ctx, _ = run_steps(separable, steps[:-1], CALIB)
    after, _, _ = run_steps(separable, steps, CALIB)
    stored = _dq_weights(after)
    assert ctx.plan is not None and len(stored) == 8
    for wq in (w for w in ctx.plan.weights if w.kind == "weight"):
        w = ir.constant_array(next(n for n in before.graph.nodes if n.name == wq.node).inputs[1])
        assert w is not None
        grid = weight_grid(w, wq)
        q, values = stored[wq.node]
        assert np.array_equal(grid.integers(w), q) and np.array_equal(grid.fake_quantize(w), values)


def test_removes_the_mean_output_error(separable: onnx.ModelProto) -> None:
    ref = outputs(separable, HELD_OUT)
    plain, _, _ = run_steps(separable, static_steps(before=CLE), CALIB)
    fixed, _, recs = run_steps(separable, static_steps(before=CLE, after=[{"pass": "correct-bias"}]), CALIB)
    assert recs["correct-bias"].modified and recs["correct-bias"].stats["corrected"] == 8
    y0, y1 = outputs(plain, HELD_OUT), outputs(fixed, HELD_OUT)
    # the mean (over held-out samples) error of each logit shrinks, and so does the total error
    bias_before, bias_after = np.abs((y0 - ref).mean(axis=0)).mean(), np.abs((y1 - ref).mean(axis=0)).mean()
    assert bias_after < 0.6 * bias_before, (bias_before, bias_after)  # measured 0.0275 -> 0.0117
    assert sqnr_db(ref, y1) > sqnr_db(ref, y0) + 2.0  # measured 25.4 -> 30.1 dB


def test_data_free_variant_uses_batchnorm_statistics(separable: onnx.ModelProto) -> None:
    ref = outputs(separable, HELD_OUT)
    plain, _, _ = run_steps(separable, static_steps(before=CLE), CALIB)
    model, ctx, recs = run_steps(separable, static_steps(before=CLE, after=[{"pass": "correct-bias", "data_free": True}]), CALIB)
    st = recs["correct-bias"].stats
    # every layer but the Gemm head (its input is a Flatten of a GlobalAveragePool of a Relu: no Gaussian left)
    assert st["corrected"] == 7 and st["refused"] == 1
    assert sqnr_db(ref, outputs(model, HELD_OUT)) > sqnr_db(ref, outputs(plain, HELD_OUT)) + 1.0  # measured 25.4 -> 29.7 dB
    # without statistics it says so and changes nothing
    steps = [s for s in static_steps(before=CLE, after=[{"pass": "correct-bias", "data_free": True}]) if s["pass"] != "record-batchnorm-stats"]
    _, ctx, recs = run_steps(separable, steps, CALIB)
    assert not recs["correct-bias"].modified and any("no BatchNormalization statistics" in n for n in ctx.notes)


def test_clipped_normal_mean() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.3, 0.7, 400_000)
    assert np.isclose(clipped_normal_mean(np.array([0.3]), np.array([0.7]), 0.0, np.inf)[0], np.maximum(z, 0).mean(), atol=3e-3)
    assert np.isclose(clipped_normal_mean(np.array([0.3]), np.array([0.7]), 0.0, 0.5)[0], np.clip(z, 0, 0.5).mean(), atol=3e-3)


NO_BIAS = """
<ir_version: 8, opset_import: ["" : 17]>
nobias (float[1,4,8,8] x) => (float[1,6,8,8] y) {
  [conv1] a = Conv <pads=[1,1,1,1]> (x, w1)
  [relu] r = Relu (a)
  [conv2] y = Conv (r, w2)
}
"""


def test_adds_a_planned_int32_bias_where_there_was_none() -> None:
    proto = parse_with(NO_BIAS, {"w1": (8, 4, 3, 3), "w2": (6, 8, 1, 1)})
    inits = {t.name: t for t in proto.graph.initializer}  # a skewed weight: its rounding error has a mean
    inits["w1"].CopyFrom(numpy_helper.from_array((numpy_helper.to_array(inits["w1"]) * np.logspace(-2, 0, 8)[:, None, None, None]).astype(np.float32), "w1"))
    calib = [{"x": np.random.default_rng(i).standard_normal((1, 4, 8, 8)).astype(np.float32) + 1.0} for i in range(8)]
    model, ctx, recs = run_steps(proto, static_steps(after=[{"pass": "correct-bias"}]), calib)
    assert recs["correct-bias"].stats["added_biases"] == 2
    assert ctx.plan is not None and {(w.node, w.index) for w in ctx.plan.weights if w.kind == "bias"} == {("conv1", 2), ("conv2", 2)}
    for name in ("conv1", "conv2"):
        dq = ir.producer(next(n for n in model.graph.nodes if n.name == name).inputs[2])
        assert dq is not None and dq.op == "DequantizeLinear" and ir.constant_array(dq.inputs[0]).dtype == np.int32  # type: ignore[union-attr]
    outputs(model, calib)  # onnxruntime runs it


NOTHING = """
<ir_version: 8, opset_import: ["" : 17]>
nothing (float[1,8] x, float[1,8] z) => (float[1,8] y) {
  [mm] m = MatMul (x, w)
  [relu] r = Relu (m)
  [add] y = Add (r, z)
}
"""


def test_models_without_the_pattern_are_left_alone() -> None:
    # a MatMul without a bias Add: nothing to put the correction in
    proto = parse_with(NOTHING, {"w": (8, 8)})
    calib = [{"x": np.ones((1, 8), np.float32), "z": np.zeros((1, 8), np.float32)}] * 2
    _, ctx, recs = run_steps(proto, static_steps(after=[{"pass": "correct-bias"}]), calib)
    assert not recs["correct-bias"].modified and recs["correct-bias"].stats["corrected"] == 0
    (skip,) = [s for s in ctx.skips if s.pass_name == "correct-bias"]
    assert skip.node == "mm" and "no bias Add" in skip.reason
    # no quantized layer at all
    relu = parse_with('<ir_version: 8, opset_import: ["" : 17]>\nr (float[1,8] x) => (float[1,8] y) {\n  [relu] y = Relu (x)\n}\n')
    _, _, recs = run_steps(relu, static_steps(after=[{"pass": "correct-bias"}]), calib[:1])
    assert not recs["correct-bias"].modified and recs["correct-bias"].stats == {"corrected": 0, "added_biases": 0, "on_grid": 0, "refused": 0}


def test_empirical_variant_needs_calibration_data() -> None:
    from onnxq.pipeline import pipeline_from_data

    with pytest.raises(ConfigError, match="correct-bias reads 'calibration_data'"):
        pipeline_from_data([{"pass": "correct-bias"}]).check_needs({"plan"})
    pipeline_from_data([{"pass": "correct-bias", "data_free": True}]).check_needs({"plan"})


def test_record_batchnorm_stats_without_batchnorm() -> None:
    proto = parse_with(NO_BIAS, {"w1": (8, 4, 3, 3), "w2": (6, 8, 1, 1)})
    _, ctx, recs = run_steps(proto, [{"pass": "record-batchnorm-stats"}], None)
    assert not recs["record-batchnorm-stats"].modified and recs["record-batchnorm-stats"].stats == {"recorded": 0}
    assert ctx.batchnorm_stats == {}
