"""Graph queries and edits: toposort, dead code, replace-all-uses, names, shape inference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxq import InvalidModelError, ir
from tests.helpers import graph, parse, run


def chain(n: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"r{i}") for i in range(n)]
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("t0", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(f"t{n}", onnx.TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_toposort_deep_chain_without_recursion_error() -> None:
    model = ir.load(chain(20000))
    model.graph.nodes.reverse()
    ir.toposort(model.graph)
    assert [n.name for n in model.graph.nodes[:3]] == ["r0", "r1", "r2"]


def test_toposort_is_stable_for_independent_nodes() -> None:
    model = ir.load(graph("(float[2] x) => (float[2] a, float[2] b)", "b = Neg(x)", "a = Relu(x)"))
    ir.toposort(model.graph)
    assert [n.op for n in model.graph.nodes] == ["Neg", "Relu"]


def test_cycle_is_reported() -> None:
    model = ir.load(chain(3))
    first, last = model.graph.nodes[0], model.graph.nodes[-1]
    first.inputs[0] = last.outputs[0]
    with pytest.raises(InvalidModelError, match="cycle"):
        ir.toposort(model.graph)


def test_remove_dead_nodes_keeps_outputs() -> None:
    model = ir.load(graph("(float[2] x) => (float[2] y)", "dead1 = Neg(x)", "dead2 = Abs(dead1)", "y = Relu(x)"))
    assert ir.remove_dead_nodes(model.graph) == 2
    assert [n.op for n in model.graph.nodes] == ["Relu"]
    assert ir.remove_dead_nodes(model.graph) == 0


def test_replace_all_uses_renames_into_graph_output() -> None:
    model = ir.load(graph("(float[2] x) => (float[2] y)", "h = Relu(x)", "y = Identity(h)"))
    ident = model.graph.nodes[1]
    ir.replace_all_uses(model.graph, ident.outputs[0], ident.inputs[0])
    ir.remove_nodes(model.graph, [ident])
    assert model.graph.outputs[0].name == "y"
    assert [n.op for n in model.graph.nodes] == ["Relu"]
    ir.check(model)
    x = np.array([-1, 2], np.float32)
    np.testing.assert_array_equal(run(model, {"x": x})[0], [0, 2])


def test_replace_all_uses_with_graph_input_inserts_identity() -> None:
    model = ir.load(graph("(float[2] x) => (float[2] y)", "y = Relu(x)"))
    relu = model.graph.nodes[0]
    ir.replace_all_uses(model.graph, relu.outputs[0], model.graph.inputs[0])
    ir.remove_nodes(model.graph, [relu])
    ir.normalize(model)
    assert [n.op for n in model.graph.nodes] == ["Identity"]
    assert model.graph.outputs[0].name == "y"
    ir.check(model)


def test_name_generator_is_unique_and_deterministic() -> None:
    model = ir.load(chain(3))
    names = ir.names(model)
    assert names.new("fresh") == "fresh"
    assert names.new("r0") == "r0_1"
    assert names.new("r0") == "r0_2"
    assert names.new("t1") == "t1_1"


def test_infer_shapes_annotates_and_failure_leaves_graph() -> None:
    model = ir.load(chain(3))
    assert ir.infer_shapes(model)
    assert model.graph.nodes[1].outputs[0].shape == [2]
    broken = ir.load(chain(2))
    broken.graph.nodes[0].op = "NoSuchOp"
    broken.graph.nodes[0].domain = "unknown.domain"
    before = [(t.name, t.shape) for n in broken.graph.nodes for t in n.outputs]
    ir.infer_shapes(broken)
    assert [(t.name, t.shape) for n in broken.graph.nodes for t in n.outputs] == before


def test_clone_is_independent() -> None:
    model = ir.load(chain(3))
    copy = ir.clone(model)
    copy.graph.nodes.pop()
    assert len(model.graph.nodes) == 3


def test_dead_code_inside_subgraph() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (bool c, float[2] x) => (float[2] y) {
        y = If(c) <
            then_branch = t () => (float[2] a) { unused = Neg(x) a = Relu(x) },
            else_branch = e () => (float[2] b) { b = Abs(x) }
        >
    }
    """
    model = ir.load(parse(text))
    assert ir.remove_dead_nodes(model.graph) == 1
    ir.check(model)
