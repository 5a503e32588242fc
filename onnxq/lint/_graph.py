"""A read-only view of a Q/DQ graph for the lint rules: which tensors are quantized, with which
parameters, and which ops sit between a DequantizeLinear and a QuantizeLinear.

Vocabulary (onnxruntime's "node unit", TensorRT's "quantized layer"): an op whose float data inputs
all come from DequantizeLinear nodes and whose outputs all feed QuantizeLinear nodes is *quantized*
— a runtime that fuses Q/DQ runs it on integers. A DequantizeLinear whose input is a constant
dequantizes a *weight* (or bias); any other dequantizes an *activation*.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .. import ir
from ..ir import Model, Node, Tensor
from ..targets._ops import WEIGHTED_OPS

__all__ = ["QDQGraph", "QParams", "QUANT_OPS"]

QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class QParams:
    """The parameters of one QuantizeLinear or DequantizeLinear node."""

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int | None

    def grid_range(self) -> tuple[float, float]:
        """The real interval the grid represents (per-tensor: scalar; per-channel: widest)."""
        info = np.iinfo(np.dtype(self.dtype)) if self.dtype != "int32" else np.iinfo(np.int32)
        z = self.zero_point.astype(np.float64)
        s = self.scale.astype(np.float64)
        return float(np.min((info.min - z) * s)), float(np.max((info.max - z) * s))

    def same_as(self, other: QParams) -> bool:
        return self.dtype == other.dtype and np.array_equal(self.scale, other.scale) and np.array_equal(self.zero_point, other.zero_point)


class QDQGraph:
    """The model's nodes (subgraphs included) with Q/DQ queries."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.nodes = list(ir.iter_nodes(model.graph))
        self.graph_outputs = {id(t) for g in ir.iter_graphs(model.graph) for t in g.outputs}

    @staticmethod
    def is_q(node: Node | None) -> bool:
        return node is not None and node.op == "QuantizeLinear" and (node.domain or "") in ("", "ai.onnx", "com.microsoft")

    @staticmethod
    def is_dq(node: Node | None) -> bool:
        return node is not None and node.op == "DequantizeLinear" and (node.domain or "") in ("", "ai.onnx", "com.microsoft")

    def compute_nodes(self) -> Iterator[Node]:
        """Every node that is not a Q or DQ."""
        return (n for n in self.nodes if n.op not in QUANT_OPS)

    def dq_of(self, t: Tensor) -> Node | None:
        """The DequantizeLinear producing ``t``, if one does."""
        p = ir.producer(t)
        return p if self.is_dq(p) else None

    def is_weight_dq(self, dq: Node) -> bool:
        return ir.is_constant(dq.inputs[0])

    def activation_inputs(self, node: Node) -> list[Tensor]:
        """The inputs of ``node`` computed at run time (not constants, not DQ of constants, not empty)."""
        out = []
        for t in node.inputs:
            if not t.name or ir.is_constant(t):
                continue
            dq = self.dq_of(t)
            if dq is not None and self.is_weight_dq(dq):
                continue
            out.append(t)
        return out

    def is_quantized(self, node: Node, fused: frozenset[str] = frozenset({"Relu", "Clip"})) -> bool:
        """Every activation input comes from a DQ node, and the output is quantized too — unless the
        op is a weighted one (Conv, MatMul, Gemm run int8 with a float output on every target).

        An output counts as quantized when it feeds only Q nodes, or only one activation in ``fused``
        (the runtime folds it into the op) whose output feeds only Q nodes.
        """
        acts = self.activation_inputs(node)
        if not acts or any(self.dq_of(t) is None for t in acts):
            return False
        if node.op in WEIGHTED_OPS:
            return True
        outs = [t for t in node.outputs if t.name and (t.outputs or id(t) in self.graph_outputs)]
        return bool(outs) and all(self._feeds_q(t, fused) for t in outs)

    def _feeds_q(self, t: Tensor, fused: frozenset[str]) -> bool:
        if id(t) in self.graph_outputs or not t.outputs:
            return False
        if all(self.is_q(c) for c in t.outputs):
            return True
        act = t.outputs[0] if len(t.outputs) == 1 else None
        return act is not None and act.op in fused and self._feeds_q(act.outputs[0], frozenset())

    def consumers(self, t: Tensor) -> list[Node]:
        return list(t.outputs)

    def params(self, node: Node) -> QParams | None:
        """Scale, zero point, integer type and axis of a Q or DQ node (None when they are not constants)."""
        scale = ir.constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if scale is None:
            return None
        zp_t = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        zp = ir.constant_array(zp_t) if zp_t is not None else None
        dtype = self._qtype(node, zp)
        if dtype is None:
            return None
        zero = np.asarray(zp) if zp is not None else np.zeros(np.asarray(scale).shape, np.dtype(dtype))
        axis = ir.attr(node, "axis", 1) if np.asarray(scale).ndim == 1 and np.asarray(scale).size > 1 else None
        return QParams(np.asarray(scale, np.float32), zero, dtype, axis)

    def _qtype(self, node: Node, zp: np.ndarray | None) -> str | None:
        if zp is not None:
            return str(np.asarray(zp).dtype)
        if node.op == "DequantizeLinear":
            data = ir.constant_array(node.inputs[0])
            if data is not None:
                return str(data.dtype)
            producer = ir.producer(node.inputs[0])
            if self.is_q(producer):
                return self._qtype(producer, None)
        to = ir.attr(node, "output_dtype", 0)
        return str(ir.np_dtype(to)) if to else "uint8"  # ONNX: QuantizeLinear without a zero point writes uint8

    def qdq_pairs(self) -> Iterator[tuple[Node, Node]]:
        """``(Q, DQ)`` for every DQ reading a Q's output."""
        for node in self.nodes:
            if self.is_q(node):
                for c in node.outputs[0].outputs:
                    if self.is_dq(c):
                        yield node, c
