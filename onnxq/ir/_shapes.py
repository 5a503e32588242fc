"""Shape inference: onnx's inference run on an exported copy, its results written back to the graph.

A model whose weights are costly to copy is exported without them (``to_proto(weights=False)``: initializers keep their
type and dims, which is all inference reads; shape-valued constants are small and stay inline), so
inference never needs a protobuf past 2 GiB.

onnx infers shapes on protobuf, so this module sits above both the graph queries (:mod:`._graph`)
and serialization (:mod:`._io`); keeping it out of either is what keeps those two free of an import
cycle. Annotations are merged conservatively: a concrete dim the graph already knows is never
replaced by a symbol, and a declared graph-output shape survives unless it contradicts the
computed one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import onnx

from ._graph import iter_graphs, np_dtype
from ._gs import Tensor, Variable
from ._io import serializes_cheaply, to_proto
from ._model import Model

__all__ = ["infer_shapes"]

log = logging.getLogger(__name__)


def infer_shapes(model: Model) -> bool:
    """Annotate tensors with dtypes/shapes from onnx's shape inference (round trip through proto).

    Existing concrete dims are kept where inference only knows a symbol. On failure the graph is
    left unchanged and the reason logged.

    Returns:
        True when inference ran and annotations were applied.
    """
    proto = to_proto(model, weights=serializes_cheaply(model))
    # Infer top-level outputs from scratch: a declared output shape can be wrong (exporters do
    # that), and the declared value would otherwise hide what the graph really computes.
    for out in proto.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    except Exception as e:  # onnx raises InferenceError / RuntimeError for unsupported patterns
        log.info("%s: shape inference failed, graph unchanged: %s", model.source, str(e).splitlines()[0] if str(e) else e)
        return False
    infos: dict[str, onnx.ValueInfoProto] = {}
    for g in _proto_graphs(inferred.graph):
        for vi in list(g.value_info) + list(g.output):
            infos[vi.name] = vi
    declared = {id(t): t.shape for t in model.graph.outputs}
    for g in iter_graphs(model.graph):
        for node in g.nodes:
            for t in node.outputs:
                vi = infos.get(t.name)
                if vi is not None and isinstance(t, Variable):
                    _apply_value_info(t, vi)
    for t in model.graph.outputs:
        _reconcile_output(model, t, declared.get(id(t)))
    return True


def _reconcile_output(model: Model, t: Tensor, declared: Any) -> None:
    """Keep a graph output's declared shape unless it contradicts the computed one (then warn)."""
    inferred = t.shape
    if not isinstance(declared, (list, tuple)):
        return
    if not isinstance(inferred, (list, tuple)) or len(inferred) != len(declared):
        if isinstance(inferred, (list, tuple)):
            log.warning(
                "%s: output '%s' is declared with shape %s but computes rank %d; using the computed shape", model.source, t.name, list(declared), len(inferred)
            )
        else:
            t.shape = list(declared)
        return
    merged = []
    conflict = False
    for d, i in zip(declared, inferred):
        if isinstance(d, int) and d >= 0 and isinstance(i, int) and i >= 0 and d != i:
            conflict = True
            merged.append(i)
        elif isinstance(i, int) and i >= 0:
            merged.append(i)
        else:
            merged.append(d)
    if conflict:
        log.warning("%s: output '%s' is declared with shape %s but computes %s; using the computed shape", model.source, t.name, list(declared), list(inferred))
    t.shape = merged


def _proto_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _proto_graphs(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _proto_graphs(g)


def _apply_value_info(tensor: Variable, vi: onnx.ValueInfoProto) -> None:
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None or tt.elem_type == 0:
        return
    try:
        tensor.dtype = np_dtype(tt.elem_type)
    except Exception:
        tensor.dtype = tt.elem_type
    if not tt.HasField("shape"):
        return
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    old = tensor.shape
    if old is not None and len(old) == len(dims):
        dims = [o if isinstance(o, int) and not isinstance(n, int) else n for o, n in zip(old, dims)]
    tensor.shape = dims
