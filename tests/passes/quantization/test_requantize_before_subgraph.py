"""close-float-islands' ``requantize-before-subgraph``: a dequantized MaxPool / Transpose / Reshape /
Squeeze / Unsqueeze whose output a subgraph reads made onnxruntime 1.32 abort while loading (found
by tests/fuzz); after the rule it loads, and computes what the original graph computes (checked
against onnxruntime with optimizations off, where the original loads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from onnxq import ir
from onnxq.passes.quantization.close_float_islands import close_islands

SHAPE = [1, 2, 4, 4]
#: op → (attributes, extra constant inputs, output rank)
OPS = {
    "MaxPool": ({"kernel_shape": [1, 1]}, [], 4),
    "Transpose": ({"perm": [0, 1, 3, 2]}, [], 4),
    "Reshape": ({}, ["shape"], 2),
    "Squeeze": ({}, ["axes0"], 3),
    "Unsqueeze": ({}, ["axes0"], 5),
}


def subgraph_reads(op: str, explicit_reader: bool = False) -> onnx.ModelProto:
    """``x → Q → DQ → op → p``; both If branches return ``p`` (+1 / -1); optionally a Relu reads ``p`` too."""
    attrs, extra, rank = OPS[op]
    dims = [f"d{i}" for i in range(rank)]

    def branch(name: str, offset: float) -> onnx.GraphProto:
        const = h.make_node("Constant", [], [f"{name}_c"], value=h.make_tensor(f"{name}_v", T.FLOAT, [], [offset]))
        return h.make_graph([const, h.make_node("Add", ["p", f"{name}_c"], [name])], name, [], [h.make_tensor_value_info(name, T.FLOAT, dims)])

    nodes = [
        h.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        h.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
        h.make_node(op, ["xd", *extra], ["p"], name="op", **attrs),
        h.make_node("If", ["c"], ["y"], name="if", then_branch=branch("t", 1.0), else_branch=branch("e", -1.0)),
    ]
    outputs = [h.make_tensor_value_info("y", T.FLOAT, dims)]
    if explicit_reader:
        nodes.append(h.make_node("Relu", ["p"], ["r"], name="relu"))
        outputs.append(h.make_tensor_value_info("r", T.FLOAT, dims))
    inits = [
        h.make_tensor("s", T.FLOAT, [], [0.05]),
        h.make_tensor("z", T.UINT8, [], [128]),
        h.make_tensor("shape", T.INT64, [2], [2, 16]),
        h.make_tensor("axes0", T.INT64, [1], [0]),
    ]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, SHAPE), h.make_tensor_value_info("c", T.BOOL, [])]
    model = h.make_model(h.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[h.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def feeds(cond: bool) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32) * 3, "c": np.array(cond)}


def run_unoptimized(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feed)


def loads_with_all_optimizations(path: Path) -> subprocess.CompletedProcess[str]:
    """In a child process: onnxruntime aborts (SIGABRT) on the unfixed graph."""
    code = f"import onnxruntime as ort; ort.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider']); print('loaded')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("op", sorted(OPS))
def test_requantized_output_loads_and_computes_the_same(op: str, tmp_path: Path) -> None:
    source = subgraph_reads(op)
    model = ir.load(source)
    stats = close_islands(model)
    fixed = ir.to_proto(model)
    onnx.checker.check_model(fixed, full_check=True)
    assert stats["closed.requantize-before-subgraph"] == 1, stats
    producer = {o: n for n in fixed.graph.node for o in n.output}
    assert producer["p"].op_type == "DequantizeLinear" and producer[producer["p"].input[0]].op_type == "QuantizeLinear"
    path = tmp_path / "fixed.onnx"
    onnx.save(fixed, path)
    child = loads_with_all_optimizations(path)
    assert child.returncode == 0 and "loaded" in child.stdout, child.stderr[-300:]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for cond in (True, False):
        expected = run_unoptimized(source, feeds(cond))[0]
        np.testing.assert_array_equal(session.run(None, feeds(cond))[0], expected)  # exact: the op only moves grid values


def test_onnxruntime_still_aborts_on_the_original(tmp_path: Path) -> None:
    """Why the rule exists; when this fails, onnxruntime is fixed and the rule can go."""
    path = tmp_path / "original.onnx"
    onnx.save(subgraph_reads("MaxPool"), path)
    assert loads_with_all_optimizations(path).returncode != 0


def test_no_subgraph_reader_no_change() -> None:
    plain = subgraph_reads("Transpose")
    del plain.graph.node[3]  # drop the If: nothing reads p from a subgraph
    plain.graph.node.append(h.make_node("Relu", ["p"], ["y"], name="relu"))
    model = ir.load(plain)
    before = ir.to_proto(model).SerializeToString()
    close_islands(model, rules=("requantize-before-subgraph",))
    assert ir.to_proto(model).SerializeToString() == before


def test_an_explicit_reader_beside_the_subgraph_sees_the_same_values(tmp_path: Path) -> None:
    source = subgraph_reads("MaxPool", explicit_reader=True)
    model = ir.load(source)
    close_islands(model)
    path = tmp_path / "fixed.onnx"
    onnx.save(ir.to_proto(model), path)
    assert loads_with_all_optimizations(path).returncode == 0
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds(True))
    for a, b in zip(got, run_unoptimized(source, feeds(True))):
        np.testing.assert_array_equal(a, b)
