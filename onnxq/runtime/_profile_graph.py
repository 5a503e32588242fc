"""The graph onnxruntime executed, read for :mod:`.profile`: float islands and the NHWC check.

Both work on onnxruntime's optimized model (``SessionOptions.optimized_model_filepath``), whose
node names are the names in the profiler's trace. Element types come from the trace (the optimized
model carries no value_info): a node's outputs are typed by its ``output_type_shape``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import onnx

from ..disjoint_sets import DisjointSets

__all__ = ["Island", "float_islands", "nhwc_check"]

_QUANTIZE = frozenset({"QuantizeLinear", "DynamicQuantizeLinear"})
_FLOAT_SIDE = frozenset({"float_compute", "conversions"})
_MOVERS = frozenset({"layout", "rest"})


class _Timed(Protocol):
    """What the analysis needs of a profiled node (:class:`onnxq.runtime.profile.NodeTime`)."""

    @property
    def category(self) -> str: ...
    @property
    def ms(self) -> float: ...
    @property
    def output_types(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Island:
    """A ``DQ → float ops → Q`` region between int8 kernels: its nodes (executed names) and median ms."""

    nodes: tuple[str, ...]
    ms: float


def float_islands(graph: onnx.GraphProto, times: Mapping[str, _Timed], float_types: Collection[str]) -> list[Island]:
    """The float islands of an executed graph (definition: :mod:`onnxq.runtime.profile`), slowest first.

    Nodes on the float side are float compute and conversions, plus layout/rest nodes with a float
    output; two of them are joined when one consumes a float tensor the other produces. A group
    is an island when it holds a DequantizeLinear of a tensor some node produced and a Quantize
    whose output some node consumes.
    """
    nodes = [n for n in graph.node if n.name in times]
    producer = {out: n.name for n in graph.node for out in n.output if out}
    consumed = {i for n in graph.node for i in n.input if i}
    float_tensors = {out for n in nodes for out, t in zip(n.output, times[n.name].output_types) if t in float_types}
    side = {n.name for n in nodes if _float_side(times[n.name].category, any(o in float_tensors for o in n.output))}
    regions = DisjointSets(n.name for n in nodes if n.name in side)
    for n in nodes:
        if n.name not in side:
            continue
        for tensor in n.input:
            source = producer.get(tensor)
            if tensor in float_tensors and source is not None and source in side:
                regions.union(n.name, source)
    by_name = {n.name: n for n in nodes}
    islands = []
    for members in ([by_name[name] for name in group] for group in regions.groups()):
        enters = any(n.op_type == "DequantizeLinear" and n.input and n.input[0] in producer for n in members)
        leaves = any(n.op_type in _QUANTIZE and n.output and n.output[0] in consumed for n in members)
        if enters and leaves:
            islands.append(Island(tuple(n.name for n in members), float(sum(times[n.name].ms for n in members))))
    return sorted(islands, key=lambda i: (-i.ms, i.nodes))


def _float_side(category: str, float_output: bool) -> bool:
    return category in _FLOAT_SIDE or (category in _MOVERS and float_output)


def nhwc_check(graph: onnx.GraphProto) -> dict[str, Any] | None:
    """How many QLinearConv onnxruntime's NHWC transformer made channels-last (None: no QLinearConv).

    The transformer replaces ``QLinearConv`` by the ``com.microsoft`` kernel with ``channels_last=1``
    and MaxPool by ``NhwcMaxPool``; a QLinearConv left in the default domain runs NCHW.
    """
    convs = [n for n in graph.node if n.op_type == "QLinearConv"]
    if not convs:
        return None
    nhwc = sum(1 for n in convs if n.domain == "com.microsoft" and _int_attr(n, "channels_last") == 1)
    nhwc_ops = sum(1 for n in graph.node if n.op_type.startswith("Nhwc"))
    return {"qlinear_conv": len(convs), "channels_last": nhwc, "nhwc_ops": nhwc_ops, "applied": nhwc == len(convs)}


def _int_attr(node: onnx.NodeProto, name: str) -> int | None:
    for attr in node.attribute:
        if attr.name == name and attr.type == onnx.AttributeProto.INT:
            return int(attr.i)
    return None
