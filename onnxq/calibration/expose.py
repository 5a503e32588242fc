"""Exposing intermediate tensors as model outputs for calibration, with an explicit name map.

onnxruntime only returns graph outputs, and a tensor computed inside a subgraph (an ``If`` branch,
a ``Loop``/``Scan`` body) cannot be named as one. So each such tensor is *routed out* through its
enclosing control-flow nodes, innermost first, on an in-memory copy of the model:

- **If**: the branch gets the tensor as an extra output, the other branch a placeholder of the
  same element type, and the ``If`` node a new output. Branch outputs must agree in number and type
  (not shape), so the placeholder is an empty ``[0]`` tensor for full values, and for in-graph
  summaries (``[min, max, sum]``) the neutral summary ``[+inf, -inf, 0]``. Either way the observer
  sees only the branch that ran: empty tensors and neutral summaries are skipped, never observed.
- **Loop / Scan**: the tensor becomes an extra *scan output* of the body (appended after the
  existing ones; a Scan's ``scan_output_axes`` / ``scan_output_directions`` grow with it), so
  onnxruntime stacks its value of every iteration along a new leading axis. ``output_depth`` says
  how many such iteration axes an exposed output carries; the feeds (:mod:`._strategies`) merge
  every iteration into one observation (min/max/histogram over all of them).
- **Nested control flow** repeats this at each level: a tensor of a Loop body inside an If branch
  is stacked by the Loop, then routed through the If.

A tensor that is already an output (or an input) of its body is copied by an Identity first: a
name is an output at most once per graph. What cannot be exposed is reported in ``unreachable``
with the reason: bodies of other ops (SequenceMap, contrib ops), and full values of a tensor in an
``If`` inside a ``Loop``/``Scan`` body, whose empty placeholder could not be stacked with the real
value of other iterations (summaries can: the neutral summary has the real one's shape). Stacking
also needs a body tensor to keep its shape across iterations, which onnxruntime enforces for scan
outputs.

Nothing is written to disk and no name is parsed: ``output_to_tensor`` says which output carries
which tensor, ``output_depth`` how many iteration axes lead it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..ir import Graph, Model, Node, Tensor

__all__ = ["ExposedModel", "expose_tensors", "float_activations"]

_FLOAT_KINDS = ("f",)
#: Bodies whose per-iteration values are stacked as extra scan outputs.
_LOOPS = ("Loop", "Scan")
#: ``[min, max, sum]`` of a branch that did not run: the identity of the min/max/sum merge.
NEUTRAL_SUMMARY = np.array([np.inf, -np.inf, 0.0])

#: Map id(subgraph) → (parent graph, owning node, attribute name); the root maps to (root, None, "").
Owners = dict[int, tuple[Graph, "Node | None", str]]


@dataclass
class ExposedModel:
    """A model copy whose outputs include the requested tensors."""

    model: Model
    #: output name → tensor name (in the original model)
    output_to_tensor: dict[str, str] = field(default_factory=dict)
    #: output name → number of leading iteration axes (Loop/Scan bodies it was stacked through)
    output_depth: dict[str, int] = field(default_factory=dict)
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
    """Names of float tensors computed at run time, in graph order.

    Graph inputs and node outputs; with ``include_subgraphs`` also those of every body, whose
    inputs (a Loop's carried state, a Scan's time step) take one value per iteration. Requires
    dtypes (run ``ir.infer_shapes`` first); tensors with unknown dtypes are skipped.
    """
    graphs = list(ir.iter_graphs(model.graph)) if include_subgraphs else [model.graph]
    names: list[str] = []
    seen: set[str] = set()
    for g in graphs:
        for t in [*g.inputs, *(o for node in g.nodes for o in node.outputs)]:
            if t.name and t.name not in seen and not ir.is_constant(t) and _is_float(t):
                seen.add(t.name)
                names.append(t.name)
    return names


def _owners(graph: Graph) -> Owners:
    """Where each subgraph hangs: its parent graph, the node holding it and the attribute name."""
    owners: Owners = {id(graph): (graph, None, "")}
    for g in ir.iter_graphs(graph):
        for node in g.nodes:
            for key, value in node.attrs.items():
                if isinstance(value, Graph):
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


def expose_tensors(model: Model, names: list[str], *, summarize: bool = False, loops: bool = False) -> ExposedModel:
    """A copy of ``model`` with ``names`` added as outputs (see module docstring).

    Args:
        model: the model (not modified).
        names: tensors to expose (unique names across all scopes, as ONNX requires).
        summarize: expose each tensor as ``[min, max, sum]`` computed in the graph (see
            :func:`_summary_of`) instead of the full tensor.
        loops: route tensors of ``Loop``/``Scan`` bodies out as stacked scan outputs (see
            ``output_depth``); otherwise they are unreachable (callers that read shapes off the
            outputs, not values, would see the iteration axes).
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
        problem = _route_problem(graph, owners, summarize=summarize, loops=loops)
        if problem is not None:
            result.unreachable[name] = problem
            continue
        if summarize:
            tensor = _summary_of(graph, tensor, namer)
        route, depth = _route_out(graph, tensor, owners, namer, summarize)
        if route.name not in existing:
            root.outputs.append(route)
            existing.add(route.name)
        result.output_to_tensor[route.name] = name
        result.output_depth[route.name] = depth
    return result


def _route_problem(graph: Graph, owners: Owners, *, summarize: bool, loops: bool) -> str | None:
    """Why a tensor of ``graph`` cannot be routed out (None when it can), checked before any edit."""
    in_if = False
    while True:
        graph, node, _ = owners[id(graph)]
        if node is None:
            return None
        if node.op == "If" and not node.domain:
            in_if = True
        elif node.op in _LOOPS and not node.domain:
            if not loops:
                return f"inside a {node.op} body (per-iteration values are not exposed here)"
            if in_if and not summarize:
                return (
                    f"inside an If within a {node.op} body: an untaken branch's empty placeholder cannot be stacked "
                    "with other iterations' values (in-graph summaries can: use method minmax or moving-average)"
                )
        else:
            return f"inside a {node.domain + '.' if node.domain else ''}{node.op} body (only If, Loop and Scan bodies are routed out)"


def _local_copy(graph: Graph, tensor: Tensor, namer: ir.NameGenerator) -> Tensor:
    """``tensor`` itself, or an Identity copy when it already is an input or output of ``graph``."""
    if not (ir.is_graph_output(graph, tensor) or ir.is_graph_input(graph, tensor)):
        return tensor
    copy = ir.make_variable(namer.new(f"{tensor.name}/calib_copy"), dtype=tensor.dtype, shape=tensor.shape)
    graph.nodes.append(ir.make_node("Identity", [tensor], [copy], name=namer.new(f"{tensor.name}/calib_copy")))
    return copy


def _route_out(graph: Graph, tensor: Tensor, owners: Owners, namer: ir.NameGenerator, summarize: bool) -> tuple[Tensor, int]:
    """The top-level tensor carrying ``tensor`` and its number of iteration axes (edits on the way)."""
    depth = 0
    while True:
        parent, node, key = owners[id(graph)]
        if node is None:
            return tensor, depth
        tensor = _local_copy(graph, tensor, namer)
        graph.outputs.append(tensor)
        if node.op == "If":
            other = node.attrs["else_branch" if key == "then_branch" else "then_branch"]
            _add_placeholder(other, tensor, namer, summarize)
        else:
            depth += 1
            if node.op == "Scan":
                for attr in ("scan_output_axes", "scan_output_directions"):
                    if attr in node.attrs:
                        node.attrs[attr] = [*node.attrs[attr], 0]
        out = ir.make_variable(namer.new(f"{tensor.name}/calib_out"), dtype=tensor.dtype, shape=None)
        node.outputs.append(out)
        graph, tensor = parent, out


def _add_placeholder(branch: Graph, like: Tensor, namer: ir.NameGenerator, summarize: bool) -> None:
    """Give ``branch`` an output standing for ``like`` when the other branch runs (see module docstring)."""
    dtype = np.dtype(like.dtype or np.float32)
    value = NEUTRAL_SUMMARY.astype(dtype) if summarize else np.zeros((0,), dtype=dtype)
    const = ir.make_constant(namer.new(f"{like.name}/calib_placeholder_value"), value)
    out = ir.make_variable(namer.new(f"{like.name}/calib_placeholder"), dtype=like.dtype, shape=list(value.shape))
    branch.nodes.append(ir.make_node("Identity", [const], [out], name=namer.new(f"{like.name}/calib_placeholder")))
    branch.outputs.append(out)
