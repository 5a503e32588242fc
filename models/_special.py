"""Models built around one known failure: a detector's mixed-range Concat and compute inside ``If``."""

from __future__ import annotations

from itertools import pairwise

import onnx
from onnx import TensorProto, helper

from ._common import DEFAULT_OPSET, Dim, GraphBuilder, check_opset, require
from ._layers import conv, linear

__all__ = ["build_detector_head", "build_if_model"]


def _head_branch(g: GraphBuilder, x: str, in_ch: int, anchors_per_cell: int, values: int, name: str) -> str:
    """1x1 Conv to anchors*values channels, then [N, A*V, G, G] → [N, A*G*G, V] → Sigmoid."""
    with g.scope(name):
        y = conv(g, x, in_ch, anchors_per_cell * values, 1, name="conv")
        y = g.op("Reshape", [y, g.ints("split_shape", [0, anchors_per_cell, values, -1])], name="reshape_split")
        y = g.op("Transpose", [y], name="transpose", perm=[0, 1, 3, 2])  # [N, A, G*G, V]
        y = g.op("Reshape", [y, g.ints("flat_shape", [0, -1, values])], name="reshape_flat")
        return g.op("Sigmoid", [y], name="sigmoid")


def build_detector_head(
    *, seed: int = 0, input_size: int = 64, num_classes: int = 4, width: int = 16, anchors_per_cell: int = 3,
    batch: Dim = "N", opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A small YOLO-style detector whose boxes and class scores share one output Concat.

    Input ``input`` float32 [batch, 3, input_size, input_size] (``input_size`` a multiple of 8).
    Backbone: three stride-2 Conv(3x3, bias)+Relu layers (``width``, 2x, 2x channels) → grid
    G = input_size/8. Box branch: 1x1 Conv → reshape to [batch, anchors, 4] → Sigmoid → Mul by
    ``5 * input_size`` (pixel units, 0..320 at the default size). Class branch: 1x1 Conv → reshape to
    [batch, anchors, num_classes] → Sigmoid (probabilities 0..1). One ``Concat(axis=-1)`` joins them
    into ``detections`` [batch, anchors, 4 + num_classes], anchors = anchors_per_cell * G * G.
    Node count: 18. Realistic benchmark size: ``input_size=640, width=32, num_classes=80``.

    Failure class: a quantizer that gives the Concat output (and, via shared-scale constraints, its
    inputs) one scale sized for 0..320 rounds every class probability to zero.
    """
    check_opset(opset, 13, "build_detector_head")
    require(input_size >= 8 and input_size % 8 == 0,
            f"build_detector_head: input_size must be a multiple of 8, got {input_size}")
    require(min(num_classes, width, anchors_per_cell) >= 1, "build_detector_head: sizes must be >= 1")
    g = GraphBuilder(seed, opset)
    x = g.input("input", TensorProto.FLOAT, [batch, 3, input_size, input_size])
    chans = [3, width, 2 * width, 2 * width]
    for i in range(3):
        with g.scope(f"backbone/layer{i + 1}"):
            x = g.op("Relu", [conv(g, x, chans[i], chans[i + 1], 3, stride=2)], name="relu")
    boxes = _head_branch(g, x, chans[-1], anchors_per_cell, 4, "head/box")
    boxes = g.op("Mul", [boxes, g.scalar("head/box/pixel_scale", float(5 * input_size))], name="head/box/to_pixels")
    scores = _head_branch(g, x, chans[-1], anchors_per_cell, num_classes, "head/cls")
    det = g.op("Concat", [boxes, scores], name="head/concat", out="detections", axis=-1)
    anchors = anchors_per_cell * (input_size // 8) ** 2
    g.output(det, "detections", [batch, anchors, 4 + num_classes])
    return g.model("detector_head", doc="onnxq.models.build_detector_head")


def _branch_mlp(sub: GraphBuilder, x: str, sizes: list[int], out: str) -> str:
    """MatMul+Add(+Relu) layers inside a branch; the last layer writes ``out``."""
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        last = i == len(sizes) - 2
        x = linear(sub, x, fan_in, fan_out, name=f"fc{i + 1}", out=out if last else None)
        if not last:
            x = sub.op("Relu", [x], name=f"relu{i + 1}")
    return x


def build_if_model(
    *, seed: int = 0, in_features: int = 16, hidden: int = 32, num_classes: int = 10, batch: Dim = "N",
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A classifier whose whole compute sits inside the two branches of an ``If`` node.

    Input ``input`` float32 [batch, in_features]; condition ``ReduceSum(input) > 0`` (a bool scalar).
    ``then_branch``: MatMul+Add → Relu → MatMul+Add whose weights are OUTER-SCOPE main-graph
    initializers referenced from the subgraph. ``else_branch``: a deeper MatMul+Add/Relu stack whose
    weights are the subgraph's own initializers. The If output is graph output ``logits``
    [batch, num_classes]. Node count: 3 in the main graph, 5 + 8 inside the branches.

    Failure class: passes that walk only ``graph.node`` miss the compute (nothing gets quantized) or,
    worse, delete "unused" main-graph initializers that only the subgraph reads.
    """
    check_opset(opset, 13, "build_if_model")
    require(min(in_features, hidden, num_classes) >= 1, "build_if_model: sizes must be >= 1")
    g = GraphBuilder(seed, opset)
    x = g.input("input", TensorProto.FLOAT, [batch, in_features])
    with g.scope("condition"):
        total = g.reduce("ReduceSum", x, None, keepdims=False, name="sum")
        cond = g.op("Greater", [total, g.scalar("zero", 0.0)], name="greater")
    with g.scope("branch_a"):
        then_b = g.subgraph()
        _branch_mlp(then_b, x, [in_features, hidden, num_classes], out="branch_a/logits")
        g.initializers.extend(then_b.initializers)  # weights live in the outer scope
        then_b.initializers.clear()
        then_b.outputs.append(helper.make_tensor_value_info("branch_a/logits", TensorProto.FLOAT, [batch, num_classes]))
    with g.scope("branch_b"):
        else_b = g.subgraph()
        _branch_mlp(else_b, x, [in_features, hidden, hidden, num_classes], out="branch_b/logits")
        else_b.outputs.append(helper.make_tensor_value_info("branch_b/logits", TensorProto.FLOAT, [batch, num_classes]))
    y = g.op("If", [cond], name="if", out="logits",
             then_branch=then_b.graph("branch_a"), else_branch=else_b.graph("branch_b"))
    g.output(y, "logits", [batch, num_classes])
    return g.model("if_model", doc="onnxq.models.build_if_model")
