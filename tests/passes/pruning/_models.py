"""Tiny models and helpers shared by the pruning / compression tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxq import PassContext, PassManager, ir, make_pass
from tests.helpers import model_of, vi

RNG_SEED = 0




def init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)




def run_pass(src: Any, name: str, options: dict | None = None, ctx: PassContext | None = None, shapes: bool = True) -> tuple[ir.Model, bool, dict]:
    """Run one pass (then infer-shapes) under the checker; return (model, modified, stats).

    The stats carry the pass's skip records as ``skipped`` ({layer or group: reason}).
    """
    passes = [make_pass(name, options or {})]
    if shapes:
        passes.append(make_pass("infer-shapes"))
    ctx = ctx if ctx is not None else PassContext()
    res = PassManager(passes, check=True).run(ir.load(src), ctx)
    stats = {**res.records[0].stats, "skipped": {s.node: s.reason for s in ctx.skips if s.pass_name == name}}
    return res.model, res.records[0].modified, stats


def weight(model: ir.Model, node_name: str, index: int = 1) -> np.ndarray:
    """The constant at input ``index`` of the node called ``node_name``."""
    node = next(n for n in ir.iter_nodes(model.graph) if n.name == node_name)
    return np.asarray(ir.constant_array(node.inputs[index]))


def node(model: ir.Model, node_name: str) -> Any:
    return next(n for n in ir.iter_nodes(model.graph) if n.name == node_name)


def initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def set_initializer(proto: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    for i, t in enumerate(proto.graph.initializer):
        if t.name == name:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(array, dtype=numpy_helper.to_array(t).dtype), name))
            return
    raise KeyError(name)


def quantized_linear(zero_point: int, per_channel: bool, seed: int = 0) -> onnx.ModelProto:
    """x[2, 8] → MatMul(x, DequantizeLinear(q int8 [8, 4], scale, zp)) → y[2, 4]."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-100, 100, (8, 4)).astype(np.int8)
    scale = rng.uniform(0.01, 0.05, 4 if per_channel else ()).astype(np.float32)
    zp = np.full(scale.shape, zero_point, dtype=np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["w"], name="dq", **({"axis": 1} if per_channel else {})),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="fc"),
    ]
    return model_of(nodes, [vi("x", [2, 8])], [vi("y", [2, 4])], [init("q", q), init("scale", scale), init("zp", zp)])
