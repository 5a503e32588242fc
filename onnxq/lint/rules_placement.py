"""Placement rules: where Q/DQ pairs sit relative to the ops a target fuses."""

from __future__ import annotations

from collections.abc import Iterator

from .. import ir
from ..ir import Node
from ..targets._ops import WEIGHTED_OPS
from ._findings import Finding
from ._registry import LintContext, finding, rule

__all__: list[str] = []


def _int8_consumer(ctx: LintContext, node: Node) -> bool:
    """``node`` takes an int8 input on the target: a Q (requantization) or a quantized op it has an int8 kernel for."""
    return ctx.graph.is_q(node) or (node.op in ctx.rules.int8_ops and ctx.quantized(node))


@rule("qdq-breaks-fusion")
def qdq_breaks_fusion(ctx: LintContext) -> Iterator[Finding]:
    """Q/DQ placements that keep the target from fusing an int8 kernel (warning).

    - a weighted op (Conv, ConvTranspose, Gemm, MatMul) with only one of its activation and weight
      quantized: no int8 kernel applies, and a quantized weight is dequantized on every run;
    - a Q/DQ pair between a weighted op and the activation the target fuses into it.

    Sources: TensorRT developer guide, "Q/DQ layer-placement recommendations" ("quantize all inputs
    of weighted operations"; "do not simulate batch-normalization and ReLU fusions": no Q/DQ between a
    convolution and its ReLU); onnxruntime's quantization docs (QDQ node units need DQ on every
    input; Relu/Clip fold into the producer's requantization).
    """
    graph = ctx.graph
    for node in graph.compute_nodes():
        if node.op not in WEIGHTED_OPS or node.op not in ctx.rules.int8_ops or len(node.inputs) < 2:
            continue
        x, w = node.inputs[0], node.inputs[1]
        x_q, w_q = graph.dq_of(x) is not None, graph.dq_of(w) is not None
        w_float = ir.is_constant(w)
        if (w_q and not x_q) or (x_q and w_float):
            which = "weight is quantized but its input is float" if w_q else "input is quantized but its weight is float"
            yield finding("qdq-breaks-fusion", "warning", [node.name], f"{node.op} '{node.name}': {which}, so no int8 kernel applies",
                          "quantize both the activation and the weight of the op, or neither")
        out = node.outputs[0]
        q = out.outputs[0] if len(out.outputs) == 1 else None
        if not graph.is_q(q) or q is None or len(q.outputs[0].outputs) != 1:
            continue
        dq = q.outputs[0].outputs[0]
        act = dq.outputs[0].outputs[0] if graph.is_dq(dq) and len(dq.outputs[0].outputs) == 1 else None
        if act is not None and act.op in ctx.rules.fused_activations:
            yield finding(
                "qdq-breaks-fusion", "warning", [node.name, q.name, dq.name, act.name],
                f"a Q/DQ pair sits between {node.op} '{node.name}' and the {act.op} {ctx.profile.name} fuses into it",
                f"remove the pair and quantize the {act.op}'s output instead",
            )


@rule("qdq-around-unfusable-op")
def qdq_around_unfusable_op(ctx: LintContext) -> Iterator[Finding]:
    """An op between DequantizeLinear and QuantizeLinear that the target cannot run in int8 (warning).

    The target dequantizes, runs the op in float and quantizes again: two conversions for nothing.
    Sources: the int8 op tables of :mod:`onnxq.targets._ops` (onnxruntime's QDQ selectors, OpenVINO's
    low precision transformations, onnx-tensorrt's INT8 column, QNN EP's operator table).
    """
    by_op: dict[str, list[str]] = {}
    for node in ctx.graph.compute_nodes():
        if node.op not in ctx.rules.int8_ops and ctx.quantized(node):
            by_op.setdefault(node.op, []).append(node.name)
    for op, nodes in sorted(by_op.items()):
        yield finding(
            "qdq-around-unfusable-op", "warning", nodes[:20], f"{ctx.profile.name} has no int8 {op}: {len(nodes)} node(s) run float between a DQ and a Q",
            f"keep {op} float (--exclude-op-types {op}; --target {ctx.profile.name} does)",
        )


@rule("dq-shared-consumers")
def dq_shared_consumers(ctx: LintContext) -> Iterator[Finding]:
    """A DequantizeLinear feeding several consumers with different needs (warning).

    A weight's DQ read by several ops (onnxruntime fuses a weight's DQ into its sole reader only;
    TensorRT's per-channel weight scales belong to one layer), or an activation's DQ read both by an
    int8 op and by a float op or a graph output (the float reader forces the dequantized tensor to
    exist: the target cannot keep the tensor int8 end to end). Sources: onnxruntime's quantization
    docs (``DedicatedQDQPair``; its EnsureUniqueDQForNodeUnit graph transformer), TensorRT developer
    guide (Q/DQ placement).
    """
    graph = ctx.graph
    for node in graph.nodes:
        if not graph.is_dq(node):
            continue
        out = node.outputs[0]
        readers = graph.consumers(out)
        if graph.is_weight_dq(node):
            if len(readers) > 1:
                yield finding("dq-shared-consumers", "warning", [node.name] + [r.name for r in readers],
                              f"weight DQ '{node.name}' feeds {len(readers)} ops", "give each reader its own DequantizeLinear")
            continue
        kinds = {_int8_consumer(ctx, r) for r in readers} | ({False} if id(out) in graph.graph_outputs else set())
        if len(readers) + (id(out) in graph.graph_outputs) > 1 and kinds == {True, False}:
            floats = [r.name for r in readers if not _int8_consumer(ctx, r)]
            yield finding(
                "dq-shared-consumers", "warning", [node.name] + floats,
                f"DQ '{node.name}' feeds int8 ops and float readers ({', '.join(floats) or 'a graph output'})",
                "give the float readers the tensor before its QuantizeLinear, or quantize them too",
            )


@rule("redundant-qdq")
def redundant_qdq(ctx: LintContext) -> Iterator[Finding]:
    """Q/DQ pairs that only add conversions (warning).

    - a Q→DQ pair whose producer cannot write int8 on the target and none of whose readers reads
      int8: the pair only rounds a float tensor (TensorRT recommends no Q/DQ on the outputs of
      weighted ops: it does not fuse an output Q into the layer);
    - a DQ→Q chain with identical parameters: a requantization that changes nothing.

    Sources: TensorRT developer guide ("Q/DQ layer-placement recommendations"); onnxruntime's QDQ
    propagation and DQ→Q removal transformers (``qdq_propagation.cc``, ``QDQFinalCleanupTransformer``).
    """
    graph = ctx.graph
    for q, dq in graph.qdq_pairs():
        producer = ir.producer(q.inputs[0])
        writes_int8 = (
            producer is not None and ctx.quantized(producer) and producer.op in ctx.rules.int8_ops
            and (ctx.rules.output_q_fused or producer.op not in WEIGHTED_OPS)
        )
        readers = graph.consumers(dq.outputs[0])
        if not writes_int8 and not any(_int8_consumer(ctx, r) for r in readers):
            yield finding("redundant-qdq", "warning", [q.name, dq.name],
                          f"Q/DQ on '{q.inputs[0].name}': neither its producer nor its readers run int8 on {ctx.profile.name}",
                          "remove the pair (keep the tensor float)")
    for node in graph.nodes:
        if graph.is_dq(node) and (p := graph.params(node)) is not None:
            for reader in graph.consumers(node.outputs[0]):
                if graph.is_q(reader) and (r := graph.params(reader)) is not None and p.same_as(r):
                    yield finding("redundant-qdq", "warning", [node.name, reader.name], f"DQ '{node.name}' → Q '{reader.name}' with the same parameters",
                                  "remove both: the tensor is already quantized that way")
