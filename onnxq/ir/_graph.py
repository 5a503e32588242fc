"""Graph queries and edits that passes share.

All functions here are linear in the graph size (graph-surgeon keeps producer/consumer edges on
every tensor), so passes built from them stay linear on 10k-node models. ``toposort`` and
``remove_dead_nodes`` are our own iterative versions: graph-surgeon's recursive toposort overflows
Python's stack on deep graphs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import onnx

from ..errors import InvalidModelError
from ._gs import Graph, Node, Tensor, Variable, is_constant, make_node, make_variable
from ._model import Model

__all__ = [
    "iter_graphs",
    "iter_nodes",
    "producer",
    "consumers",
    "is_graph_output",
    "only_consumer",
    "is_graph_input",
    "replace_all_uses",
    "remove_nodes",
    "remove_dead_nodes",
    "toposort",
    "normalize",
    "NameGenerator",
    "names",
    "node_graph_index",
    "subgraphs_of",
    "onnx_dtype",
    "np_dtype",
    "attr",
    "foreign_inputs",
]


#: Default-domain ops that can hold graph attributes; other standard ops never do.
_CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})


def subgraphs_of(node: Node) -> list[Graph]:
    """Subgraphs held in a node's attributes (If branches, Loop/Scan bodies)."""
    if not node.domain and node.op not in _CONTROL_FLOW:
        return []
    found: list[Graph] = []
    for value in node.attrs.values():
        if isinstance(value, Graph):
            found.append(value)
        elif isinstance(value, list):
            found.extend(v for v in value if isinstance(v, Graph))
    return found


def iter_graphs(graph: Graph) -> Iterator[Graph]:
    """The graph and all nested subgraphs, outermost first."""
    stack = [graph]
    while stack:
        g = stack.pop()
        yield g
        for node in reversed(g.nodes):
            stack.extend(reversed(subgraphs_of(node)))


def iter_nodes(graph: Graph) -> Iterator[Node]:
    """All nodes of the graph and of its subgraphs."""
    for g in iter_graphs(graph):
        yield from g.nodes


def producer(tensor: Tensor) -> Node | None:
    """The node computing ``tensor`` (None for graph inputs and constants)."""
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: Tensor) -> list[Node]:
    """Nodes reading ``tensor`` (including nodes inside subgraphs)."""
    return list(tensor.outputs)


def only_consumer(graph: Graph, tensor: Tensor) -> Node | None:
    """The single node reading ``tensor`` when it has exactly one reader and is not a graph output.

    Fusions use it: a producer may only be rewritten when nobody else sees its output.
    """
    if len(tensor.outputs) != 1 or is_graph_output(graph, tensor):
        return None
    return tensor.outputs[0]


def is_graph_output(graph: Graph, tensor: Tensor) -> bool:
    """True when ``tensor`` is one of ``graph``'s outputs."""
    return any(t is tensor for t in graph.outputs)


def is_graph_input(graph: Graph, tensor: Tensor) -> bool:
    """True when ``tensor`` is one of ``graph``'s inputs."""
    return any(t is tensor for t in graph.inputs)


def replace_all_uses(graph: Graph, old: Tensor, new: Tensor) -> None:
    """Make every reader of ``old`` read ``new`` instead, keeping graph-output names stable.

    When ``old`` is a graph output, the output must keep its name (users bind outputs by name).
    If ``new`` is an ordinary intermediate tensor computed *in this graph* it takes over ``old``'s
    name and place in the output list; otherwise (a graph input, a constant, already an output, or
    a value of an enclosing scope read by a subgraph) an Identity node copies ``new`` into a fresh
    tensor carrying ``old``'s name. Subgraph outputs must be local: onnxruntime refuses a body that
    returns an outer-scope value directly ("Subgraph output ... is an outer scope value being
    returned directly"), and renaming an outer tensor would also rename it for its other readers.
    """
    if old is new:
        return
    for node in list(old.outputs):
        for i, t in enumerate(node.inputs):
            if t is old:
                node.inputs[i] = new
    if not is_graph_output(graph, old):
        return
    idx = [i for i, t in enumerate(graph.outputs) if t is old]
    name, dtype, shape = old.name, old.dtype, old.shape
    new_is_plain = (
        isinstance(new, Variable)
        and bool(new.inputs)
        and any(n is new.inputs[0] for n in graph.nodes)
        and not is_graph_output(graph, new)
        and not is_graph_input(graph, new)
    )
    if new_is_plain:
        old.name = name + "__replaced"
        new.name = name
        if new.dtype is None:
            new.dtype = dtype
        if new.shape is None:
            new.shape = shape
        target = new
    else:
        old.name = name + "__replaced"
        target = make_variable(name, dtype=dtype or new.dtype, shape=shape)
        graph.nodes.append(make_node("Identity", [new], [target], name=f"{name}/identity"))
    for i in idx:
        graph.outputs[i] = target


def _detach(node: Node) -> None:
    for sub in subgraphs_of(node):
        for inner in sub.nodes:
            _detach(inner)
    # Unlink by identity. graphsurgeon's ``clear()`` removes the node from each tensor's readers /
    # producers with ``list.remove``, i.e. by ``==``, and ``Node.__eq__`` compares name, op,
    # attributes and tensors: two unnamed nodes reading the same tensors, outputs already cleared
    # (an outer weight's MatMul in both If branches, rewritten), are "equal", so it unlinked the
    # other one and then failed on this one ("list.remove(x): x not in list").
    for tensors, back in ((node.inputs, "outputs"), (node.outputs, "inputs")):
        for t in tensors:
            links = getattr(t, back)
            at = next((i for i, n in enumerate(links) if n is node), None)
            if at is not None:
                list.pop(links, at)
        list.clear(tensors)


def remove_nodes(graph: Graph, nodes: Iterable[Node]) -> int:
    """Disconnect and remove ``nodes`` from ``graph`` (one list rebuild, not one per node)."""
    doomed = {id(n) for n in nodes}
    if not doomed:
        return 0
    for node in graph.nodes:
        if id(node) in doomed:
            _detach(node)
    before = len(graph.nodes)
    graph.nodes = [n for n in graph.nodes if id(n) not in doomed]
    return before - len(graph.nodes)


def remove_dead_nodes(graph: Graph) -> int:
    """Remove nodes none of whose outputs are read (recursively, in subgraphs too).

    A body output counts as read (the holder node returns it). Graphs are visited innermost first
    and each only removes its own nodes: a dead body node may leave an outer producer without
    readers, and that producer is removed when its own graph's turn comes (removing it from the
    body's walk would detach it yet leave it in its graph's node list).

    Returns the number of nodes removed.
    """
    return sum(_remove_dead_in(sub) for sub in reversed(list(iter_graphs(graph))))


def _remove_dead_in(graph: Graph) -> int:
    outputs = {id(t) for t in graph.outputs}
    local = {id(n) for n in graph.nodes}
    dead: set[int] = set()
    work = list(graph.nodes)
    while work:
        node = work.pop()
        if id(node) in dead or any(t.outputs or id(t) in outputs for t in node.outputs):
            continue
        dead.add(id(node))
        upstream = [t.inputs[0] for t in node.inputs if t.inputs]
        for inner in subgraphs_of(node):
            upstream.extend(foreign_producers(inner))
        _detach(node)
        work.extend(n for n in upstream if id(n) in local)
    if not dead:
        return 0
    graph.nodes = [n for n in graph.nodes if id(n) not in dead]
    return len(dead)


def foreign_inputs(graph: Graph) -> list[Tensor]:
    """Tensors a (sub)graph reads from enclosing scopes (not produced or declared inside it)."""
    local: set[int] = {id(t) for t in graph.inputs}
    found: dict[int, Tensor] = {}
    for g in iter_graphs(graph):
        local.update(id(t) for t in g.inputs)
        for node in g.nodes:
            local.update(id(t) for t in node.outputs)
    for g in iter_graphs(graph):
        for node in g.nodes:
            for t in node.inputs:
                if id(t) not in local and not is_constant(t) and t.name:
                    found.setdefault(id(t), t)
        for t in g.outputs:
            if id(t) not in local and not is_constant(t):
                found.setdefault(id(t), t)
    return list(found.values())


def foreign_producers(graph: Graph) -> list[Node]:
    """Producers (in enclosing graphs) of the tensors a subgraph reads from outside."""
    return [t.inputs[0] for t in foreign_inputs(graph) if t.inputs]


def toposort(graph: Graph) -> None:
    """Sort nodes topologically in place (Kahn's algorithm, stable w.r.t. the current order).

    Raises:
        InvalidModelError: the graph has a cycle.
    """
    for sub in list(iter_graphs(graph)):
        _toposort_one(sub)


def _toposort_one(graph: Graph) -> None:
    nodes = graph.nodes
    index = {id(n): i for i, n in enumerate(nodes)}
    deps: list[set[int]] = [set() for _ in nodes]
    for i, node in enumerate(nodes):
        tensors = list(node.inputs)
        for sub in subgraphs_of(node):
            tensors.extend(foreign_inputs(sub))
        for t in tensors:
            for p in t.inputs:
                j = index.get(id(p))
                if j is not None and j != i:
                    deps[i].add(j)
    users: list[list[int]] = [[] for _ in nodes]
    missing = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            missing[u] -= 1
            if missing[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op for i, m in enumerate(missing) if m > 0][:5]
        raise InvalidModelError(f"graph '{graph.name}' has a cycle through nodes {stuck}")
    graph.nodes = [nodes[i] for i in order]


def normalize(model: Model) -> Model:
    """Remove dead nodes, then restore topological order; graph inputs/outputs are kept.

    Unused initializers vanish on their own: only constants read by a node are exported.
    """
    remove_dead_nodes(model.graph)
    toposort(model.graph)
    return model


class NameGenerator:
    """Unique, deterministic names for new nodes and tensors.

    Collects every node and tensor name in the model once; ``new("conv1/quant")`` returns the name
    itself when free, else ``conv1/quant_1``, ``conv1/quant_2``...
    """

    def __init__(self, graph: Graph) -> None:
        self._used: set[str] = set()
        for g in iter_graphs(graph):
            self._used.update(t.name for t in g.inputs)
            self._used.update(t.name for t in g.outputs)
            for node in g.nodes:
                if node.name:
                    self._used.add(node.name)
                self._used.update(t.name for t in node.inputs if t.name)
                self._used.update(t.name for t in node.outputs if t.name)
        self._next: dict[str, int] = {}

    def new(self, base: str) -> str:
        """Return an unused name derived from ``base`` and reserve it."""
        base = base or "t"
        if base not in self._used:
            self._used.add(base)
            return base
        k = self._next.get(base, 1)
        while f"{base}_{k}" in self._used:
            k += 1
        self._next[base] = k + 1
        name = f"{base}_{k}"
        self._used.add(name)
        return name

    def reserve(self, name: str) -> None:
        """Mark ``name`` as taken."""
        self._used.add(name)


def names(model: Model) -> NameGenerator:
    """A fresh :class:`NameGenerator` for ``model``."""
    return NameGenerator(model.graph)


def node_graph_index(graph: Graph) -> dict[int, Graph]:
    """Map ``id(node)`` to the (sub)graph holding it."""
    return {id(n): g for g in iter_graphs(graph) for n in g.nodes}


def onnx_dtype(dtype: Any) -> int:
    """ONNX TensorProto enum for a numpy dtype (or pass an enum through)."""
    if isinstance(dtype, int):
        return dtype
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def np_dtype(onnx_type: int) -> np.dtype:
    """numpy dtype for an ONNX TensorProto enum."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))


def attr(node: Node, name: str, default: Any = None) -> Any:
    """A node attribute with a default (graph-surgeon stores attributes as python values)."""
    return node.attrs.get(name, default)
