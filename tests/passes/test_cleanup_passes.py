"""Cleanup passes: structure, `modified` both ways, and numerics against onnxruntime fp32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxq import PassManager, ir, make_pass
from onnxq.context import PassContext
from tests.helpers import assert_same_outputs, checked, graph, op_count, parse, random_feeds


def run_pass(name: str, model: ir.Model | onnx.ModelProto, **options: object) -> tuple[ir.Model, bool, dict]:
    m = ir.load(model) if isinstance(model, onnx.ModelProto) else model
    res = PassManager([make_pass(name, options)], check=True).run(m)
    return res.model, res.modified, res.records[0].stats


def assert_done(src: onnx.ModelProto, model: ir.Model, name: str, **options: object) -> None:
    """``model`` (the pass's output) computes what ``src`` does, and running the pass again changes nothing."""
    assert_same_outputs(src, checked(model), random_feeds(src))
    assert_idempotent(model, name, **options)


def assert_idempotent(model: ir.Model, name: str, **options: object) -> None:
    assert not run_pass(name, model, **options)[1]


CONSTANTS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1, 3, 8, 8] x) => (float[1, 4, 8, 8] y) {
    w = Constant <value = float[4, 3, 1, 1] {1,2,3, 4,5,6, 7,8,9, 1,0,1}> ()
    b = Constant <value_floats = [0.5, -0.5, 1.0, 0.0]> ()
    y = Conv(x, w, b)
}
"""


def test_constants_to_initializers() -> None:
    src = parse(CONSTANTS)
    model, modified, stats = run_pass("constants-to-initializers", src)
    assert modified and stats["converted"] == 2
    assert op_count(model, "Constant") == 0
    conv = model.graph.nodes[0]
    assert ir.is_constant(conv.inputs[1]) and ir.is_constant(conv.inputs[2])
    assert_done(src, model, "constants-to-initializers")


def test_constant_graph_output_stays_a_node() -> None:
    src = graph("(float[2] x) => (float[2] y, float[2] c)", "c = Constant <value_floats = [1.0, 2.0]> ()", "y = Add(x, c)")
    model, modified, _ = run_pass("constants-to-initializers", src)
    assert not modified and op_count(model, "Constant") == 1


SHAPES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3, 4] x) => (float[6, 4] y) {
    s = Shape(x)
    i0 = Constant <value = int64[1] {0}> ()
    i1 = Constant <value = int64[1] {1}> ()
    d0 = Gather(s, i0)
    d1 = Gather(s, i1)
    m = Mul(d0, d1)
    last = Constant <value = int64[1] {-1}> ()
    shape = Concat <axis = 0> (m, last)
    y = Reshape(x, shape)
}
"""


def test_fold_constants_folds_shape_chains() -> None:
    src = parse(SHAPES)
    model = PassManager([make_pass("constants-to-initializers"), make_pass("infer-shapes")]).run(ir.load(src)).model
    model, modified, stats = run_pass("fold-constants", model)
    assert modified and stats["folded"] >= 1
    assert [n.op for n in model.graph.nodes] == ["Reshape"]
    np.testing.assert_array_equal(ir.const_value(model.graph.nodes[0].inputs[1]), [6, -1])
    assert_done(src, model, "fold-constants")


def test_fold_constants_keeps_dequantize_and_large_outputs() -> None:
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y, float[1000, 1000] z) {
            w = Constant <value = int8[2] {10, -20}> ()
            s = Constant <value = float {0.1}> ()
            wd = DequantizeLinear(w, s)
            y = Mul(x, wd)
            shp = Constant <value = int64[2] {1000, 1000}> ()
            z = ConstantOfShape <value = float[1] {1.0}> (shp)
        }
        """
    )
    model = run_pass("constants-to-initializers", src)[0]
    model, modified, stats = run_pass("fold-constants", model, max_growth_mb=1.0)
    assert op_count(model, "DequantizeLinear") == 1
    assert op_count(model, "ConstantOfShape") == 1  # z is a graph output and 4 MB


def test_fold_constants_large_intermediate_skipped() -> None:
    src = graph(
        "(float[1000, 1000] x) => (float[1000, 1000] y)",
        "shp = Constant <value = int64[2] {1000, 1000}> ()",
        "z = ConstantOfShape <value = float[1] {1.0}> (shp)",
        "y = Add(x, z)",
    )
    model = run_pass("constants-to-initializers", src)[0]
    model, modified, stats = run_pass("fold-constants", model, max_growth_mb=1.0)
    assert not modified and stats["skipped_large"] == 1
    model, modified, stats = run_pass("fold-constants", model, max_growth_mb=8.0)
    assert modified and op_count(model, "ConstantOfShape") == 0


NOOPS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3] x) => (float[3, 2] y) {
    a = Identity(x)
    b = Dropout(a)
    c = Cast <to = 1> (b)
    t = Transpose <perm = [0, 1]> (c)
    shp = Constant <value = int64[2] {2, 3}> ()
    r = Reshape(t, shp)
    y = Transpose <perm = [1, 0]> (r)
}
"""


def test_remove_noops() -> None:
    src = parse(NOOPS)
    model = PassManager([make_pass("constants-to-initializers"), make_pass("infer-shapes")]).run(ir.load(src)).model
    model, modified, stats = run_pass("remove-noops", model)
    assert modified and stats["removed"] == 5 and stats["refused"] == 0
    per_op = {k: v for k, v in stats.items() if k.startswith("removed.")}
    assert per_op == {f"removed.{op}": 1 for op in ("Cast", "Dropout", "Identity", "Reshape", "Transpose")}
    assert [n.op for n in model.graph.nodes] == ["Transpose"]
    assert_done(src, model, "remove-noops")


def test_remove_noops_keeps_real_ops_and_io_identity() -> None:
    src = graph("(float[2, 3] x) => (float[2, 3] y, double[2, 3] z)", "y = Identity(x)", "z = Cast <to = 11> (x)")
    ctx = PassContext()
    res = PassManager([make_pass("remove-noops")], check=True).run(ir.load(src), ctx)
    assert not res.modified and [n.op for n in res.model.graph.nodes] == ["Identity", "Cast"]
    # the Identity is a no-op, but its output is a graph output its input (a graph input) cannot replace
    assert [(s.op, s.kept) for s in ctx.skips] == [("Identity", "unchanged")] and "graph output" in ctx.skips[0].reason


def test_remove_noops_keeps_dropout_in_training_mode() -> None:
    src = graph("(float[2, 3] x) => (float[2, 3] y, bool[2, 3] mask)", "y, mask = Dropout(x)")
    _, modified, _ = run_pass("remove-noops", src)
    assert not modified


def test_dedupe_initializers() -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "w1"], ["a"]), helper.make_node("Mul", ["a", "w2"], ["b"]), helper.make_node("Sub", ["b", "w3"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w, "w1"), numpy_helper.from_array(w.copy(), "w2"), numpy_helper.from_array(w + 1, "w3")],
    )
    src = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    src.ir_version = 8
    model, modified, stats = run_pass("dedupe-initializers", src)
    assert modified and stats["merged"] == 1
    assert len(ir.to_proto(model).graph.initializer) == 2
    assert_done(src, model, "dedupe-initializers")


def test_eliminate_dead_code() -> None:
    src = graph("(float[2] x) => (float[2] y)", "unused = Neg(x)", "y = Relu(x)")
    model, modified, stats = run_pass("eliminate-dead-code", src)
    assert modified and stats["removed"] == 1
    assert_idempotent(model, "eliminate-dead-code")


def test_infer_shapes_pass() -> None:
    src = graph("(float[2, 3] x) => (float[3, 2] y)", "a = Relu(x)", "y = Transpose <perm = [1, 0]> (a)")
    model, modified, _ = run_pass("infer-shapes", src)
    assert modified and model.graph.nodes[0].outputs[0].shape == [2, 3]
    assert_idempotent(model, "infer-shapes")


def test_upgrade_opset() -> None:
    src = parse(
        """
        <ir_version: 6, opset_import: ["" : 11]>
        g (float[2, 4] x) => (float[2, 2] y, float[2, 2] z) {
            y, z = Split <axis = 1, split = [2, 2]> (x)
        }
        """
    , ir_version=6)
    model, modified, stats = run_pass("upgrade-opset", src, target=13)
    assert modified and model.opset == 13
    split = next(n for n in model.graph.nodes if n.op == "Split")
    assert len(split.inputs) == 2 and "split" not in split.attrs  # split became an input at opset 13
    assert_done(src, model, "upgrade-opset", target=13)


@pytest.mark.parametrize("builder_text", [CONSTANTS, SHAPES, NOOPS])
def test_cleanup_pipeline_matches_fp32(builder_text: str) -> None:
    src = parse(builder_text)
    model, modified, _ = run_pass("cleanup", src)
    assert modified
    assert_same_outputs(src, checked(model), random_feeds(src))
