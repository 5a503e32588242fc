"""One small model per quantizable op type: Conv → OP → anchor, so the op sits inside an int8 region."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)
C = 4


def _w(name: str, shape: tuple[int, ...], scale: float = 0.5) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _const(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


Body = tuple[list[onnx.NodeProto], list[onnx.TensorProto], str, list[int]]


def _conv_post(name: str, shape: list[int]) -> Body:
    c = shape[1]
    return [helper.make_node("Conv", [name, "w_post"], ["y"], name="post_conv")], [_w("w_post", (3, c, 1, 1))], "y", [shape[0], 3, *shape[2:]]


def _gemm_post(name: str, shape: list[int]) -> Body:
    return (
        [helper.make_node("Gemm", [name, "w_post", "b_post"], ["y"], name="post_gemm", transB=1)],
        [_w("w_post", (3, shape[1])), _w("b_post", (3,))],
        "y",
        [shape[0], 3],
    )


def _matmul_post(name: str, shape: list[int]) -> Body:
    return [helper.make_node("MatMul", [name, "w_post"], ["y"], name="post_matmul")], [_w("w_post", (shape[-1], 3))], "y", [*shape[:-1], 3]


def _unary(op: str, **attrs) -> Callable[[], tuple[list, list, str, list[int], str]]:
    return lambda: ([helper.make_node(op, ["a"], ["b"], name="op", **attrs)], [], "b", [1, C, 8, 8], "conv")


def _spec_conv():
    return (
        [helper.make_node("Conv", ["a", "w_op", "b_op"], ["b"], name="op", pads=[1, 1, 1, 1])],
        [_w("w_op", (C, C, 3, 3)), _w("b_op", (C,))],
        "b",
        [1, C, 8, 8],
        "conv",
    )


def _spec_conv_transpose():
    return [helper.make_node("ConvTranspose", ["a", "w_op"], ["b"], name="op", strides=[2, 2])], [_w("w_op", (C, C, 2, 2))], "b", [1, C, 16, 16], "conv"


def _spec_matmul():
    return (
        [helper.make_node("Reshape", ["a", "flat_shape"], ["a2"], name="flatten"), helper.make_node("MatMul", ["a2", "w_op"], ["b"], name="op")],
        [_const("flat_shape", [1, -1]), _w("w_op", (C * 64, 16), 0.05)],
        "b",
        [1, 16],
        "gemm",
    )


def _spec_gemm():
    return (
        [helper.make_node("Flatten", ["a"], ["a2"], name="flatten"), helper.make_node("Gemm", ["a2", "w_op", "b_op"], ["b"], name="op", transB=1)],
        [_w("w_op", (16, C * 64), 0.05), _w("b_op", (16,))],
        "b",
        [1, 16],
        "gemm",
    )


def _spec_binary(op: str):
    def spec():
        return (
            [helper.make_node("Conv", ["x", "w_side"], ["side"], name="side_conv"), helper.make_node(op, ["a", "side"], ["b"], name="op")],
            [_w("w_side", (C, 3, 1, 1))],
            "b",
            [1, C, 8, 8],
            "conv",
        )

    return spec


def _spec_concat():
    return (
        [helper.make_node("Conv", ["x", "w_side"], ["side"], name="side_conv"), helper.make_node("Concat", ["a", "side"], ["b"], name="op", axis=1)],
        [_w("w_side", (C, 3, 1, 1))],
        "b",
        [1, 2 * C, 8, 8],
        "conv",
    )


def _spec_shape_op(op: str, extra: list[onnx.TensorProto], inputs: list[str], shape: list[int], post: str = "conv", **attrs):
    return lambda: ([helper.make_node(op, ["a", *inputs], ["b"], name="op", **attrs)], extra, "b", shape, post)


def _spec_split():
    return (
        [helper.make_node("Split", ["a", "split"], ["b1", "b2"], name="op", axis=1), helper.make_node("Concat", ["b1", "b2"], ["b"], name="rejoin", axis=1)],
        [_const("split", [2, 2])],
        "b",
        [1, C, 8, 8],
        "conv",
    )


def _spec_where():
    return (
        [
            helper.make_node("Conv", ["x", "w_side"], ["side"], name="side_conv"),
            helper.make_node("Greater", ["a", "zero"], ["cond"], name="cond"),
            helper.make_node("Where", ["cond", "a", "side"], ["b"], name="op"),
        ],
        [_w("w_side", (C, 3, 1, 1)), numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
        "b",
        [1, C, 8, 8],
        "conv",
    )


def _spec_softmax():
    return (
        [helper.make_node("Flatten", ["a"], ["a2"], name="flatten"), helper.make_node("Softmax", ["a2"], ["b"], name="op", axis=-1)],
        [],
        "b",
        [1, C * 64],
        "gemm",
    )


OP_SPECS: dict[str, Callable[[], tuple[list, list, str, list[int], str]]] = {
    "Conv": _spec_conv,
    "ConvTranspose": _spec_conv_transpose,
    "MatMul": _spec_matmul,
    "Gemm": _spec_gemm,
    "Add": _spec_binary("Add"),
    "Mul": _spec_binary("Mul"),
    "Concat": _spec_concat,
    "MaxPool": _spec_shape_op("MaxPool", [], [], [1, C, 4, 4], kernel_shape=[2, 2], strides=[2, 2]),
    "AveragePool": _spec_shape_op("AveragePool", [], [], [1, C, 4, 4], kernel_shape=[2, 2], strides=[2, 2]),
    "GlobalAveragePool": _spec_shape_op("GlobalAveragePool", [], [], [1, C, 1, 1]),
    "Relu": _unary("Relu"),
    "Clip": _spec_shape_op(
        "Clip", [numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(6.0, np.float32), "hi")], ["lo", "hi"], [1, C, 8, 8]
    ),
    "LeakyRelu": _unary("LeakyRelu", alpha=0.1),
    "Sigmoid": _unary("Sigmoid"),
    "HardSigmoid": _unary("HardSigmoid"),
    "HardSwish": _unary("HardSwish"),
    "Resize": _spec_shape_op("Resize", [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")], ["", "scales"], [1, C, 16, 16], mode="nearest"),
    "Transpose": _spec_shape_op("Transpose", [], [], [1, C, 8, 8], perm=[0, 1, 3, 2]),
    "Reshape": _spec_shape_op("Reshape", [_const("shape", [1, C, 4, 16])], ["shape"], [1, C, 4, 16]),
    "Flatten": _spec_shape_op("Flatten", [], [], [1, C * 64], post="gemm"),
    "Squeeze": lambda: (
        [helper.make_node("GlobalAveragePool", ["a"], ["g"], name="gap"), helper.make_node("Squeeze", ["g", "axes"], ["b"], name="op")],
        [_const("axes", [2, 3])],
        "b",
        [1, C],
        "gemm",
    ),
    "Unsqueeze": lambda: (
        [helper.make_node("Flatten", ["a"], ["f"], name="flatten"), helper.make_node("Unsqueeze", ["f", "axes"], ["b"], name="op")],
        [_const("axes", [0])],
        "b",
        [1, 1, C * 64],
        "matmul",
    ),
    "Slice": _spec_shape_op("Slice", [_const("starts", [1]), _const("ends", [7]), _const("axes", [2])], ["starts", "ends", "axes"], [1, C, 6, 8]),
    "Gather": _spec_shape_op("Gather", [_const("idx", [0, 2])], ["idx"], [1, 2, 8, 8], axis=1),
    "Split": _spec_split,
    "Pad": _spec_shape_op("Pad", [_const("pads", [0, 0, 1, 1, 0, 0, 1, 1])], ["pads"], [1, C, 10, 10]),
    "ReduceMean": _spec_shape_op("ReduceMean", [_const("axes", [2, 3])], ["axes"], [1, C, 1, 1], keepdims=1),
    "Softmax": _spec_softmax,
    "Where": _spec_where,
}

_POST = {"conv": _conv_post, "gemm": _gemm_post, "matmul": _matmul_post}


def op_model(op: str, opset: int = 18) -> onnx.ModelProto:
    """``x → Conv → OP → post-anchor → y`` with seeded weights."""
    nodes, inits, out, shape, post = OP_SPECS[op]()
    pre = helper.make_node("Conv", ["x", "w_pre", "b_pre"], ["a"], name="pre_conv")
    post_nodes, post_inits, y, y_shape = _POST[post](out, shape)
    graph = helper.make_graph(
        [pre, *nodes, *post_nodes],
        f"{op.lower()}_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, y_shape)],
        [_w("w_pre", (C, 3, 1, 1)), _w("b_pre", (C,)), *inits, *post_inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
