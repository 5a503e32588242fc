"""Local error: each quantized layer of QUANT run on FLOAT's values, so blame lands where error starts.

The error of a tensor in QUANT is *accumulated*: it carries the error of every layer upstream. To
see what a layer adds on its own, the layer is fed exact inputs. The cut points are the compared
quantized tensors themselves (the integer tensors ``t/q``, :mod:`._match`): a tensor's *segment* is
the part of QUANT between the cut points it reads (its *frontier*: integer tensors of other compared
tensors, and graph inputs) and itself — in a QDQ model ``DQ → Conv → Relu → Q``, in a QOperator
model one ``QLinearConv``. A *cut model* holds the segments of a group of tensors; each integer
frontier tensor is replaced by ``QuantizeLinear(float twin)`` with that tensor's own scale and zero
point (the twin is a graph input), so the layer sees its inputs exactly as if upstream had been
float, quantized as QUANT quantizes them. Its output, dequantized, against the float twin is the
local error: the
input rounding at this layer's scales, its weights' quantization, its own output quantization —
and nothing from upstream. A frontier tensor that is not a cut point (no float twin) is walked
through, so its error counts as local to the tensors after it.

Nothing is written to disk; the cut model is an in-memory copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..ir import Model, Node, Tensor
from ._qparams import QuantParams

__all__ = ["Segment", "CutModel", "segments", "cut_model", "layer_of"]

_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass
class Segment:
    """What computes one compared tensor from its frontier (node indices in QUANT's node list)."""

    nodes: list[int] = field(default_factory=list)
    #: integer cut tensors read (quantized tensors compared too)
    cuts: list[str] = field(default_factory=list)
    #: graph inputs read
    inputs: list[str] = field(default_factory=list)


def _walk(target: Tensor, cuts: set[str], index: dict[int, int]) -> Segment:
    seg = Segment()
    seen: set[int] = set()
    stack = [target]
    nodes: set[int] = set()
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t is not target and t.name in cuts:
            seg.cuts.append(t.name)
            continue
        if ir.is_constant(t) or not t.name:
            continue
        node = ir.producer(t)
        if node is None:
            seg.inputs.append(t.name)
            continue
        if id(node) in nodes:
            continue
        nodes.add(id(node))
        seg.nodes.append(index[id(node)])
        stack.extend(node.inputs)
        for sub in ir.subgraphs_of(node):
            stack.extend(ir.foreign_inputs(sub))
    seg.nodes.sort()
    seg.cuts.sort()
    return seg


def segments(model: Model, targets: Sequence[str], cuts: set[str]) -> dict[str, Segment]:
    """The segment of every target tensor of ``model``'s main graph (see the module docstring)."""
    graph = model.graph
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    tensors = {t.name: t for n in graph.nodes for t in n.outputs if t.name}
    tensors.update({t.name: t for t in graph.inputs})
    return {name: _walk(tensors[name], cuts, index) for name in targets if name in tensors}


def layer_of(model: Model, seg: Segment) -> Node | None:
    """The node a segment is named after: its first node that is not a Q/DQ (the layer's compute)."""
    nodes = model.graph.nodes
    for i in seg.nodes:
        if nodes[i].op not in _QDQ:
            return nodes[i]
    return None


def _params(qp: QuantParams, base: str, namer: ir.NameGenerator) -> tuple[list[Tensor], dict[str, int]]:
    scale = ir.make_constant(namer.new(f"{base}/onnxq_debug_scale"), qp.scale)
    zp = ir.make_constant(namer.new(f"{base}/onnxq_debug_zero_point"), qp.zero_point)
    return [scale, zp], ({"axis": qp.axis} if qp.axis is not None and qp.scale.size > 1 else {})


@dataclass
class CutModel:
    """A cut model (module docstring): its feeds, what each carries, and its outputs."""

    model: Model
    #: graph input → the cut tensor (integer tensor of QUANT) whose float twin it takes
    feeds: dict[str, str]
    #: sample inputs it reads (graph inputs of QUANT)
    inputs: list[str]
    #: target → the output carrying its value (the integer tensor itself, or a float output)
    outputs: dict[str, str]


def cut_model(model: Model, targets: Sequence[str], segs: dict[str, Segment], qparams: dict[str, QuantParams]) -> CutModel:
    """The cut model computing ``targets`` from their frontiers (``qparams`` of the integer tensors)."""
    work = ir.clone(model)
    graph = work.graph
    namer = ir.names(work)
    nodes = [graph.nodes[i] for i in sorted({i for t in targets for i in segs[t].nodes})]
    feeds: dict[str, str] = {}
    replacement: dict[str, Tensor] = {}
    added: list[Node] = []
    for c in sorted({c for t in targets for c in segs[t].cuts}):
        feed = ir.make_variable(namer.new(f"{c}/onnxq_debug_float"), dtype=np.float32)
        params, attrs = _params(qparams[c], c, namer)
        replacement[c] = ir.make_variable(namer.new(f"{c}/onnxq_debug_q"), dtype=qparams[c].zero_point.dtype)
        added.append(ir.make_node("QuantizeLinear", [feed, *params], [replacement[c]], name=replacement[c].name, attrs=attrs))
        feeds[feed.name] = c
    for node in nodes:
        for i, t in enumerate(node.inputs):
            if t.name in replacement:
                node.inputs[i] = replacement[t.name]
    inputs = sorted({i for t in targets for i in segs[t].inputs})
    by_name = {t.name: t for n in nodes for t in n.outputs if t.name}
    by_name.update({t.name: t for t in graph.inputs})
    outputs: dict[str, Tensor] = {}
    for name in targets:
        t = outputs[name] = by_name[name]
        if t.dtype is None:
            t.dtype = qparams[name].zero_point.dtype if name in qparams else np.dtype(np.float32)
    graph_inputs = [by_name[i] for i in inputs] + [n.inputs[0] for n in added]
    cut = work.replace_graph(ir.make_graph(added + nodes, graph_inputs, list(outputs.values()), name="cut", opset=graph.opset))
    return CutModel(cut, feeds, inputs, {k: v.name for k, v in outputs.items()})
