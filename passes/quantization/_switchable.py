"""A model whose quantization is switched at run time: every candidate plan in one session.

Sensitivity analysis evaluates hundreds of plans that differ only in which of the full plan's
values are quantized. Rather than build one onnxruntime session per plan, the full plan is
materialized once (:func:`~.insert_qdq.materialize`: the very Q/DQ pairs and stored weights
``insert-qdq`` writes) and every quantized value is put behind a switch, a scalar ``bool`` graph
input read by an ``If``::

    activation t:       t_dq = If(switch_t)  then Q(t, s, z) → DQ(s, z)   else Identity(t)
    stored weights of n: y   = If(switch_n)  then n(x, DQ(W_q), ...)       else n(x, W, ...)

``DQ(W_q)`` is computed once, here, as a float constant (``(W_q - z_w) · s_w`` along the weight's
axis, what ``DequantizeLinear`` computes), so both branches of a weighted node keep constant
weights that onnxruntime prepacks. A switch that is off costs an ``If`` dispatch and, for an
activation, a copy; measured on the PP-OCR recognizer, the model with every switch off runs in
about 1.4x the float model's time, with every switch on 1.9x. (``Where(switch, DQ(Q(t)), t)``, the
obvious alternative, computes both branches always and makes weights run-time inputs: 3.8x.)

What this measures: the ONNX semantics of the QDQ model (fake quantization, float arithmetic on the
dequantized grid values). onnxruntime's int8 kernels and graph rewrites are not used, so their own
effects are not seen: int32 instead of float accumulation (tiny); the u8·s8 overflow of x86 CPUs
without VNNI when ``reduce_range`` is off (onnxq turns it on where that product saturates, see
:func:`onnxq.runtime.kernels.int8_products_saturate`); and onnxruntime's ``WeightBiasQuantization``
(1.20+, basic level), which quantizes the float weights of a Conv/Gemm/MatMul whose input is
dequantized and whose output is quantized — a unit kept float between quantized tensors is not float
on onnxruntime (measured on the cnn builder: 28.0 dB there against 32.9 dB float, with the full
plan at 26.6 dB). The ``rebuild`` engine of :mod:`.sensitivity` runs what onnxruntime runs, one
session per plan, to compare against.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from onnxq import ir
from onnxq.calibration.ranges import TensorRange
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.plan import QuantPlan

from .insert_qdq import materialize

__all__ = ["SWITCH_PREFIX", "Switches", "build_switchable", "dequantized"]

#: Prefix of the switch inputs' names.
SWITCH_PREFIX = "onnxq_switch"


@dataclass(frozen=True)
class Switches:
    """The switch inputs of a switchable model.

    Attributes:
        activations: planned activation tensor → its switch input's name.
        nodes: node with stored weights (and bias) → its switch input's name.
    """

    activations: Mapping[str, str]
    nodes: Mapping[str, str]

    def feeds(self, activations: Collection[str], weights: Collection[tuple[str, int]]) -> dict[str, np.ndarray]:
        """Switch inputs turning on exactly ``activations`` and the nodes of ``weights`` ((node, input index) pairs)."""
        weighted = {node for node, _ in weights}
        out = {name: np.array(t in activations) for t, name in self.activations.items()}
        out.update({name: np.array(n in weighted) for n, name in self.nodes.items()})
        return out


def build_switchable(model: Model, plan: QuantPlan, ranges: Mapping[str, TensorRange]) -> tuple[Model, Switches]:
    """A copy of ``model`` with ``plan`` materialized and each quantized value behind a switch.

    ``model`` is not modified. Returns the switchable model and its switch inputs.
    """
    work = ir.clone(model)
    node_of = {n.name: n for n in ir.iter_nodes(work.graph)}
    tensors = {t.name: t for g in ir.iter_graphs(work.graph) for t in list(g.inputs) + [o for n in g.nodes for o in n.outputs]}
    planned = {name: tensors[name] for name in sorted(plan.activations) if name in tensors}
    weighted = sorted({w.node for w in plan.weights})
    float_inputs = {name: list(node_of[name].inputs) for name in weighted}
    materialize(work, plan, ranges)
    switcher = _Switcher(work)
    acts = {name: switcher.switch_activation(t, name) for name, t in planned.items()}
    nodes = {name: switcher.switch_node(node_of[name], float_inputs[name]) for name in weighted}
    ir.normalize(work)
    return work, Switches(acts, nodes)


def dequantized(dq: Node) -> np.ndarray:
    """What a ``DequantizeLinear`` of constants computes: ``(x - zero_point) · scale`` in float32."""
    x = np.asarray(ir.const_value(dq.inputs[0]))
    scale = np.asarray(ir.const_value(dq.inputs[1]), np.float32)
    zp = np.asarray(ir.const_value(dq.inputs[2])) if len(dq.inputs) > 2 else np.zeros_like(scale, dtype=x.dtype)
    if scale.ndim == 1 and x.ndim > 1:  # per channel along ``axis`` (default 1)
        shape = [1] * x.ndim
        shape[int(dq.attrs.get("axis", 1)) % x.ndim] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((x.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * scale).astype(np.float32)


class _Switcher:
    """Puts the quantized values of a materialized model behind ``If`` switches."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.namer = ir.names(model)
        self.graph_of = ir.node_graph_index(model.graph)

    def _switch(self, label: str) -> Tensor:
        flag = ir.make_variable(self.namer.new(f"{SWITCH_PREFIX}/{label}"), dtype=np.bool_, shape=[])
        self.model.graph.inputs.append(flag)
        return flag

    def _branch(self, name: str, nodes: list[Node]) -> Graph:
        return ir.make_graph(nodes, [], [o for n in nodes[-1:] for o in n.outputs], name=self.namer.new(name))

    def _local(self, like: Tensor) -> Tensor:
        return ir.make_variable(self.namer.new(f"{like.name}/branch"), dtype=like.dtype, shape=like.shape)

    def _replace(self, old: Node, flag: Tensor, then: list[Node], other: list[Node]) -> None:
        """Put ``If(flag) then ... else ...`` producing ``old``'s outputs in ``old``'s place."""
        graph = self.graph_of.get(id(old), self.model.graph)
        outputs = list(old.outputs)
        ir.remove_nodes(graph, [old])
        attrs = {"then_branch": self._branch(f"{old.name}/quantized", then), "else_branch": self._branch(f"{old.name}/float", other)}
        graph.nodes.append(ir.make_node("If", [flag], outputs, name=self.namer.new(f"{old.name}/switch"), attrs=attrs))

    def switch_activation(self, t: Tensor, label: str) -> str:
        """Each ``DQ(Q(t))`` of ``t`` (one per graph that reads it) becomes ``If(switch) then DQ(Q(t)) else t``."""
        flag = self._switch(label)
        for q in [c for c in t.outputs if c.op == "QuantizeLinear"]:
            for dq in [c for c in q.outputs[0].outputs if c.op == "DequantizeLinear"]:
                q_local = self._local(q.outputs[0])
                then = [
                    ir.make_node("QuantizeLinear", list(q.inputs), [q_local], attrs=dict(q.attrs)),
                    ir.make_node("DequantizeLinear", [q_local, *dq.inputs[1:]], [self._local(dq.outputs[0])], attrs=dict(dq.attrs)),
                ]
                # A branch may not return an outer value directly (onnxruntime refuses it): copy it.
                other = [ir.make_node("Identity", [t], [self._local(dq.outputs[0])])]
                self._replace(dq, flag, then, other)
        return flag.name

    def switch_node(self, node: Node, float_inputs: list[Tensor]) -> str:
        """``node`` (its stored inputs now ``DQ(W_q)``) becomes ``If(switch) then node(DQ(W_q)) else node(W)``."""
        flag = self._switch(node.name)
        quantized, original = list(node.inputs), list(node.inputs)  # activation inputs: as switched, in both branches
        for i, t in enumerate(node.inputs):
            dq = ir.producer(t)
            if dq is not None and dq.op == "DequantizeLinear" and all(ir.is_constant(x) for x in dq.inputs):
                quantized[i] = ir.make_constant(self.namer.new(f"{t.name}/value"), dequantized(dq))
                original[i] = float_inputs[i]

        def twin(inputs: list[Tensor]) -> Node:
            return ir.make_node(node.op, inputs, [self._local(o) for o in node.outputs], attrs=dict(node.attrs), domain=node.domain)

        self._replace(node, flag, [twin(quantized)], [twin(original)])
        return flag.name
