"""Model summaries for ``onnxq inspect``: signature, op histogram, parameters, quantization, sparsity, FLOPs.

Everything is computed from the graph (plus onnx shape inference for FLOPs); nothing runs the model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from . import ir
from .ir import Model, Node

__all__ = ["summarize", "node_flops", "QUANT_OPS", "WEIGHT_OPS", "weight_sparsity"]

#: Ops that mark a model as (partly) quantized.
QUANT_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "QGemm",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "MatMulIntegerToFloat",
        "MatMulNBits",
        "GatherBlockQuantized",
    }
)
#: Ops whose second input is a weight (for sparsity and parameter breakdowns).
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _dims(t: Any) -> list[Any] | None:
    shape = getattr(t, "shape", None)
    if shape is None or isinstance(shape, str):
        return None
    try:
        return [int(d) if isinstance(d, (int, np.integer)) else d for d in shape]  # lazily loaded constants carry protobuf dims
    except TypeError:
        return None


def _numel(shape: list[Any] | None) -> int | None:
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return int(np.prod(shape)) if shape else 1


#: Position of the weight input for compute ops (QLinearConv: x, x_scale, x_zp, w, ...).
_WEIGHT_INDEX = {"QLinearConv": 3}


def _kernel_flops(elements: Any, weight: Any) -> int | None:
    """2 FLOPs for each multiply-add: ``prod(W.shape[1:])`` of them for each element of ``elements``."""
    n = _numel(_dims(elements))
    w = _dims(weight)
    if n is None or w is None or not all(isinstance(d, int) for d in w):
        return None
    return 2 * n * int(np.prod(w[1:]))


def _conv_flops(node: Node) -> int | None:
    # Each output element needs (C_in / group) * prod(kernel) multiply-adds = prod(W.shape[1:]).
    return _kernel_flops(node.outputs[0], node.inputs[_WEIGHT_INDEX.get(node.op, 1)])


def _conv_transpose_flops(node: Node) -> int | None:
    # W is [C_in, C_out / group, *kernel]: each input element feeds prod(W.shape[1:]) multiply-adds.
    return _kernel_flops(node.inputs[0], node.inputs[1])


def _matmul_flops(node: Node) -> int | None:
    out = _numel(_dims(node.outputs[0]))
    a = _dims(node.inputs[0])
    if out is None or not a or not isinstance(a[-1], int):
        return None
    k = a[-1]
    if node.op == "Gemm" and node.attrs.get("transA", 0):
        k = a[0]
    return 2 * out * int(k)


_FLOPS: dict[str, Callable[[Node], int | None]] = {
    "Conv": _conv_flops,
    "ConvTranspose": _conv_transpose_flops,
    "MatMul": _matmul_flops,
    "Gemm": _matmul_flops,
    "QLinearConv": _conv_flops,
    "ConvInteger": _conv_flops,
    "QLinearMatMul": _matmul_flops,
    "MatMulInteger": _matmul_flops,
}


def node_flops(node: Node) -> int | None:
    """Floating-point operations (2 per multiply-add) of a compute node, if shapes are known."""
    fn = _FLOPS.get(node.op)
    return fn(node) if fn else None


def weight_sparsity(model: Model) -> dict[str, Any]:
    """Fraction of exact zeros in the weights of Conv/ConvTranspose/Gemm/MatMul, overall and per layer."""
    total = zeros = 0
    layers: dict[str, float] = {}
    seen: set[int] = set()
    for node in ir.iter_nodes(model.graph):
        if node.op not in WEIGHT_OPS or len(node.inputs) < 2:
            continue
        w = node.inputs[1]
        if not ir.is_constant(w) or id(w) in seen:
            continue
        seen.add(id(w))
        values = ir.const_value(w)
        if values.size == 0 or values.dtype.kind != "f":
            continue
        z = int(np.count_nonzero(values == 0))
        total += values.size
        zeros += z
        layers[node.name or w.name] = round(z / values.size, 4)
    return {"overall": round(zeros / total, 4) if total else 0.0, "weights": total, "layers": layers}


def summarize(model: Model, *, flops: bool = True, shapes: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """A JSON-ready summary of ``model``.

    Shape inference (for FLOPs) runs on a copy; ``model`` is not modified.
    """
    graph = model.graph
    nodes = list(ir.iter_nodes(graph))
    ops = Counter((n.domain + "::" if n.domain else "") + n.op for n in nodes)
    params: dict[str, dict[str, int]] = {}
    seen: set[int] = set()
    for g in ir.iter_graphs(graph):
        for n in g.nodes:
            for t in n.inputs:
                if ir.is_constant(t) and id(t) not in seen:
                    seen.add(id(t))
                    v = ir.const_value(t)
                    entry = params.setdefault(str(v.dtype), {"count": 0, "bytes": 0})
                    entry["count"] += int(v.size)
                    entry["bytes"] += _serialized_nbytes(v)
    quant = {op: ops[op] for op in sorted(ops) if op.split("::")[-1] in QUANT_OPS or op.split("::")[-1].startswith("QLinear")}
    summary: dict[str, Any] = {
        "source": model.source,
        "ir_version": model.ir_version,
        "opsets": dict(sorted(model.opsets.items())),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [_io(t) for t in graph.inputs if not ir.is_constant(t)],
        "outputs": [_io(t) for t in graph.outputs],
        "nodes": len(nodes),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": {
            "count": sum(e["count"] for e in params.values()),
            "bytes": sum(e["bytes"] for e in params.values()),
            "by_dtype": dict(sorted(params.items())),
        },
        "quantization": {"quantized": bool(quant), "ops": quant},
        "sparsity": weight_sparsity(model),
        "subgraphs": sum(1 for _ in ir.iter_graphs(graph)) - 1,
    }
    if flops:
        summary["flops"] = model_flops(model, shapes)
    return summary


def model_flops(model: Model, shapes: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Total FLOPs of compute nodes whose shapes are known, and how many were unknown.

    Input shapes come from ``shapes`` (by input name) when given; otherwise an unknown leading
    (batch) dim is assumed to be 1, so the figure is per batch item. Other unknown dims are left
    unknown rather than guessed (a width of 1 would give a meaningless figure); the nodes they
    affect are counted as unknown. Assumptions are reported.
    """
    copy = ir.clone(model)
    assumed: dict[str, Any] = {}
    for t in copy.graph.inputs:
        if ir.is_constant(t):
            continue
        if shapes and t.name in shapes:
            t.shape = list(shapes[t.name])
            assumed[t.name] = list(shapes[t.name])
            continue
        if not isinstance(t.shape, (list, tuple)) or not t.shape:
            continue
        first = t.shape[0]
        if not (isinstance(first, int) and first >= 0):
            t.shape = [1, *t.shape[1:]]
            assumed[f"{t.name}[0]"] = 1
    ir.infer_shapes(copy)
    measured = _measure_missing_shapes(copy)
    total = 0
    unknown = 0
    by_op: Counter[str] = Counter()
    for node in ir.iter_nodes(copy.graph):
        if node.op not in _FLOPS:
            continue
        f = node_flops(node)
        if f is None:
            unknown += 1
        else:
            total += f
            by_op[node.op] += f
    return {"total": total, "by_op": dict(by_op), "nodes_with_unknown_shapes": unknown, "assumed_dims": assumed, "shapes_from_onnxruntime": measured}


def _measure_missing_shapes(model: Model) -> int:
    """Fill shapes shape inference could not derive by running onnxruntime once on zero inputs.

    Only when every graph input has a static shape (given or declared); returns how many tensors
    were measured. Exporters' position-id Slices and similar data-dependent ops often defeat onnx's
    static inference although the real shapes are fixed for given inputs.
    """
    missing = [
        t
        for n in ir.iter_nodes(model.graph)
        if n.op in _FLOPS
        for t in list(n.inputs[:1]) + list(n.outputs[:1])
        if _numel(_dims(t)) is None and not ir.is_constant(t)
    ]
    inputs = [t for t in model.graph.inputs if not ir.is_constant(t)]
    if not missing or any(_numel(_dims(t)) is None or t.dtype is None for t in inputs):
        return 0
    from .calibration.expose import expose_tensors
    from .runtime.session import make_session

    names = sorted({t.name for t in missing})
    try:
        exposed = expose_tensors(model, names)
        sess = make_session(exposed.model, threads=1, optimization="disable")
        feeds = {t.name: np.zeros(_dims(t) or (), dtype=np.dtype(t.dtype)) for t in inputs}
        outs = list(exposed.output_to_tensor)
        values = sess.run(outs, feeds)
    except Exception:  # best effort: FLOPs stay unknown for these nodes
        return 0
    shapes = {exposed.output_to_tensor[o]: list(v.shape) for o, v in zip(outs, values)}
    for t in missing:
        if t.name in shapes:
            t.shape = shapes[t.name]
    return len(shapes)


def _serialized_nbytes(values: np.ndarray) -> int:
    if values.dtype.name in ("int4", "uint4", "float4_e2m1fn"):
        return (values.size + 1) // 2
    return int(values.nbytes)


def _io(t: Any) -> dict[str, Any]:
    dtype = t.dtype
    try:
        dtype_name = str(np.dtype(dtype)) if dtype is not None else None
    except TypeError:
        dtype_name = str(dtype)
    return {"name": t.name, "dtype": dtype_name, "shape": _dims(t)}
