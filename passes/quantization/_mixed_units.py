"""Units of a mixed-precision search and the precisions each can take; the dynamic int8 rewrite.

A *unit* is what the search assigns one precision to: a fusion group of the static plan (an anchor
with the Relu/Clip annotate folds into it, :func:`.sensitivity.fusion_units`), or a node the static
plan leaves float that dynamic quantization can still take (an LSTM: onnxruntime has no QDQ LSTM
kernel, but it has ``DynamicQuantizeLSTM``; a MatMul/Gemm annotate refused). Each unit has a
*ladder* of precisions, cheapest first, ending in ``fp32``:

=============================================  ===============================================
unit                                           ladder
=============================================  ===============================================
static unit anchored on MatMul/Gemm with a     ``int8`` → ``dynamic-int8`` → ``fp32``
constant 2-D float32 weight
other static unit                              ``int8`` → ``fp32``
MatMul/Gemm/LSTM the static plan leaves float  ``dynamic-int8`` → ``fp32``
(not excluded by the user)
=============================================  ===============================================

``int8`` is the static plan's Q/DQ for the unit; ``dynamic-int8`` keeps the unit out of the static
plan and rewrites its anchor as quantize-dynamic does (``DynamicQuantizeMatMul`` /
``DynamicQuantizeLSTM``: int8 weights, activations quantized per run with their own range, so
inputs whose range varies per sample lose nothing to a calibrated range); ``fp32`` keeps it float.
fp16 is not on the ladder: onnxruntime's x86 CPU provider has no fp16 MatMul/Conv kernels, so fp16
there is storage-only (fp32 compute, fp16-rounded weights) and never faster than fp32. 16-bit
activations are one choice for the whole plan (``activation_dtype``), not per node.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from onnxq import ir
from onnxq.ir import Model
from onnxq.plan import QuantizationConfig, QuantPlan

from .quantize_dynamic import DynamicRewriter, QuantizeDynamicConfig, plan_dynamic_matmul
from .sensitivity import fusion_units

__all__ = ["PRECISIONS", "INT8", "DYNAMIC", "FP32", "MixedUnit", "mixed_units", "apply_dynamic", "dynamic_config"]

INT8, DYNAMIC, FP32 = "int8", "dynamic-int8", "fp32"
#: Every precision a unit can take, cheapest (usually fastest) first.
PRECISIONS: tuple[str, ...] = (INT8, DYNAMIC, FP32)
_DYNAMIC_OPS = frozenset({"MatMul", "Gemm", "LSTM"})


@dataclass(frozen=True)
class MixedUnit:
    """One unit of the search.

    Attributes:
        name: the unit's first node.
        nodes: its nodes (the static plan's fusion group, or the one dynamic-only node).
        ops: their op types.
        ladder: the precisions it may take, cheapest first, ``fp32`` last.
        anchor: the node ``dynamic-int8`` rewrites ("" when the ladder has no ``dynamic-int8``).
    """

    name: str
    nodes: tuple[str, ...]
    ops: tuple[str, ...]
    ladder: tuple[str, ...]
    anchor: str = ""

    def precisions(self, precision: str) -> dict[str, str]:
        """Node → precision when the unit takes ``precision`` (dynamic: the anchor; its fused Relu stays float)."""
        if precision == DYNAMIC:
            return {n: (DYNAMIC if n == self.anchor else FP32) for n in self.nodes}
        return dict.fromkeys(self.nodes, precision)


def dynamic_config(cfg: QuantizationConfig | None, fmt: str = "fused") -> QuantizeDynamicConfig:
    """quantize-dynamic's options for the units the search makes dynamic: every size (the search
    measures whether it pays), no latency guard of its own (the search times the whole plan)."""
    per_channel = cfg.per_channel if cfg is not None else True
    reduce_range = cfg.reduce_range if cfg is not None else None
    return QuantizeDynamicConfig(per_channel=per_channel, format=fmt, min_weight_elements=0, reduce_range=reduce_range, guard_latency=False)  # type: ignore[arg-type]


def _dynamic_ok(model: Model, node: ir.Node, dcfg: QuantizeDynamicConfig) -> bool:
    """Whether quantize-dynamic can rewrite ``node`` (a constant-weight MatMul/Gemm, or an LSTM)."""
    if node.op not in _DYNAMIC_OPS or node.domain:
        return False
    if node.op == "LSTM":
        w, r = (ir.constant_array(node.inputs[i]) if len(node.inputs) > i else None for i in (1, 2))
        return w is not None and r is not None and w.ndim == 3 and r.ndim == 3 and not node.attrs.get("layout", 0)
    return not isinstance(plan_dynamic_matmul(model.graph, node, dcfg), str)


def mixed_units(model: Model, plan: QuantPlan, cfg: QuantizationConfig | None, *, dynamic: bool = True) -> list[MixedUnit]:
    """The units of ``model``'s full static ``plan`` (graph order), then the dynamic-only nodes.

    Nodes the user excluded (``exclude_nodes`` / ``exclude_op_types``) are never units.
    """
    dcfg = dynamic_config(cfg)
    nodes = {n.name: n for n in model.graph.nodes}
    excluded = set(cfg.exclude_op_types) if cfg is not None else set()
    patterns = cfg.exclude_nodes if cfg is not None else ()
    out: list[MixedUnit] = []
    for u in fusion_units(model, plan):
        anchor = u.nodes[0]
        node = nodes.get(anchor)
        can_dynamic = dynamic and node is not None and node.op in ("MatMul", "Gemm") and _dynamic_ok(model, node, dcfg)
        ladder = (INT8, DYNAMIC, FP32) if can_dynamic else (INT8, FP32)
        out.append(MixedUnit(u.name, u.nodes, u.ops, ladder, anchor if can_dynamic else ""))
    if not dynamic:
        return out
    quantized = set(plan.quantized_nodes)
    for node in model.graph.nodes:
        if node.name in quantized or node.op in excluded or any(re.fullmatch(p, node.name) for p in patterns):
            continue
        if _dynamic_ok(model, node, dcfg):
            out.append(MixedUnit(node.name, (node.name,), (node.op,), (DYNAMIC, FP32), node.name))
    return out


def apply_dynamic(model: Model, nodes: Collection[str], dcfg: QuantizeDynamicConfig) -> dict[str, str]:
    """Rewrite ``nodes`` of ``model``'s main graph as quantize-dynamic does, in place.

    Run it after the static plan is materialized: a dynamic node is float in that plan, so its
    weight is still a float constant and its activation input (a DequantizeLinear output where a
    neighbour is int8) is float. Returns the nodes it could not rewrite, with the reason.
    """
    rw = DynamicRewriter(model, dcfg)
    refused: dict[str, str] = {}
    wanted = set(nodes)
    for node in list(model.graph.nodes):
        if node.name not in wanted or not node.outputs:
            continue
        if node.op == "LSTM":
            reason = rw.lstm(model.graph, node)
        else:
            planned = plan_dynamic_matmul(model.graph, node, dcfg)
            if isinstance(planned, str):
                reason = planned
            else:
                rw.matmul(model.graph, node, *planned)
                reason = None
        if reason:
            refused[node.name] = reason
    ir.normalize(model)
    return refused


def counts(precisions: Mapping[str, str]) -> dict[str, int]:
    """How many nodes take each precision."""
    out = dict.fromkeys(PRECISIONS, 0)
    for p in precisions.values():
        out[p] = out.get(p, 0) + 1
    return out
