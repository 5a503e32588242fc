"""Exposing intermediate tensors as model outputs for calibration, with an explicit name map.

Top-level tensors become graph outputs under their own names. A tensor inside an ``If`` branch is
routed out through the ``If`` node: the branch gets it as an extra output, the other branch a
dummy empty tensor (branch outputs must match in number and type, not shape), and the ``If`` node a
new output — recursively for nested ``If``s. Tensors inside ``Loop``/``Scan`` bodies cannot be
exposed per iteration this way and are reported as unreachable.

The model is modified on an in-memory copy; nothing is written to disk and no name is parsed: the
returned map says which output carries which tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..ir import Graph, Model, Node, Tensor

__all__ = ["ExposedModel", "expose_tensors", "float_activations"]

_FLOAT_KINDS = ("f",)


@dataclass
class ExposedModel:
    """A model copy whose outputs include the requested tensors."""

    model: Model
    #: output name → tensor name (in the original model)
    output_to_tensor: dict[str, str] = field(default_factory=dict)
    #: tensors that could not be exposed, with the reason
    unreachable: dict[str, str] = field(default_factory=dict)


def _is_float(t: Tensor) -> bool:
    if t.dtype is None:
        return False
    try:
        return np.dtype(t.dtype).kind in _FLOAT_KINDS
    except TypeError:
        return False


def float_activations(model: Model, *, include_subgraphs: bool = True) -> list[str]:
    """Names of float tensors computed at run time (graph inputs and node outputs), in graph order.

    Requires dtypes (run ``ir.infer_shapes`` first); tensors with unknown dtypes are skipped.
    """
    names: list[str] = [t.name for t in model.graph.inputs if not ir.is_constant(t) and _is_float(t)]
    graphs = list(ir.iter_graphs(model.graph)) if include_subgraphs else [model.graph]
    seen = set(names)
    for g in graphs:
        for node in g.nodes:
            for t in node.outputs:
                if t.name and t.name not in seen and _is_float(t):
                    seen.add(t.name)
                    names.append(t.name)
    return names


def _owners(graph: Graph) -> dict[int, tuple[Graph, Node | None, str]]:
    """Map id(subgraph) → (parent graph, owning node, attribute name); the root maps to (root, None, "")."""
    owners: dict[int, tuple[Graph, Node | None, str]] = {id(graph): (graph, None, "")}
    for g in ir.iter_graphs(graph):
        for node in g.nodes:
            for key, value in node.attrs.items():
                if hasattr(value, "nodes") and hasattr(value, "outputs"):
                    owners[id(value)] = (g, node, key)
    return owners


def _summary_of(graph: Graph, tensor: Tensor, namer: ir.NameGenerator) -> Tensor:
    """``[min(t), max(t), sum(t)]`` computed in the graph (a 3-element float tensor).

    Min-max calibration needs two numbers per tensor and sample, not the tensor: reducing inside
    onnxruntime avoids copying every activation out. onnxruntime's ReduceMin/ReduceMax do not
    reliably propagate NaN, but a sum does (NaN + x = NaN), so ``sum(t)`` is NaN when ``t`` holds a
    NaN (or both infinities, which min/max show anyway) — NaN detection survives the reduction.
    """
    base = tensor.name
    flat = ir.make_constant(namer.new(f"{base}/calib_flat"), np.array([-1], dtype=np.int64))
    parts = []
    for op in ("ReduceMin", "ReduceMax", "ReduceSum"):
        reduced = ir.make_variable(namer.new(f"{base}/calib_{op.lower()}"), dtype=tensor.dtype)
        graph.nodes.append(ir.make_node(op, [tensor], [reduced], name=namer.new(f"{base}/calib_{op}"), attrs={"keepdims": 1}))
        part = ir.make_variable(namer.new(f"{base}/calib_{op.lower()}_flat"), dtype=tensor.dtype)
        graph.nodes.append(ir.make_node("Reshape", [reduced, flat], [part], name=namer.new(f"{base}/calib_reshape")))
        parts.append(part)
    out = ir.make_variable(namer.new(f"{base}/calib_summary"), dtype=tensor.dtype, shape=[3])
    graph.nodes.append(ir.make_node("Concat", parts, [out], name=namer.new(f"{base}/calib_summary"), attrs={"axis": 0}))
    return out


def expose_tensors(model: Model, names: list[str], *, summarize: bool = False) -> ExposedModel:
    """A copy of ``model`` with ``names`` added as outputs (see module docstring).

    With ``summarize`` each tensor is exposed as ``[min, max, nan-or-inf marker]`` computed in the
    graph (see :func:`_summary_of`) instead of the full tensor.
    """
    copy = ir.clone(model)
    namer = ir.names(copy)
    root = copy.graph
    owners = _owners(root)
    where: dict[str, tuple[Graph, Tensor]] = {}
    for g in ir.iter_graphs(root):
        for t in g.inputs:
            where.setdefault(t.name, (g, t))
        for node in g.nodes:
            for t in node.outputs:
                if t.name:
                    where.setdefault(t.name, (g, t))
    result = ExposedModel(copy)
    existing = {t.name for t in root.outputs}
    for name in names:
        if name not in where:
            result.unreachable[name] = "no such tensor"
            continue
        graph, tensor = where[name]
        if summarize:
            tensor = _summary_of(graph, tensor, namer)
        route = _route_out(graph, tensor, owners, namer)
        if isinstance(route, str):
            result.unreachable[name] = route
            continue
        if route.name not in existing:
            root.outputs.append(route)
            existing.add(route.name)
        result.output_to_tensor[route.name] = name
    return result


def _route_out(graph: Graph, tensor: Tensor, owners: dict[int, tuple[Graph, Node | None, str]], namer: ir.NameGenerator) -> Tensor | str:
    """Return the top-level tensor carrying ``tensor`` (adding If outputs on the way) or a reason."""
    parent, node, key = owners[id(graph)]
    if node is None:
        return tensor
    if node.op != "If":
        return f"inside a {node.op} body (per-iteration values cannot be exposed)"
    if any(out is tensor for out in graph.outputs):
        # Already a branch output: its If output also carries the other branch's value, so route
        # a copy (an output name may appear only once per graph).
        copy = ir.make_variable(namer.new(f"{tensor.name}/calib_copy"), dtype=tensor.dtype, shape=tensor.shape)
        graph.nodes.append(ir.make_node("Identity", [tensor], [copy], name=namer.new(f"{tensor.name}/calib_copy")))
        tensor = copy
    other_key = "else_branch" if key == "then_branch" else "then_branch"
    other = node.attrs[other_key]
    graph.outputs.append(tensor)
    dummy = ir.make_variable(namer.new(f"{tensor.name}/calib_dummy"), dtype=tensor.dtype, shape=None)
    empty = ir.make_constant(namer.new(f"{tensor.name}/calib_empty"), np.zeros((0,), dtype=np.dtype(tensor.dtype or np.float32)))
    other.nodes.append(ir.make_node("Identity", [empty], [dummy], name=namer.new(f"{tensor.name}/calib_dummy")))
    other.outputs.append(dummy)
    out = ir.make_variable(namer.new(f"{tensor.name}/calib_out"), dtype=tensor.dtype, shape=None)
    node.outputs.append(out)
    return _route_out(parent, out, owners, namer)
