"""Fusion passes: BatchNorm folding and MatMul+Add → Gemm, with numerics against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxq import PassManager, ir, make_pass
from onnxq.context import PassContext
from tests.helpers import assert_same_outputs, checked, model_of, op_count, random_feeds, vi

RNG = np.random.default_rng(0)


def bn_params(c: int, prefix: str = "bn") -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(RNG.uniform(0.5, 1.5, c).astype(np.float32), f"{prefix}_g"),
        numpy_helper.from_array(RNG.standard_normal(c).astype(np.float32), f"{prefix}_b"),
        numpy_helper.from_array(RNG.standard_normal(c).astype(np.float32), f"{prefix}_m"),
        numpy_helper.from_array(RNG.uniform(0.5, 2.0, c).astype(np.float32), f"{prefix}_v"),
    ]


def fold(src: onnx.ModelProto) -> tuple[ir.Model, bool, dict]:
    pm = PassManager([make_pass("infer-shapes"), make_pass("fold-batchnorm")], check=True)
    res = pm.run(ir.load(src))
    return res.model, res.records[-1].modified, res.records[-1].stats


BN = ["bn_g", "bn_b", "bn_m", "bn_v"]


@pytest.mark.parametrize("bias", [True, False])
def test_fold_bn_into_conv(bias: bool) -> None:
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), *bn_params(4)]
    conv_inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(RNG.standard_normal(4).astype(np.float32), "b"))
        conv_inputs.append("b")
    src = model_of(
        [helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1]), helper.make_node("BatchNormalization", ["c", *BN], ["y"], epsilon=1e-3)],
        [vi("x", [1, 3, 8, 8])],
        [vi("y", [1, 4, 8, 8])],
        inits,
    )
    model, modified, stats = fold(src)
    assert modified and stats["folded"] == 1
    assert [n.op for n in model.graph.nodes] == ["Conv"]
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-4)
    _, again, _ = fold(ir.to_proto(model))
    assert not again


def test_fold_bn_into_grouped_conv_transpose() -> None:
    w = RNG.standard_normal((4, 3, 2, 2)).astype(np.float32)  # C_in=4, C_out/group=3, group=2 → C_out=6
    src = model_of(
        [helper.make_node("ConvTranspose", ["x", "w"], ["c"], group=2, strides=[2, 2]), helper.make_node("BatchNormalization", ["c", *BN], ["y"])],
        [vi("x", [1, 4, 5, 5])],
        [vi("y", [1, 6, 10, 10])],
        [numpy_helper.from_array(w, "w"), *bn_params(6)],
    )
    model, modified, _ = fold(src)
    assert modified and op_count(model, "BatchNormalization") == 0
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-4)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_fold_bn_into_gemm(trans_b: int) -> None:
    w = RNG.standard_normal((5, 8) if trans_b else (8, 5)).astype(np.float32)
    src = model_of(
        [helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=trans_b, alpha=0.5, beta=2.0), helper.make_node("BatchNormalization", ["g", *BN], ["y"])],
        [vi("x", [3, 8])],
        [vi("y", [3, 5])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(RNG.standard_normal(5).astype(np.float32), "c"), *bn_params(5)],
    )
    model, modified, _ = fold(src)
    assert modified and [n.op for n in model.graph.nodes] == ["Gemm"]
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-4)


def test_fold_bn_into_2d_matmul() -> None:
    src = model_of(
        [helper.make_node("MatMul", ["x", "w"], ["g"]), helper.make_node("BatchNormalization", ["g", *BN], ["y"])],
        [vi("x", [3, 8])],
        [vi("y", [3, 5])],
        [numpy_helper.from_array(RNG.standard_normal((8, 5)).astype(np.float32), "w"), *bn_params(5)],
    )
    model, modified, _ = fold(src)
    assert modified and [n.op for n in model.graph.nodes] == ["MatMul", "Add"]
    assert_same_outputs(src, checked(model), random_feeds(src), atol=1e-4)


def test_bn_not_folded_when_conv_output_shared() -> None:
    w = RNG.standard_normal((4, 3, 1, 1)).astype(np.float32)
    src = model_of(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("BatchNormalization", ["c", *BN], ["y"]),
            helper.make_node("Relu", ["c"], ["z"]),
        ],
        [vi("x", [1, 3, 4, 4])],
        [vi("y", [1, 4, 4, 4]), vi("z", [1, 4, 4, 4])],
        [numpy_helper.from_array(w, "w"), *bn_params(4)],
    )
    model, modified, stats = fold(src)
    assert not modified and stats["skipped"] == 1 and "other readers" in next(iter(stats["reasons"].values()))
    ctx = PassContext()
    PassManager([make_pass("infer-shapes"), make_pass("fold-batchnorm")], check=True).run(ir.load(src), ctx)
    assert [(s.op, s.pass_name, s.kept) for s in ctx.skips] == [("BatchNormalization", "fold-batchnorm", "unchanged")]
    assert ctx.skips[0].reason == "Conv output has other readers"


def test_bn_after_a_non_linear_op_is_recorded_and_kept() -> None:
    src = model_of(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("BatchNormalization", ["r", *BN], ["y"], name="bn")],
        [vi("x", [1, 4, 4, 4])],
        [vi("y", [1, 4, 4, 4])],
        bn_params(4),
    )
    model, modified, stats = fold(src)
    assert not modified and stats == {"folded": 0, "skipped": 1, "reasons": {"bn": "not preceded by Conv/ConvTranspose/Gemm/MatMul"}}
    assert op_count(model, "BatchNormalization") == 1


def test_fuse_matmul_add_into_gemm() -> None:
    src = model_of(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["b", "m"], ["y"])],
        [vi("x", [4, 8])],
        [vi("y", [4, 5])],
        [numpy_helper.from_array(RNG.standard_normal((8, 5)).astype(np.float32), "w"), numpy_helper.from_array(RNG.standard_normal(5).astype(np.float32), "b")],
    )
    res = PassManager([make_pass("infer-shapes"), make_pass("fuse-matmul-add")], check=True).run(ir.load(src))
    assert res.records[-1].modified and [n.op for n in res.model.graph.nodes] == ["Gemm"]
    assert res.records[-1].stats == {"fused": 1, "fused.Gemm": 1, "refused": 0}
    assert_same_outputs(src, checked(res.model), random_feeds(src))
    again = PassManager([make_pass("fuse-matmul-add")]).run(res.model)
    assert not again.modified


def test_matmul_add_on_3d_input_stays() -> None:
    src = model_of(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        [vi("x", [2, 4, 8])],
        [vi("y", [2, 4, 5])],
        [numpy_helper.from_array(RNG.standard_normal((8, 5)).astype(np.float32), "w"), numpy_helper.from_array(RNG.standard_normal(5).astype(np.float32), "b")],
    )
    res = PassManager([make_pass("infer-shapes"), make_pass("fuse-matmul-add")], check=True).run(ir.load(src))
    assert not res.records[-1].modified
