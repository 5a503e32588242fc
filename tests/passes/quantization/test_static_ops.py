"""Every annotated op type: QDQ numerics vs fp32, and QOperator conversion vs QDQ (one quantization step)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxq import ir
from onnxq.api import quantize_static
from tests.helpers import checked, cosine, run
from tests.passes.quantization._op_models import OP_SPECS, op_model

#: QOperator op expected for each annotated op (None: stays QDQ or becomes the op itself on int8).
QLINEAR = {
    "Conv": "QLinearConv",
    "MatMul": "QLinearMatMul",
    "Gemm": "QGemm",
    "Add": "QLinearAdd",
    "Mul": "QLinearMul",
    "Concat": "QLinearConcat",
    "AveragePool": "QLinearAveragePool",
    "GlobalAveragePool": "QLinearGlobalAveragePool",
    "LeakyRelu": "QLinearLeakyRelu",
    "Sigmoid": "QLinearSigmoid",
    "Softmax": "QLinearSoftmax",
}
#: Ops that run directly on int8 in QOperator form (same scale on both sides).
INT8_MOVEMENT = {"MaxPool", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather", "Resize"}


def _samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _ops(model: ir.Model) -> list[str]:
    return [n.op for n in ir.iter_nodes(model.graph)]


@pytest.mark.parametrize("op", sorted(OP_SPECS))
def test_op_quantized_in_qdq_and_qoperator(op: str) -> None:
    src = op_model(op)
    calib = _samples(16, 0)
    test = _samples(8, 1)
    qdq = quantize_static(src, calib, tune=False, method="minmax")
    decisions = {d["node"]: d for d in qdq.report.to_dict()["float_nodes"]}
    assert "op" not in decisions, f"{op} left float: {decisions.get('op')}"
    model = checked(qdq.model)
    assert "QuantizeLinear" in _ops(model) and "DequantizeLinear" in _ops(model)
    for feeds in test:
        ref = run(src, feeds)[0]
        got = run(model, feeds)[0]
        assert cosine(ref, got) > 0.98, f"{op}: QDQ cosine {cosine(ref, got):.4f}"

    qop = quantize_static(src, calib, tune=False, method="minmax", format="qoperator")
    qop_model = checked(qop.model)
    ops = _ops(qop_model)
    if op in QLINEAR:
        assert QLINEAR[op] in ops, f"{op}: expected {QLINEAR[op]} in {ops}"
    if op in INT8_MOVEMENT:
        node = next(n for n in ir.iter_nodes(qop_model.graph) if n.op == op)
        dq = ir.producer(node.inputs[0])
        assert dq is None or dq.op != "DequantizeLinear", f"{op} should read the int8 tensor directly"
    # QOperator matches QDQ within one quantization step of the output.
    out_scale = _output_step(qop_model)
    for feeds in test:
        a = run(model, feeds)[0]
        b = run(qop_model, feeds)[0]
        assert np.max(np.abs(a - b)) <= out_scale * 1.01 + 1e-6, f"{op}: QOperator vs QDQ max diff {np.max(np.abs(a - b))} > step {out_scale}"


def _output_step(model: ir.Model) -> float:
    """Scale of the last quantization before the output (the granularity both forms share)."""
    scales = [float(np.max(ir.constant_array(n.inputs[1]))) for n in ir.iter_nodes(model.graph) if n.op in ("QuantizeLinear",) and ir.is_constant(n.inputs[1])]
    return max(scales) if scales else 0.0


@pytest.mark.parametrize("op", ["Mul", "Add"])
def test_scalar_arithmetic_between_int8_ops_is_quantized(op: str) -> None:
    """Conv → Relu → OP(scalar) → padded Conv: nothing can fold the scalar, so it runs as QLinear{op}."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w = lambda name, shape: numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)  # noqa: E731
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1"], ["c"], name="pre_conv"),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node(op, ["r", "k"], ["a"], name="op"),
            helper.make_node("Conv", ["a", "w2"], ["y"], name="post_conv", pads=[1, 1, 1, 1]),
        ],
        "scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
        [w("w1", (4, 3, 1, 1)), w("w2", (3, 4, 3, 3)), numpy_helper.from_array(np.array(1.7, np.float32), "k")],
    )
    src = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    calib, test = _samples(16, 0), _samples(8, 1)
    qdq = quantize_static(src, calib, tune=False, method="minmax")
    assert "op" not in {d["node"] for d in qdq.report.to_dict()["float_nodes"]}
    qop = checked(quantize_static(src, calib, tune=False, method="minmax", format="qoperator").model)
    assert f"QLinear{op}" in _ops(qop)
    for feeds in test:
        ref = run(src, feeds)[0]
        assert cosine(ref, run(checked(qdq.model), feeds)[0]) > 0.99
        assert cosine(ref, run(qop, feeds)[0]) > 0.99


def test_per_channel_constant_arithmetic_stays_float() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from onnxq.passes.quantization._quantizers import describe_node

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"], name="op")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.arange(1, 5, dtype=np.float32).reshape(1, 4, 1, 1), "k")],
    )
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    desc = describe_node(next(ir.iter_nodes(model.graph)))
    assert isinstance(desc, str) and "per-element constant" in desc
