"""The one module that imports onnx-graphsurgeon.

Everything else in onnxq speaks the small vocabulary re-exported here (``Node``, ``Tensor``,
``Variable``, ``Constant``, ``Graph`` and the constructors), so a later move to another IR touches
one package. Export is our own: graph-surgeon's exporter cannot write sub-byte types (int4/uint4),
duplicates outer-scope constants into subgraphs and always writes intermediate ``value_info``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues
from onnx_graphsurgeon.logger import G_LOGGER

from ._external import Region, note_read

__all__ = [
    "Graph",
    "Node",
    "Tensor",
    "Variable",
    "Constant",
    "import_graph",
    "export_graph",
    "LazyValues",
    "SharedLazyValues",
    "TensorWriter",
    "iter_constants",
    "make_constant",
    "make_variable",
    "make_node",
    "make_graph",
    "is_constant",
    "is_variable",
    "is_lazy",
    "const_value",
    "tensor_proto_of",
]

# graph-surgeon logs INFO/WARNING lines on the root of its own logger for routine events.
G_LOGGER.severity = G_LOGGER.ERROR

Graph = gs.Graph
Node = gs.Node
Tensor = gs.Tensor
Variable = gs.Variable
Constant = gs.Constant


#: Exports one initializer (e.g. into a data file); returns None to have it written inline.
TensorWriter = Callable[[gs.Constant], "onnx.TensorProto | None"]


class SharedLazyValues(LazyValues):
    """Values read on first use — once for every constant holding them.

    graph-surgeon's ``LazyValues`` loads a fresh array for each constant that reads it, so a cloned
    model (clones share their constants' values) would read and hold every weight twice. The
    values come from the tensor proto, or for a sub-byte type stored externally (int4, ...: no
    byte-per-value view exists) from ``region`` of its data file.
    """

    def __init__(self, tensor: onnx.TensorProto, region: Region | None = None) -> None:
        super().__init__(tensor)
        self.region = region
        self._array: np.ndarray | None = None

    def inline_proto(self) -> onnx.TensorProto:
        """A copy of the tensor proto with its data inline."""
        proto = onnx.TensorProto()
        proto.CopyFrom(self.tensor)
        if self.region is not None:
            del proto.external_data[:]
            proto.data_location = onnx.TensorProto.DEFAULT
            proto.raw_data = self.region.read()
        return proto

    def load(self) -> np.ndarray:
        """The array, read-only: every constant sharing it sees the same values (passes replace
        values, they never edit them in place)."""
        if self._array is None:
            self._array = np.array(numpy_helper.to_array(self.inline_proto()))
            self._array.setflags(write=False)
        return self._array


def import_graph(proto: onnx.ModelProto) -> gs.Graph:
    """Import a ModelProto's graph (functions must already be detached).

    Initializers stay lazy (:class:`SharedLazyValues`); external ones are bound by the caller.
    """
    graph = gs.import_onnx(proto)
    for constant in iter_constants(graph):
        if type(constant._values) is LazyValues:
            constant._values = SharedLazyValues(constant._values.tensor)
    return graph


def iter_constants(graph: gs.Graph) -> Iterable[gs.Constant]:
    """Every constant of ``graph`` and its subgraphs, node-attribute tensors included (each once)."""
    seen: set[int] = set()
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.nodes:
            for t in node.inputs:
                if isinstance(t, gs.Constant) and id(t) not in seen:
                    seen.add(id(t))
                    yield t
            for value in node.attrs.values():
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if isinstance(v, gs.Graph):
                        stack.append(v)
                    elif isinstance(v, gs.Constant) and id(v) not in seen:
                        seen.add(id(v))
                        yield v
        for t in list(g.inputs) + list(g.outputs):
            if isinstance(t, gs.Constant) and id(t) not in seen:
                seen.add(id(t))
                yield t


def is_constant(tensor: Any) -> bool:
    """True for initializers / constant tensors (values known at build time)."""
    return isinstance(tensor, gs.Constant)


def is_variable(tensor: Any) -> bool:
    """True for tensors computed at run time (graph inputs and node outputs)."""
    return isinstance(tensor, gs.Variable)


def is_lazy(tensor: gs.Constant) -> bool:
    """True when a constant's values have not been read from the proto yet."""
    return isinstance(tensor._values, LazyValues)


def const_value(tensor: gs.Constant) -> np.ndarray:
    """The numpy value of a constant (loads lazily stored values; see :func:`._external.note_read`)."""
    values = tensor.values
    note_read(values)
    return values


def make_constant(name: str, values: np.ndarray) -> gs.Constant:
    """A new constant tensor (an initializer once used by a node)."""
    return gs.Constant(name, np.asarray(values))


def make_variable(name: str, dtype: Any = None, shape: Sequence[int | str | None] | None = None) -> gs.Variable:
    """A new run-time tensor. ``dtype`` is a numpy dtype (or ONNX enum for exotic types)."""
    return gs.Variable(name, dtype=dtype, shape=list(shape) if shape is not None else None)


def make_node(
    op: str,
    inputs: Sequence[gs.Tensor],
    outputs: Sequence[gs.Tensor],
    *,
    name: str = "",
    attrs: dict[str, Any] | None = None,
    domain: str | None = None,
) -> gs.Node:
    """A new node wired to ``inputs`` / ``outputs`` (not yet inserted in a graph's node list)."""
    return gs.Node(op=op, name=name, attrs=dict(attrs or {}), inputs=list(inputs), outputs=list(outputs), domain=domain or None)


def make_graph(
    nodes: Sequence[gs.Node], inputs: Sequence[gs.Tensor], outputs: Sequence[gs.Tensor], *, name: str = "graph", opset: int | None = None
) -> gs.Graph:
    """A new graph (used for subgraphs and small helper models)."""
    return gs.Graph(nodes=list(nodes), inputs=list(inputs), outputs=list(outputs), name=name, opset=opset)


def tensor_proto_of(tensor: gs.Constant) -> onnx.TensorProto:
    """Serialize a constant, including sub-byte (int4/uint4) and bfloat16/float8 types."""
    if isinstance(tensor._values, SharedLazyValues):
        proto = tensor._values.inline_proto()
        proto.name = tensor.name
        return proto
    if isinstance(tensor._values, LazyValues):
        proto = onnx.TensorProto()
        proto.CopyFrom(tensor._values.tensor)
        proto.name = tensor.name
        return proto
    values = np.asarray(tensor._values)
    if not values.flags.c_contiguous:
        values = values.copy(order="C")  # not np.ascontiguousarray: it turns 0-d scalars into 1-d
    return numpy_helper.from_array(values, tensor.name)


def _value_info(tensor: gs.Tensor) -> onnx.ValueInfoProto:
    if tensor.dtype is None:
        return onnx.helper.make_empty_tensor_value_info(tensor.name)
    dtype = tensor.dtype if isinstance(tensor.dtype, int) else onnx.helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype))
    kind = getattr(tensor, "type", "tensor_type")
    if kind == "sequence_type":
        return onnx.helper.make_tensor_sequence_value_info(tensor.name, dtype, tensor.shape)
    return onnx.helper.make_tensor_value_info(tensor.name, dtype, tensor.shape)


def _export_attr(key: str, value: Any, visible: set[str], value_info: bool, writer: TensorWriter | None) -> onnx.AttributeProto:
    if isinstance(value, gs.Constant):
        return onnx.helper.make_attribute(key, tensor_proto_of(value))
    if isinstance(value, gs.Graph):
        return onnx.helper.make_attribute(key, export_graph(value, value_info=value_info, outer=visible, tensor_writer=writer))
    if isinstance(value, gs.Node.AttributeRef):
        attr = onnx.AttributeProto()
        attr.name = key
        attr.ref_attr_name = value.name
        return attr
    if isinstance(value, type) or isinstance(value, np.dtype):
        value = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(value))
    if isinstance(value, list) and value and isinstance(value[0], gs.Graph):
        return onnx.helper.make_attribute(key, [export_graph(g, value_info=value_info, outer=visible, tensor_writer=writer) for g in value])
    return onnx.helper.make_attribute(key, value)


def _graph_tensors(graph: gs.Graph) -> dict[str, gs.Tensor]:
    """Tensors referenced by the graph's I/O and nodes, in node order (first occurrence wins)."""
    tensors: dict[str, gs.Tensor] = {}
    for t in graph.inputs:
        tensors.setdefault(t.name, t)
    for node in graph.nodes:
        for t in node.inputs:
            if t.name:
                tensors.setdefault(t.name, t)
        for t in node.outputs:
            if t.name:
                tensors.setdefault(t.name, t)
    for t in graph.outputs:
        tensors.setdefault(t.name, t)
    return tensors


def export_graph(graph: gs.Graph, *, value_info: bool = False, outer: Iterable[str] = (), tensor_writer: TensorWriter | None = None) -> onnx.GraphProto:
    """Export a graph-surgeon graph to a GraphProto.

    Args:
        graph: the graph.
        value_info: also write intermediate tensors' known types/shapes.
        outer: names visible from enclosing graphs; constants with those names belong to the
            enclosing graph and are not duplicated as this subgraph's initializers.
        tensor_writer: exports initializers itself (streaming large ones to a data file, so no
            proto ever holds them); initializers it returns None for are written inline.
    """
    outer = set(outer)
    tensors = _graph_tensors(graph)
    visible = outer | set(tensors)
    nodes = []
    for node in graph.nodes:
        proto = onnx.helper.make_node(
            node.op,
            [t.name for t in node.inputs],
            [t.name for t in node.outputs],
            name=node.name or None,
            domain=node.domain or None,
        )
        proto.attribute.extend(_export_attr(k, v, visible, value_info, tensor_writer) for k, v in node.attrs.items())
        nodes.append(proto)
    initializers = []
    sparse = []
    for name, t in tensors.items():
        if not isinstance(t, gs.Constant) or name in outer:
            continue
        if isinstance(t._values, SparseValues):
            sparse.append(t._values.tensor)
            continue
        written = tensor_writer(t) if tensor_writer is not None else None
        initializers.append(written if written is not None else tensor_proto_of(t))
    io_names = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    infos = []
    if value_info:
        infos = [
            _value_info(t)
            for name, t in tensors.items()
            if name not in io_names and name not in outer and isinstance(t, gs.Variable) and (t.dtype is not None or t.shape is not None)
        ]
    return onnx.helper.make_graph(
        nodes,
        graph.name or "graph",
        [_value_info(t) for t in graph.inputs],
        [_value_info(t) for t in graph.outputs],
        initializer=initializers,
        sparse_initializer=sparse,
        value_info=infos,
        doc_string=graph.doc_string or None,
    )


def freeze(tensor: gs.Variable, values: np.ndarray) -> gs.Constant:
    """Turn a computed tensor into a constant in place (every reader keeps its reference).

    The producing node loses this output; the caller removes the node if it has no other output.
    """
    for node in list(tensor.inputs):
        node.outputs = [t for t in node.outputs if t is not tensor]
    tensor.inputs.clear()
    tensor.to_constant(np.asarray(values))
    return tensor


def constant_array(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of a constant tensor, or None for run-time tensors and missing optionals."""
    if tensor is None or not isinstance(tensor, gs.Constant):
        return None
    return np.asarray(const_value(tensor))
