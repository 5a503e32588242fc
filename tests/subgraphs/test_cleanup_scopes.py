"""Cleanup and fusion passes inside If branches and Loop/Scan bodies respect outer-scope rules.

A body output is never an outer value returned directly, dead-code removal keeps what a body
returns and removes outer producers only a dead body node read, folding never touches a value that
changes between iterations, deduplication only redirects a graph's readers to a constant visible
from that graph, and a fusion never spans two scopes. Every rewritten model passes the full checker
and runs in onnxruntime with the outputs of the original (both branches, every iteration).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxq
from models import build
from onnxq import ir
from tests.helpers import assert_same_outputs, run
from tests.subgraphs._cases import BUILDERS, feeds


def _apply(model: onnx.ModelProto | ir.Model, name: str) -> tuple[ir.Model, bool, dict]:
    result = onnxq.PassManager([onnxq.make_pass(name)], check=True).run(onnxq.load(model) if isinstance(model, onnx.ModelProto) else model)
    return result.model, result.records[-1].modified, result.records[-1].stats


def _vi(name: str, shape: list | None, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _const(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _model(nodes: list, inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _if(then_nodes: list, then_out: str, else_nodes: list, else_out: str, main: list, inits: list, shape: list) -> onnx.ModelProto:
    """``main`` nodes, then ``y = If(cond)`` with the two branches given; inputs ``x`` and ``cond``."""
    then_g = helper.make_graph(then_nodes, "then", [], [_vi(then_out, shape)])
    else_g = helper.make_graph(else_nodes, "else", [], [_vi(else_out, shape)])
    nodes = [*main, helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="if")]
    return _model(nodes, [_vi("x", shape), _vi("cond", [], TensorProto.BOOL)], [_vi("y", shape)], inits)


def _both_branches(src: onnx.ModelProto, out: ir.Model, x: np.ndarray) -> None:
    for cond in (True, False):
        f = {"x": x, "cond": np.array(cond)}
        np.testing.assert_allclose(run(out, f)[0], run(src, f)[0], rtol=1e-6, atol=1e-6)


def _locals_only(model: ir.Model) -> None:
    for g in ir.iter_graphs(model.graph):
        if g is not model.graph:
            local = {id(t) for n in g.nodes for t in n.outputs} | {id(t) for t in g.inputs}
            assert all(id(t) in local for t in g.outputs), f"{g.name} returns an outer value directly"


# -- the regression: cleanup on the If model ---------------------------------------------------------------


@pytest.mark.parametrize("name", [*BUILDERS, "if-model"])
def test_cleanup_on_control_flow_models_loads_and_matches_fp32(name: str) -> None:
    src = build(name)
    cleaned, _, _ = _apply(src, "cleanup")
    onnx.checker.check_model(ir.to_proto(cleaned), full_check=True)
    _locals_only(cleaned)
    cases = [feeds(name, s) for s in (0, 1)] if name != "if-model" else [{"input": v} for v in (np.ones((2, 16), np.float32), -np.ones((2, 16), np.float32))]
    for f in cases:  # streaming-if: seed 0 takes the 8 kHz branch, seed 1 the 16 kHz one
        assert_same_outputs(src, cleaned, f, atol=1e-5, rtol=1e-5)


def test_a_scan_body_returning_an_outer_value_through_identity_keeps_a_local_copy() -> None:
    cell = helper.make_graph(
        [helper.make_node("Add", ["h", "x_t"], ["h_next"]), helper.make_node("Identity", ["bias_vec"], ["y_t"])],
        "cell", [_vi("h", [3]), _vi("x_t", [3])], [_vi("h_next", [3]), _vi("y_t", [3])],
    )
    src = _model(
        [helper.make_node("Relu", ["x0"], ["bias_vec"]), helper.make_node("Scan", ["h0", "xs"], ["h_n", "ys"], body=cell, num_scan_inputs=1)],
        [_vi("h0", [3]), _vi("xs", [4, 3]), _vi("x0", [3])], [_vi("h_n", [3]), _vi("ys", [4, 3])], [],
    )
    cleaned, _, _ = _apply(src, "cleanup")
    _locals_only(cleaned)
    f = {"h0": np.ones(3, np.float32), "xs": np.arange(12, dtype=np.float32).reshape(4, 3), "x0": np.array([-1, 2, 3], np.float32)}
    assert_same_outputs(src, cleaned, f)
    assert any(n.op == "Relu" and n.outputs[0].name == "bias_vec" for n in cleaned.graph.nodes)  # the outer name is untouched


# -- dead code -------------------------------------------------------------------------------------------------


def test_a_dead_body_node_takes_its_outer_only_producer_with_it() -> None:
    src = _if(
        [helper.make_node("Neg", ["a"], ["dead"], name="dead_neg"), helper.make_node("Abs", ["x"], ["t_out"], name="t_abs")], "t_out",
        [helper.make_node("Sigmoid", ["x"], ["e_out"], name="e_sig")], "e_out",
        [helper.make_node("Relu", ["x"], ["a"], name="only_for_dead")], [], [4],
    )
    out, modified, stats = _apply(src, "eliminate-dead-code")
    assert modified and stats["removed"] == 2
    assert [n.op for n in out.graph.nodes] == ["If"]  # no detached husk left behind in the main graph
    _both_branches(src, out, np.array([-1.0, 0.5, 2.0, -3.0], np.float32))
    _, again, _ = _apply(out, "eliminate-dead-code")
    assert not again


@pytest.mark.parametrize("name", ["loop-decoder", "scan-rnn"])
def test_dead_code_removal_keeps_the_nodes_a_body_returns(name: str) -> None:
    model = ir.load(build(name))
    before = {g.name: len(g.nodes) for g in ir.iter_graphs(model.graph)}
    out, modified, _ = _apply(model, "eliminate-dead-code")
    assert not modified and {g.name: len(g.nodes) for g in ir.iter_graphs(out.graph)} == before
    assert any(n.op == "Identity" for g in ir.iter_graphs(out.graph) for n in g.nodes)  # cond / scan-output copies


# -- deduplication ---------------------------------------------------------------------------------------------


def test_dedupe_merges_a_body_copy_into_the_outer_constant_but_never_across_siblings() -> None:
    w = [0.5, -2.0, 3.0, 1.0]
    src = _if(
        [helper.make_node("Mul", ["x", "w_then"], ["t1"]), helper.make_node("Add", ["t1", "k_then"], ["t_out"])], "t_out",
        [helper.make_node("Mul", ["x", "w_else"], ["e1"]), helper.make_node("Sub", ["e1", "k_else"], ["e_out"])], "e_out",
        [helper.make_node("Mul", ["x", "w_outer"], ["scaled"]), helper.make_node("Identity", ["scaled"], ["unused"])],
        [_const("w_outer", w), _const("w_then", w), _const("w_else", w), _const("k_then", [7, 7, 7, 7]), _const("k_else", [7, 7, 7, 7])],
        [4],
    )
    model = ir.load(src)
    # keep the outer Mul alive so w_outer is read in the main graph
    scaled = next(n for n in model.graph.nodes if n.op == "Mul").outputs[0]
    scaled.dtype, scaled.shape = np.float32, [4]
    model.graph.outputs.append(scaled)
    out, modified, stats = _apply(model, "dedupe-initializers")
    assert modified and stats["merged"] == 2
    readers = {n.outputs[0].name: n.inputs[1].name for g in ir.iter_graphs(out.graph) for n in g.nodes if n.op in ("Mul", "Add", "Sub")}
    assert readers["t1"] == readers["e1"] == "w_outer"  # the outer constant is visible in both branches
    assert {readers["t_out"], readers["e_out"]} == {"k_then", "k_else"}  # siblings keep their own copies
    _both_branches(src, out, np.array([-1.0, 0.5, 2.0, -3.0], np.float32))
    _, again, _ = _apply(out, "dedupe-initializers")
    assert not again


# -- constant folding ------------------------------------------------------------------------------------------


def test_folding_inside_a_loop_body_never_touches_the_carried_value() -> None:
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["two", "three"], ["six"], name="const_mul"),  # folds: both constants
            helper.make_node("Add", ["s", "six"], ["grown"], name="carried_add"),  # reads the carried value
            helper.make_node("Shape", ["s"], ["s_shape"], name="carried_shape"),  # symbolic: stays
            helper.make_node("Cast", ["s_shape"], ["s_shape_f"], name="cast", to=TensorProto.FLOAT),
            helper.make_node("Identity", ["c_in"], ["c_out"], name="cond"),
        ],
        "body", [_vi("i", [], TensorProto.INT64), _vi("c_in", [], TensorProto.BOOL), _vi("s", ["n"])],
        [_vi("c_out", [], TensorProto.BOOL), _vi("grown", ["n"]), _vi("s_shape_f", [1])],
        initializer=[_const("two", 2.0), _const("three", 3.0)],
    )
    src = _model([helper.make_node("Loop", ["steps", "", "x"], ["y", "shapes"], body=body)], [_vi("x", ["n"])],
                 [_vi("y", ["n"]), _vi("shapes", [3, 1])], [_const("steps", 3, np.int64)])
    out, modified, stats = _apply(src, "fold-constants")
    assert modified and stats["folded"] == 1
    body_ops = [n.op for n in out.graph.nodes[0].attrs["body"].nodes]
    assert "Mul" not in body_ops and {"Add", "Shape"} <= set(body_ops)
    f = {"x": np.array([1.0, -2.0, 0.5], np.float32)}
    assert_same_outputs(src, out, f)
    np.testing.assert_allclose(run(out, f)[0], f["x"] + 18)  # six added on each of three steps


# -- fusion ----------------------------------------------------------------------------------------------------


def test_a_fusion_inside_a_body_keeps_its_output_local() -> None:
    rng = np.random.default_rng(0)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["s", "w"], ["mm"], name="mm"), helper.make_node("Add", ["mm", "b"], ["s_next"], name="add"),
         helper.make_node("Identity", ["c_in"], ["c_out"], name="cond")],
        "body", [_vi("i", [], TensorProto.INT64), _vi("c_in", [], TensorProto.BOOL), _vi("s", [2, 4])],
        [_vi("c_out", [], TensorProto.BOOL), _vi("s_next", [2, 4])],
        initializer=[_const("w", rng.standard_normal((4, 4)) * 0.5), _const("b", rng.standard_normal(4))],
    )
    src = _model([helper.make_node("Loop", ["steps", "", "x"], ["y"], body=body)], [_vi("x", [2, 4])], [_vi("y", [2, 4])], [_const("steps", 3, np.int64)])
    out, modified, stats = _apply(src, "fuse-matmul-add")
    assert modified and stats["fused"] == 1
    loop_body = out.graph.nodes[0].attrs["body"]
    assert [n.op for n in loop_body.nodes if n.op != "Identity"] == ["Gemm"]
    _locals_only(out)
    assert_same_outputs(src, out, {"x": rng.standard_normal((2, 4)).astype(np.float32)})


def test_a_pattern_spanning_the_main_graph_and_a_branch_is_refused_with_its_reason() -> None:
    # Add(x, 3) outside, Clip(0, 6) → Div(6) inside: HardSigmoid's pattern, but across the If boundary
    src = _if(
        [helper.make_node("Clip", ["a", "zero", "six"], ["clipped"], name="t_clip"), helper.make_node("Div", ["clipped", "six"], ["t_out"])],
        "t_out",
        [helper.make_node("Sigmoid", ["x"], ["e_out"], name="e_sig")], "e_out",
        [helper.make_node("Add", ["x", "three"], ["a"], name="add3")],
        [_const("three", 3.0), _const("zero", 0.0), _const("six", 6.0)], [4],
    )
    ctx = onnxq.PassContext()
    result = onnxq.PassManager([onnxq.make_pass("fuse-activations")], check=True).run(onnxq.load(src), ctx)
    assert not result.records[-1].modified and result.records[-1].stats["refused"] == 1
    assert [s.reason for s in ctx.skips] == ["the pattern crosses a subgraph boundary (an If/Loop/Scan body and its enclosing graph)"]
    _locals_only(result.model)
    _both_branches(src, result.model, np.array([-4.0, -1.0, 0.5, 5.0], np.float32))


# -- shape inference -------------------------------------------------------------------------------------------


def test_infer_shapes_annotates_tensors_inside_bodies() -> None:
    model = ir.load(build("loop-decoder"))
    for g in ir.iter_graphs(model.graph):
        for n in g.nodes if g is not model.graph else []:
            for t in n.outputs:
                t.dtype, t.shape = None, None
    out, modified, stats = _apply(model, "infer-shapes")
    assert modified and stats["succeeded"]
    body = next(g for g in ir.iter_graphs(out.graph) if g is not out.graph)
    tanh = next(n.outputs[0] for n in body.nodes if n.op == "Tanh")
    assert np.dtype(tanh.dtype) == np.float32 and tanh.shape == ["N", 64]
