"""Tiny Q/DQ graphs, each made to trip one lint rule (and, where useful, its fixed twin that must not).

Every builder returns a checked ModelProto (``tests.helpers.model_of``: full checker, opset 17 unless
said) whose node names the tests look for in the findings.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.helpers import model_of, vi

X = [1, 4, 8, 8]


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _qdq(src: str, dst: str, scale: float, zp: int, dtype: type, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``src → Q(prefix_q) → DQ(prefix_dq) → dst`` with one scale and zero point."""
    inits = [_const(f"{prefix}_s", np.float32(scale)), _const(f"{prefix}_zp", np.array(zp, dtype))]
    nodes = [
        helper.make_node("QuantizeLinear", [src, f"{prefix}_s", f"{prefix}_zp"], [f"{prefix}_int"], name=f"{prefix}_q"),
        helper.make_node("DequantizeLinear", [f"{prefix}_int", f"{prefix}_s", f"{prefix}_zp"], [dst], name=f"{prefix}_dq"),
    ]
    return nodes, inits


def _weight_dq(
    prefix: str, w: np.ndarray, scale: np.ndarray | float, zp: np.ndarray | int, axis: int | None = 0
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    scale_a, zp_a = np.asarray(scale, np.float32), np.asarray(zp, w.dtype)
    attrs = {"axis": axis} if axis is not None and scale_a.ndim == 1 else {}
    node = helper.make_node("DequantizeLinear", [f"{prefix}_q", f"{prefix}_s", f"{prefix}_zp"], [f"{prefix}_f"], name=f"{prefix}_dq", **attrs)
    return node, [_const(f"{prefix}_q", w), _const(f"{prefix}_s", scale_a), _const(f"{prefix}_zp", zp_a)]


def single_op(op: str, opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """``X → op (name 'op0') → Y``: a float model with one op."""
    m = model_of([helper.make_node(op, ["X"], ["Y"], name="op0")], [vi("X", X)], [vi("Y", X)], [], opset=opset)
    m.ir_version = ir_version
    return m


def activation_qdq(dtype: type = np.uint8, zp: int = 128, scale: float = 0.05) -> onnx.ModelProto:
    """``X → Q/DQ (act_q, act_dq) → Relu (relu0) → Y``."""
    nodes, inits = _qdq("X", "Xd", scale, zp, dtype, "act")
    nodes.append(helper.make_node("Relu", ["Xd"], ["Y"], name="relu0"))
    return model_of(nodes, [vi("X", X)], [vi("Y", X)], inits)


def conv(
    *, bias_scale: float | None = 0.0025, bias_values: np.ndarray | None = None, quantize_input: bool = True, act_after: bool = False,
    weight_zp: np.ndarray | int = 0, per_channel: bool = True,
) -> onnx.ModelProto:
    """``X → Q/DQ (x_q, x_dq) → Conv (conv0, DQ'd int8 weight w_dq, int32 bias b_dq) → Y``.

    Input scale 0.05 and weight scale 0.05: the right bias scale is 0.0025. ``act_after`` puts
    ``Q/DQ (out_q, out_dq) → Relu (relu0)`` after the Conv.
    """
    rng = np.random.default_rng(0)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    x = "X"
    if quantize_input:
        nodes, inits = _qdq("X", "Xd", 0.05, 128, np.uint8, "x")
        x = "Xd"
    w = rng.integers(-127, 128, (4, 4, 3, 3)).astype(np.int8)
    scale = np.full(4, 0.05, np.float32) if per_channel else 0.05
    w_node, w_inits = _weight_dq("w", w, scale, np.broadcast_to(np.asarray(weight_zp, np.int8), (4,)).copy() if per_channel else weight_zp)
    nodes.append(w_node)
    inits += w_inits
    conv_inputs = [x, "w_f"]
    if bias_scale is not None:
        b = bias_values if bias_values is not None else rng.integers(-1000, 1000, 4).astype(np.int32)
        b_node, b_inits = _weight_dq("b", b.astype(np.int32), np.full(4, bias_scale, np.float32), np.zeros(4, np.int32))
        nodes.append(b_node)
        inits += b_inits
        conv_inputs.append("b_f")
    conv_out = "C" if act_after else "Y"
    nodes.append(helper.make_node("Conv", conv_inputs, [conv_out], name="conv0", pads=[1, 1, 1, 1]))
    if act_after:
        more, more_inits = _qdq("C", "Cd", 0.1, 0, np.uint8, "out")
        nodes += more + [helper.make_node("Relu", ["Cd"], ["Y"], name="relu0")]
        inits += more_inits
    return model_of(nodes, [vi("X", X)], [vi("Y", X)], inits)


def shared_weight_dq() -> onnx.ModelProto:
    """One weight DQ (w_dq) read by two Convs (conv_a, conv_b)."""
    nodes, inits = _qdq("X", "Xd", 0.05, 128, np.uint8, "x")
    w_node, w_inits = _weight_dq("w", np.ones((4, 4, 1, 1), np.int8), np.full(4, 0.05, np.float32), np.zeros(4, np.int8))
    nodes += [w_node, helper.make_node("Conv", ["Xd", "w_f"], ["A"], name="conv_a"), helper.make_node("Conv", ["Xd", "w_f"], ["B"], name="conv_b"),
              helper.make_node("Add", ["A", "B"], ["Y"], name="add0")]
    return model_of(nodes, [vi("X", X)], [vi("Y", X)], inits + w_inits)


def unfusable_between_qdq(op: str = "Tanh") -> onnx.ModelProto:
    """``X → Q/DQ (in) → op (op0) → Q/DQ (out) → Y``: the op sits between a DQ and a Q."""
    a, a_inits = _qdq("X", "Xd", 0.05, 128, np.uint8, "in")
    b, b_inits = _qdq("T", "Y", 1 / 127, 128, np.uint8, "out")
    return model_of(a + [helper.make_node(op, ["Xd"], ["T"], name="op0")] + b, [vi("X", X)], [vi("Y", X)], a_inits + b_inits)


def concat_of_disparate_ranges() -> onnx.ModelProto:
    """Concat (cat0) of a Sigmoid branch (|x| <= 1) and a branch read off a uint8 grid of scale 1 (|x| <= 255),
    both requantized with one scale (a_q/a_dq and b_q/b_dq share scale and zero point)."""
    wide, wide_inits = _qdq("X", "Xw", 1.0, 0, np.uint8, "wide")
    a, a_inits = _qdq("S", "Sd", 1.0, 0, np.uint8, "a")
    b, b_inits = _qdq("R", "Rd", 1.0, 0, np.uint8, "b")
    nodes = wide + [helper.make_node("Sigmoid", ["X"], ["S"], name="sig0"), helper.make_node("Relu", ["Xw"], ["R"], name="relu0")] + a + b
    nodes.append(helper.make_node("Concat", ["Sd", "Rd"], ["Y"], name="cat0", axis=1))
    return model_of(nodes, [vi("X", X)], [vi("Y", [1, 8, 8, 8])], wide_inits + a_inits + b_inits)


def requantize_with_same_params() -> onnx.ModelProto:
    """``X → Q/DQ (first) → Q/DQ (second, same parameters) → Relu (relu0) → Y``: the second pair changes nothing."""
    a, a_inits = _qdq("X", "Xd", 0.05, 128, np.uint8, "first")
    b, _ = _qdq("Xd", "Xdd", 0.05, 128, np.uint8, "second")
    b[0].input[1:] = ["first_s", "first_zp"]
    b[1].input[1:] = ["first_s", "first_zp"]
    return model_of(a + b + [helper.make_node("Relu", ["Xdd"], ["Y"], name="relu0")], [vi("X", X)], [vi("Y", X)], a_inits)


def matmul_with_int8_weights(per_channel: bool = False) -> onnx.ModelProto:
    """``X[1,8] → Q/DQ → MatMul (mm0) with an int8 weight DQ (w_dq)`` (QNN's MatMul takes uint8/uint16 weights, per tensor)."""
    nodes, inits = _qdq("X", "Xd", 0.05, 128, np.uint8, "x")
    scale = np.full(4, 0.05, np.float32) if per_channel else 0.05
    w_node, w_inits = _weight_dq("w", np.ones((8, 4), np.int8), scale, np.zeros(4, np.int8) if per_channel else 0, axis=1)
    nodes += [w_node, helper.make_node("MatMul", ["Xd", "w_f"], ["Y"], name="mm0")]
    return model_of(nodes, [vi("X", [1, 8])], [vi("Y", [1, 4])], inits + w_inits)


def with_scale(model: onnx.ModelProto, name: str, value: float) -> onnx.ModelProto:
    """``model`` with the scalar initializer ``name`` set to ``value``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, t in enumerate(out.graph.initializer):
        if t.name == name:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.float32(value), name))
    return out


__all__ = [
    "activation_qdq", "concat_of_disparate_ranges", "conv", "matmul_with_int8_weights", "requantize_with_same_params",
    "shared_weight_dq", "single_op", "unfusable_between_qdq", "with_scale",
]
