"""Subgraph outputs stay local: cleanup never makes an If branch return an outer-scope value directly.

Regression: ``remove-noops`` dropped a branch's ``Identity(h)`` (``h`` computed outside the If), and
``replace_all_uses`` renamed the *outer* tensor to the branch output's name, so the branch returned an
outer value directly — onnxruntime refuses to load that ("Subgraph output ... is an outer scope value
being returned directly").
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import onnxq
from onnxq import ir
from tests.helpers import run


def _if_returning_outer_value() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["t_out"])], "then", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [1, 4])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h"], ["e_out"])], "else", [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [1, 4])]
    )
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x, c], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_cleanup_keeps_branch_outputs_local_and_the_model_runs() -> None:
    src = _if_returning_outer_value()
    cleaned = onnxq.PassManager([onnxq.make_pass("cleanup")], check=True).run(onnxq.load(src)).model
    proto = ir.to_proto(cleaned)
    onnx.checker.check_model(proto, full_check=True)
    # the outer tensor keeps its name (other readers may bind it), the branch still copies it
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    assert relu.output[0] == "h"
    x = np.array([[-1.0, 0.5, 2.0, -3.0]], np.float32)
    for cond in (True, False):
        feeds = {"x": x, "c": np.array(cond)}
        np.testing.assert_array_equal(run(cleaned, feeds)[0], run(src, feeds)[0])


def test_cleanup_is_a_fixed_point_on_a_branch_copying_an_outer_value() -> None:
    """The branch's Identity(outer value) must stay; remove-noops says so instead of re-adding it forever."""
    once = onnxq.PassManager([onnxq.make_pass("remove-noops")]).run(onnxq.load(_if_returning_outer_value()))
    again = onnxq.PassManager([onnxq.make_pass("remove-noops")]).run(once.model)
    assert not once.modified and not again.modified
