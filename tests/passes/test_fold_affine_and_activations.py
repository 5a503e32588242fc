"""fold-affine and fuse-activations: structure, `modified` both ways, numerics vs onnxruntime fp32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq import PassManager, ir, make_pass
from onnxq.context import PassContext
from tests.helpers import assert_same_outputs, checked, op_count, random_feeds

RNG = np.random.default_rng(3)


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _run(src: onnx.ModelProto, name: str) -> tuple[ir.Model, bool, dict]:
    res = PassManager([make_pass("infer-shapes"), make_pass(name)], check=True).run(ir.load(src))
    return res.model, res.records[-1].modified, res.records[-1].stats


def _vi(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _arr(name: str, shape: tuple, scale: float = 1.0) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def test_paddle_batchnorm_as_mul_add_folds_into_conv() -> None:
    src = _model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Mul", ["c", "s"], ["m"]),
            helper.make_node("Add", ["m", "t"], ["a"]),
            helper.make_node("Div", ["a", "d"], ["y"]),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 8])],
        [
            _arr("w", (4, 3, 3, 3)),
            _arr("b", (4,)),
            numpy_helper.from_array(RNG.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32), "s"),
            _arr("t", (4, 1, 1)),
            numpy_helper.from_array(np.array(6.0, np.float32), "d"),
        ],
    )
    model, modified, stats = _run(src, "fold-affine")
    assert modified and stats["folded"] >= 1
    res = PassManager([make_pass("fold-affine")], steps=4, check=True).run(model)
    assert [n.op for n in res.model.graph.nodes] == ["Conv"]
    assert_same_outputs(src, checked(res.model), random_feeds(src), atol=1e-4)
    again = PassManager([make_pass("fold-affine")]).run(res.model)
    assert not again.modified


def test_per_position_constant_does_not_fold() -> None:
    src = _model(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["y"])],
        [_vi("x", [1, 3, 4, 4])],
        [_vi("y", [1, 4, 4, 4])],
        [_arr("w", (4, 3, 1, 1)), _arr("s", (1, 1, 4, 4))],
    )
    _, modified, _ = _run(src, "fold-affine")
    assert not modified


def _matmul_then(op: str) -> onnx.ModelProto:
    """x[2, 5, 8] @ w[8, 6], then ``op`` with a per-column constant."""
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node(op, ["m", "c"], ["y"])],
        [_vi("x", [2, 5, 8])],
        [_vi("y", [2, 5, 6])],
        [_arr("w", (8, 6)), _arr("c", (6,))],
    )


def test_matmul_scale_folds_but_shift_does_not() -> None:
    src = _matmul_then("Mul")
    model, modified, _ = _run(src, "fold-affine")
    assert modified and op_count(model, "Mul") == 0
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-4)
    shift = _matmul_then("Add")
    _, modified, _ = _run(shift, "fold-affine")
    assert not modified  # MatMul has no bias input; the Add stays (fuse-matmul-add handles 2-D)


def _hardswish_chain(opset: int) -> onnx.ModelProto:
    return _model(
        [
            helper.make_node("Add", ["x", "three"], ["a"]),
            helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
            helper.make_node("Mul", ["x", "c"], ["m"]),
            helper.make_node("Div", ["m", "six"], ["y"]),
        ],
        [_vi("x", [2, 16])],
        [_vi("y", [2, 16])],
        [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("three", 3.0), ("zero", 0.0), ("six", 6.0))],
        opset=opset,
    )


def test_decomposed_hardswish_fuses() -> None:
    src = _hardswish_chain(14)
    model, modified, stats = _run(src, "fuse-activations")
    assert modified and [n.op for n in model.graph.nodes] == ["HardSwish"] and stats == {"fused": 1, "fused.HardSwish": 1, "refused": 0}
    feeds = {"x": (RNG.standard_normal((2, 16)) * 5).astype(np.float32)}
    assert_same_outputs(src, checked(model), feeds, atol=1e-5)
    _, again, _ = _run(ir.to_proto(model), "fuse-activations")
    assert not again


def test_hardswish_needs_opset_14() -> None:
    ctx = PassContext()
    res = PassManager([make_pass("infer-shapes"), make_pass("fuse-activations")], check=True).run(ir.load(_hardswish_chain(13)), ctx)
    assert not res.records[-1].modified and res.records[-1].stats == {"fused": 0, "refused": 1}
    assert [(s.op, s.reason, s.kept) for s in ctx.skips] == [("Add", "HardSwish needs opset 14 (the model has 13)", "unchanged")]


def test_x_times_hardsigmoid_is_hardswish() -> None:
    src = _model(
        [helper.make_node("HardSigmoid", ["x"], ["h"], alpha=1 / 6, beta=0.5), helper.make_node("Mul", ["x", "h"], ["y"])],
        [_vi("x", [2, 16])],
        [_vi("y", [2, 16])],
        [],
    )
    model, modified, _ = _run(src, "fuse-activations")
    assert modified and [n.op for n in model.graph.nodes] == ["HardSwish"]
    assert_same_outputs(src, checked(model), {"x": (RNG.standard_normal((2, 16)) * 5).astype(np.float32)}, atol=1e-5)


@pytest.mark.parametrize("div", [True, False])
def test_decomposed_hardsigmoid_fuses(div: bool) -> None:
    last = helper.make_node("Div", ["c", "six"], ["y"]) if div else helper.make_node("Mul", ["c", "sixth"], ["y"])
    src = _model(
        [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["c"]), last],
        [_vi("x", [2, 16])],
        [_vi("y", [2, 16])],
        [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("three", 3.0), ("zero", 0.0), ("six", 6.0), ("sixth", 1 / 6))],
    )
    model, modified, _ = _run(src, "fuse-activations")
    assert modified and [n.op for n in model.graph.nodes] == ["HardSigmoid"]
    assert_same_outputs(src, checked(model), {"x": (RNG.standard_normal((2, 16)) * 5).astype(np.float32)}, atol=1e-5)


def _affine_then_convs(consumers: list, group: int = 1, scale_shape: tuple = (1, 8, 1, 1), shift_shape: tuple = (1,)) -> onnx.ModelProto:
    """x → HardSwish → Mul(s) → Add(t) → the given convolutions (a PP-LCNetV3 learnable affine block)."""
    nodes = [
        helper.make_node("HardSwish", ["x"], ["h"]),
        helper.make_node("Mul", ["h", "s"], ["m"]),
        helper.make_node("Add", ["m", "t"], ["z"]),
    ]
    inits = [_arr("s", scale_shape), _arr("t", shift_shape)]
    outputs = []
    for i, (kernel, pads) in enumerate(consumers):
        nodes.append(helper.make_node("Conv", ["z", f"w{i}", f"b{i}"], [f"y{i}"], pads=pads, group=group))
        inits += [_arr(f"w{i}", (8, 8 // group, kernel, kernel)), _arr(f"b{i}", (8,))]
        outputs.append(_vi(f"y{i}", [1, 8, None, None]))
    return _model(nodes, [_vi("x", [1, 8, 12, 12])], outputs, inits)


@pytest.mark.parametrize("group", [1, 2, 8])
def test_affine_after_activation_folds_into_unpadded_convs(group: int) -> None:
    src = _affine_then_convs([(1, [0, 0, 0, 0]), (3, [0, 0, 0, 0])], group=group)
    out, modified, stats = _run(src, "fold-affine-forward")
    assert modified and stats["folded"] == 2
    assert op_count(out, "Mul") == 0 and op_count(out, "Add") == 0
    assert_same_outputs(src, checked(out), random_feeds(src, seed=1), atol=1e-4, rtol=1e-4)


def test_affine_before_a_padded_conv_stays() -> None:
    """Zero padding sees the shift inside the image and 0 outside: folding would change the border."""
    src = _affine_then_convs([(1, [0, 0, 0, 0]), (3, [1, 1, 1, 1])])
    out, modified, _ = _run(src, "fold-affine-forward")
    assert not modified and op_count(out, "Mul") == 1 and op_count(out, "Add") == 1


def test_affine_that_varies_along_space_stays() -> None:
    src = _affine_then_convs([(1, [0, 0, 0, 0])], scale_shape=(1, 1, 12, 1))
    out, modified, stats = _run(src, "fold-affine-forward")
    assert op_count(out, "Mul") == 1  # a scale per row cannot live in the conv weight
    assert modified and stats["folded"] == 1 and op_count(out, "Add") == 0  # the scalar shift after it still folds
    assert_same_outputs(src, checked(out), random_feeds(src, seed=2), atol=1e-4, rtol=1e-4)


def test_cleanup_keeps_hardswish_fused_before_folding_forward() -> None:
    """x·Clip(x+3,0,6)/6 → 1×1 Conv: the "/6" must become part of HardSwish, not of the conv."""
    src = _model(
        [
            helper.make_node("Add", ["x", "three"], ["a"]),
            helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
            helper.make_node("Mul", ["x", "c"], ["m"]),
            helper.make_node("Div", ["m", "six"], ["h"]),
            helper.make_node("Conv", ["h", "w", "b"], ["y"]),
        ],
        [_vi("x", [1, 8, 12, 12])],
        [_vi("y", [1, 8, 12, 12])],
        [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("three", 3.0), ("zero", 0.0), ("six", 6.0))]
        + [_arr("w", (8, 8, 1, 1)), _arr("b", (8,))],
    )
    out = PassManager([make_pass("cleanup")], check=True).run(ir.load(src)).model
    assert op_count(out, "HardSwish") == 1 and op_count(out, "Div") == 0
    assert_same_outputs(src, checked(out), random_feeds(src, seed=3), atol=1e-4, rtol=1e-4)
