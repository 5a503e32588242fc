"""Parameter rules: integer types the target has no kernel for, zero points it forbids, int32 biases that
overflow or carry the wrong scale, and one scale shared by branches of very different ranges."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .. import ir
from ..ir import Node, Tensor
from ..targets._ops import WEIGHTED_OPS
from ._findings import Finding
from ._graph import QDQGraph
from ._registry import LintContext, finding, rule

__all__: list[str] = []

INT32_MAX = 2**31 - 1


def _kind(graph: QDQGraph, node: Node, dtype: str) -> str:
    if dtype == "int32":
        return "bias"
    return "weight" if graph.is_dq(node) and graph.is_weight_dq(node) else "activation"


@rule("no-int8-kernel")
def no_int8_kernel(ctx: LintContext) -> Iterator[Finding]:
    """Quantized types or layouts the target has no integer kernel for (error).

    Sources: onnx-tensorrt ``docs/operators.md`` (Quantize/DequantizeLinear: INT8 only, so no uint8,
    16-bit or int32-bias DQ); onnxruntime's QNN EP docs (HTP activations uint8/uint16; MatMul inputs
    (uint8, uint8), (uint8, uint16), (uint16, uint8)) and its QNN quantization config (per-channel
    weights only for Conv and ConvTranspose; "QNN does not support per-channel MatMul"); OpenVINO's
    low precision transformations (8-bit activations).
    """
    graph, rules, name = ctx.graph, ctx.rules, ctx.profile.name
    bad: dict[str, list[str]] = {}
    for node in graph.nodes:
        if not (graph.is_q(node) or graph.is_dq(node)) or (p := graph.params(node)) is None:
            continue
        kind = _kind(graph, node, p.dtype)
        allowed = {"activation": rules.activation_dtypes, "weight": rules.weight_dtypes}.get(kind)
        if kind == "bias" and not rules.int32_bias:
            bad.setdefault("int32 bias DequantizeLinear (its Q/DQ layers take 8-bit data only)|keep biases float (--float-bias)", []).append(node.name)
        elif allowed is not None and p.dtype not in allowed:
            fix = f"use {' or '.join(sorted(allowed))} {kind}s (--target {name} sets them)"
            bad.setdefault(f"{p.dtype} {kind} Q/DQ (it takes {', '.join(sorted(allowed))})|{fix}", []).append(node.name)
    for node in graph.compute_nodes():
        if node.op not in WEIGHTED_OPS or len(node.inputs) < 2 or (dq := graph.dq_of(node.inputs[1])) is None or (p := graph.params(dq)) is None:
            continue
        only = rules.op_weight_dtypes.get(node.op)
        if only is not None and p.dtype not in only:
            key = f"{node.op} with {p.dtype} weights (it takes {', '.join(sorted(only))})|quantize {node.op} weights as {' or '.join(sorted(only))}"
            bad.setdefault(key, []).append(node.name)
        if p.axis is not None and rules.per_channel_ops is not None and node.op not in rules.per_channel_ops:
            key = f"per-channel {node.op} weights (per-channel only for {', '.join(sorted(rules.per_channel_ops))})|quantize {node.op} weights per tensor"
            bad.setdefault(key, []).append(node.name)
    for key, nodes in bad.items():
        what, fix = key.split("|", 1)
        yield finding("no-int8-kernel", "error", nodes[:20], f"{name} has no integer kernel for {what}: {len(nodes)} node(s)", fix)


@rule("forbidden-zero-point")
def forbidden_zero_point(ctx: LintContext) -> Iterator[Finding]:
    """Zero points the target forbids (error).

    Sources: onnx-tensorrt ``docs/operators.md`` ("``y_zero_point`` must be 0", "``x_zero_point`` must
    be zero": TensorRT's quantization is symmetric); onnxruntime ``qlinearconv.cc`` (a per-channel
    filter's zero points must all be the same).
    """
    graph, rules = ctx.graph, ctx.rules
    acts, weights, uneven = [], [], []
    for node in graph.nodes:
        if not (graph.is_q(node) or graph.is_dq(node)) or (p := graph.params(node)) is None or p.dtype == "int32":
            continue
        nonzero = bool(np.any(p.zero_point != 0))
        if _kind(graph, node, p.dtype) == "weight":
            if rules.weight_zero_point_zero and nonzero:
                weights.append(node.name)
            if rules.per_channel_uniform_zero_point and p.zero_point.size > 1 and len(np.unique(p.zero_point)) > 1:
                uneven.append(node.name)
        elif rules.activation_zero_point_zero and nonzero:
            acts.append(node.name)
    name = ctx.profile.name
    if acts:
        yield finding("forbidden-zero-point", "error", acts[:20], f"{name} needs zero points of 0 on activations; {len(acts)} Q/DQ node(s) have others",
                      "quantize activations symmetrically (--activation-symmetric, int8)")
    if weights:
        yield finding("forbidden-zero-point", "error", weights[:20], f"{name} needs weight zero points of 0; {len(weights)} weight DQ node(s) have others",
                      "quantize weights symmetrically (--weight-symmetric, int8)")
    if uneven:
        yield finding("forbidden-zero-point", "error", uneven[:20], f"{name} needs one zero point for all channels of a weight; {len(uneven)} differ",
                      "quantize weights symmetrically (--weight-symmetric)")


def _bias_problems(graph: QDQGraph, node: Node) -> list[str]:
    """What is wrong with the int32 bias of one Conv/ConvTranspose/Gemm (empty: nothing)."""
    if node.op not in ("Conv", "ConvTranspose", "Gemm") or len(node.inputs) < 3 or not node.inputs[2].name:
        return []
    b_dq, x_dq, w_dq = (graph.dq_of(node.inputs[i]) for i in (2, 0, 1))
    if b_dq is None or (pb := graph.params(b_dq)) is None or pb.dtype != "int32":
        return []
    qb = ir.constant_array(b_dq.inputs[0])
    if qb is None:
        return []
    qb = np.abs(np.asarray(qb, np.int64)).reshape(-1)
    problems = []
    if qb.size and int(qb.max()) >= INT32_MAX:
        problems.append(f"{int((qb >= INT32_MAX).sum())} bias value(s) saturated at the int32 limit")
    px, pw = (graph.params(x_dq) if x_dq is not None else None), (graph.params(w_dq) if w_dq is not None else None)
    if px is None or pw is None or w_dq is None:
        return problems
    expected = np.float64(px.scale.reshape(-1)[0]) * np.broadcast_to(pw.scale.astype(np.float64).reshape(-1), pb.scale.reshape(-1).shape)
    if not np.allclose(pb.scale.astype(np.float64).reshape(-1), expected, rtol=1e-3):
        problems.append("bias scale is not input scale × weight scale (QLinearConv / QGemm read the int32 bias with that scale)")
    w = ir.constant_array(w_dq.inputs[0])
    if w is not None and qb.size:
        w_int = np.abs(np.asarray(w, np.int64) - pw.zero_point.astype(np.int64).reshape(-1)[0])
        k = w_int.size // max(qb.size, 1)
        info = np.iinfo(np.dtype(px.dtype))
        x_max = int(max(info.max - int(px.zero_point.reshape(-1)[0]), int(px.zero_point.reshape(-1)[0]) - info.min))
        worst = int(qb.max()) + k * x_max * int(w_int.max())
        if worst > INT32_MAX:
            problems.append(f"bias plus {k} products can reach {worst:.3e}, past the int32 accumulator ({INT32_MAX})")
    return problems


@rule("bias-overflow")
def bias_overflow(ctx: LintContext) -> Iterator[Finding]:
    """int32 biases that saturated, can overflow the int32 accumulator, or carry the wrong scale (error).

    Sources: ONNX QLinearConv spec ("B: bias ... quantized with scale = x_scale * w_scale and zero point
    0", int32); onnxruntime's QDQ Conv/Gemm fusions read the DQ'd int32 bias as that (its quantization
    docs); integer accumulation is int32 on every CPU/NPU kernel (gemmlowp, MLAS, oneDNN).
    """
    for node in ctx.graph.compute_nodes():
        problems = _bias_problems(ctx.graph, node)
        if problems:
            yield finding("bias-overflow", "error", [node.name], f"{node.op} '{node.name}': " + "; ".join(problems),
                          "raise the weight scale of the affected channels (onnxq's insert-qdq does), or keep this node float")


def _static_absmax(graph: QDQGraph, t: Tensor, depth: int = 0) -> float | None:
    """The largest ``|x|`` ``t`` can take, read off upstream quantization grids and bounded ops (None: unknown)."""
    p = ir.producer(t)
    if p is None or depth > 8:
        return None
    if graph.is_dq(p):
        params = graph.params(p)
        return None if params is None else max(abs(v) for v in params.grid_range())
    if p.op in ("Sigmoid", "HardSigmoid", "Softmax", "Tanh"):
        return 1.0
    if p.op in ("Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice",
                "Resize", "Pad", "Identity", "Clip", "Concat"):
        values = [_static_absmax(graph, x, depth + 1) for x in (p.inputs if p.op == "Concat" else p.inputs[:1])]
        return None if any(v is None for v in values) else max(v for v in values if v is not None)
    return None


@rule("shared-scale-disparate-ranges")
def shared_scale_disparate_ranges(ctx: LintContext) -> Iterator[Finding]:
    """One scale shared by Concat branches whose ranges differ by more than 10x (warning).

    Source: onnxruntime's QLinearConcat and TensorRT's/OpenVINO's int8 Concat need one scale for all
    inputs (TensorRT developer guide: Concat inputs share the output's quantization; OpenVINO LPT
    ConcatTransformation); the branch with the small range then keeps only a few integer levels
    (boxes in 0-320 beside probabilities in 0-1 leave the probabilities 1-2 levels). Ranges come
    from the data given (``--data``), else from the upstream quantization grids and bounded ops.
    """
    graph = ctx.graph
    for node in graph.compute_nodes():
        if node.op != "Concat" or len(node.inputs) < 2:
            continue
        dqs = [graph.dq_of(t) for t in node.inputs]
        if any(d is None for d in dqs):
            continue
        params = [graph.params(d) for d in dqs if d is not None]
        if any(p is None for p in params) or not all(params[0].same_as(p) for p in params[1:] if p is not None and params[0] is not None):
            continue
        widths = []
        for dq in dqs:
            q = ir.producer(dq.inputs[0]) if dq is not None else None
            w = ctx.observed.get(q.name) if ctx.observed is not None and q is not None else None
            widths.append(w if w is not None else (_static_absmax(graph, q.inputs[0]) if graph.is_q(q) and q is not None else None))
        known = [w for w in widths if w is not None and w > 0]
        if len(known) >= 2 and max(known) / min(known) > 10:
            yield finding(
                "shared-scale-disparate-ranges", "warning", [node.name] + [d.name for d in dqs if d is not None],
                f"Concat '{node.name}' shares one scale across inputs whose ranges reach {min(known):.3g} to {max(known):.3g} ({max(known) / min(known):.0f}x)",
                "keep this Concat float (onnxq does so past --concat-range-ratio), or normalize the small branch first",
            )
