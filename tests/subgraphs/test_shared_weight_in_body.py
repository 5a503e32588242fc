"""A weight read by a MatMul in the main graph and by one inside an If branch: each graph gets its own
quantized copy. With the copy only in the main graph, onnxruntime 1.32 refused the 16-bit-activation
model ("TransposeDQWeightsForMatMulNBits Missing required weight": its DQ -> MatMulNBits fusion looks
for the weight in the branch only). Found by tests/fuzz."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import onnxq


def shared_weight_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def branch(name: str, sign: float) -> onnx.GraphProto:
        const = h.make_node("Constant", [], [f"{name}_c"], value=h.make_tensor(f"{name}_v", T.FLOAT, [], [sign]))
        matmul = h.make_node("MatMul", ["a", "w"], [f"{name}_m"], name=f"{name}/MatMul")
        nodes = [matmul, const, h.make_node("Mul", [f"{name}_m", f"{name}_c"], [name], name=f"{name}/Mul")]
        return h.make_graph(nodes, name, [], [h.make_tensor_value_info(name, T.FLOAT, [2, 8])])

    nodes = [
        h.make_node("MatMul", ["x", "w"], ["a0"], name="top/MatMul"),
        h.make_node("Relu", ["a0"], ["a"], name="relu"),
        h.make_node("ReduceSum", ["a"], ["s"], keepdims=0, name="sum"),
        h.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
        h.make_node("If", ["c"], ["y"], then_branch=branch("t", 1.0), else_branch=branch("e", -1.0), name="if"),
    ]
    inits = [nh.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"), nh.from_array(np.array(0.0, np.float32), "zero")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 8])], [h.make_tensor_value_info("y", T.FLOAT, [2, 8])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("activation_dtype", ["uint8", "int16"])
def test_each_graph_reads_its_own_quantized_weight(activation_dtype: str) -> None:
    source = shared_weight_model()
    feeds = [{"x": np.random.default_rng(i).standard_normal((2, 8)).astype(np.float32)} for i in range(8)]
    result = onnxq.quantize_static(source, feeds, activation_dtype=activation_dtype, weight_dtype="uint8", per_channel=False, tune=False)
    proto = onnxq.ir.to_proto(result.model)
    onnx.checker.check_model(proto, full_check=True)
    branch = next(a.g for n in proto.graph.node if n.op_type == "If" for a in n.attribute if a.name == "then_branch")
    dq = next(n for n in branch.node if n.op_type == "DequantizeLinear")
    assert dq.input[0] in {i.name for i in branch.initializer} | {n.output[0] for n in branch.node}  # stored in the branch
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(source.SerializeToString(), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, f)[0].ravel() for f in feeds])
    want = np.concatenate([reference.run(None, f)[0].ravel() for f in feeds])
    assert float(np.dot(got, want) / (np.linalg.norm(got) * np.linalg.norm(want))) >= 0.99
