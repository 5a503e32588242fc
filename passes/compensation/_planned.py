"""The plan's quantized Conv/Gemm/MatMul layers, and biases given to layers that had none.

``adaround`` and ``correct-bias`` work on the same set: every layer of the main graph whose weight
(input 1) the plan stores quantized. A bias either pass adds to a Conv or Gemm must be quantized
like one annotate would have planned: int32, zero point 0, ``s_b = s_x · s_w`` (per channel when
the weight is), which needs the layer's input to have a planned scale.
"""

from __future__ import annotations

from onnxq import ir
from onnxq.ir import Model
from onnxq.plan import QuantPlan, WeightQuant

from ._layers import LINEAR_OPS, Linear, linear_of

__all__ = ["planned_layers", "bias_problem", "plan_new_bias"]


def planned_layers(model: Model, plan: QuantPlan) -> tuple[list[tuple[Linear, WeightQuant]], dict[str, tuple[str, str]]]:
    """The quantized Conv/Gemm/MatMul layers of the main graph with their weight's plan entry, in graph
    order, and ``{node: (op, reason)}`` for planned ones that cannot be handled."""
    entries = {wq.node: wq for wq in plan.weights if wq.kind == "weight" and wq.index == 1}
    found: list[tuple[Linear, WeightQuant]] = []
    refused: dict[str, tuple[str, str]] = {}
    for node in list(model.graph.nodes):
        wq = entries.get(node.name)
        if wq is None or node.op not in LINEAR_OPS:
            continue
        layer = linear_of(model.graph, node)
        if isinstance(layer, str):
            refused[node.name] = (node.op, layer)
        else:
            found.append((layer, wq))
    for g in ir.iter_graphs(model.graph):
        if g is not model.graph:
            refused.update({n.name: (n.op, "inside a control-flow body") for n in g.nodes if n.name in entries and n.op in LINEAR_OPS})
    return found, refused


def bias_problem(layer: Linear, plan: QuantPlan) -> str | None:
    """Why ``layer``'s bias cannot be changed (None: it can, adding one if needed)."""
    why = layer.can_hold_bias()
    if why or layer.bias is not None or layer.op == "MatMul":
        return why
    x = layer.node.inputs[0].name
    return None if x in plan.activations else f"input '{x}' has no planned scale for a new int32 bias"


def plan_new_bias(plan: QuantPlan, layer: Linear, wq: WeightQuant) -> None:
    """Give a Conv/Gemm bias just added by :meth:`Linear.commit` its int32 plan entry (as annotate does)."""
    if layer.op == "MatMul" or any(w.node == layer.node.name and w.kind == "bias" for w in plan.weights):
        return
    bias = layer.node.inputs[2]
    axis = 0 if wq.axis is not None else None
    plan.weights.append(WeightQuant(layer.node.name, 2, bias.name, "bias", "int32", True, axis, derived_from=(layer.node.inputs[0].name, 1)))
