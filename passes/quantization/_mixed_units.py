"""Units of a mixed-precision search and the precisions each can take.

A *unit* is what the search assigns one precision to: a fusion group of the static plan (an anchor
with the Relu/Clip annotate folds into it, :func:`.sensitivity.fusion_units`), or a node the static
plan leaves float that dynamic quantization can still take (an LSTM: onnxruntime has no QDQ LSTM
kernel, but it has ``DynamicQuantizeLSTM``; a MatMul/Gemm annotate refused). Each unit has a
*ladder* of precisions, cheapest first, ending in ``fp32``; each rung is offered only where it can
be written (and only when the search space, ``precisions``, names it):

==================  ==========================================================================
precision           offered to
==================  ==========================================================================
``int8``            static units (the plan's Q/DQ)
``dynamic-int8``    units anchored on a MatMul/Gemm with a constant 2-D float32 weight, and the
                    MatMul/Gemm/LSTM the static plan leaves float (not excluded by the user)
``int16``           static units, when the plan's activations are 8-bit and the model's opset is
                    >= 21 (16-bit QuantizeLinear): the unit's activations get the 16-bit type of
                    the same signedness (``uint8`` → ``uint16``), weights stay 8-bit
``fp16``            units whose nodes are all in the main graph, hold no subgraph, are not in
                    convert-float16's overflow block list (sums, powers, ...) and whose
                    calibrated ranges fit float16 (|x| <= 65504)
``fp32``            every unit
==================  ==========================================================================

How each is written: :mod:`._mixed_apply`. ``int16`` and ``fp16`` are *measured* rungs
(:data:`MEASURED`): onnxruntime's x86 CPU provider has no 16-bit QDQ kernels (it runs
``DQ → float op → Q``) and no float16 kernels for MatMul/Gemm/Conv or element-wise maths (it wraps
them in Casts to float32: only Transpose, Concat, Clip and LayerNormalization have native float16
kernels in 1.32), so neither is assumed faster than fp32: the search keeps them only where a timing
says so. They are the accuracy rungs between int8 and fp32 for runtimes that do run them natively.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from onnxq import ir
from onnxq.calibration.ranges import TensorRange
from onnxq.errors import ConfigError
from onnxq.ir import Model
from onnxq.plan import QuantizationConfig, QuantPlan

from ._mixed_apply import dynamic_config, dynamic_ok
from .convert_float16 import DEFAULT_OP_BLOCK_LIST
from .sensitivity import fusion_units

__all__ = [
    "PRECISIONS", "MEASURED", "INT8", "DYNAMIC", "INT16", "FP16", "FP32", "MixedUnit", "mixed_units", "wide_dtype", "check_precisions", "counts",
    "search_space", "WIDE_OPSET",
]

INT8, DYNAMIC, INT16, FP16, FP32 = "int8", "dynamic-int8", "int16", "fp16", "fp32"
#: Every precision a unit can take, cheapest (usually fastest) first.
PRECISIONS: tuple[str, ...] = (INT8, DYNAMIC, INT16, FP16, FP32)
#: Rungs not assumed faster than fp32 on onnxruntime's CPU provider: kept only when measured faster.
MEASURED = frozenset({INT16, FP16})
#: Largest finite float16.
FP16_MAX = 65504.0
_WIDE = {"uint8": "uint16", "int8": "int16"}
#: 16-bit QuantizeLinear/DequantizeLinear.
WIDE_OPSET = 21


@dataclass(frozen=True)
class MixedUnit:
    """One unit of the search.

    Attributes:
        name: the unit's first node.
        nodes: its nodes (the static plan's fusion group, or the one dynamic-only node).
        ops: their op types.
        ladder: the precisions it may take, cheapest first, ``fp32`` last.
        anchor: the node ``dynamic-int8`` rewrites ("" when the ladder has no ``dynamic-int8``).
        static: a unit of the static plan (else a node only dynamic quantization takes).
    """

    name: str
    nodes: tuple[str, ...]
    ops: tuple[str, ...]
    ladder: tuple[str, ...]
    anchor: str = ""
    static: bool = True

    def precisions(self, precision: str) -> dict[str, str]:
        """Node → precision when the unit takes ``precision`` (dynamic: the anchor; its fused Relu stays float)."""
        if precision == DYNAMIC:
            return {n: (DYNAMIC if n == self.anchor else FP32) for n in self.nodes}
        return dict.fromkeys(self.nodes, precision)


def check_precisions(precisions: Iterable[str], where: str) -> tuple[str, ...]:
    """``precisions`` in ladder order with ``fp32`` added (every unit can stay float).

    Raises:
        ConfigError: a name not in :data:`PRECISIONS`.
    """
    given = set(precisions)
    unknown = sorted(given - set(PRECISIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown precision(s) {', '.join(unknown)}; valid: {', '.join(PRECISIONS)}")
    return tuple(p for p in PRECISIONS if p in given or p == FP32)


def search_space(*, dynamic: bool, activation_dtypes: Iterable[str], activation_dtype: str) -> tuple[str, ...]:
    """The precisions a runtime can take: ``dynamic-int8`` where it runs onnxruntime's contrib ops
    (``dynamic``), ``int16`` where it takes the 16-bit counterpart of ``activation_dtype`` (one of
    ``activation_dtypes``); ``int8``, ``fp16`` and ``fp32`` everywhere."""
    wide = _WIDE.get(activation_dtype)
    offered = {DYNAMIC: dynamic, INT16: wide is not None and wide in set(activation_dtypes)}
    return tuple(p for p in PRECISIONS if offered.get(p, True))


def wide_dtype(cfg: QuantizationConfig | None) -> str | None:
    """The 16-bit activation type of an ``int16`` unit (None when the plan's activations are not 8-bit)."""
    return _WIDE.get(cfg.activation_dtype if cfg is not None else "uint8")


def _fp16_ok(node: ir.Node, main: set[int], ranges: Mapping[str, TensorRange]) -> bool:
    """Whether ``node`` may compute in float16: main graph, no body, no overflow-prone op, ranges that fit."""
    if id(node) not in main or ir.subgraphs_of(node) or node.op in DEFAULT_OP_BLOCK_LIST or node.domain:
        return False
    for t in [*node.inputs, *node.outputs]:
        r = ranges.get(t.name) if t.name else None
        if r is not None and max(abs(r.data_min if r.data_min is not None else r.min), abs(r.data_max if r.data_max is not None else r.max)) > FP16_MAX:
            return False
    return True


def mixed_units(
    model: Model,
    plan: QuantPlan,
    cfg: QuantizationConfig | None,
    ranges: Mapping[str, TensorRange] | None = None,
    *,
    precisions: Iterable[str] = PRECISIONS,
) -> list[MixedUnit]:
    """The units of ``model``'s full static ``plan`` (graph order), then the dynamic-only nodes.

    ``precisions`` is the search space (see :func:`check_precisions`); nodes the user excluded
    (``exclude_nodes`` / ``exclude_op_types``) are never units.
    """
    allowed = set(check_precisions(precisions, "mixed-precision"))
    ranges = ranges or {}
    dcfg = dynamic_config(cfg)
    nodes = {n.name: n for n in ir.iter_nodes(model.graph)}
    main = {id(n) for n in model.graph.nodes}
    wide = INT16 in allowed and wide_dtype(cfg) is not None and model.opset >= WIDE_OPSET
    excluded = set(cfg.exclude_op_types) if cfg is not None else set()
    patterns = cfg.exclude_nodes if cfg is not None else ()
    out: list[MixedUnit] = []
    for u in fusion_units(model, plan):
        anchor = nodes.get(u.nodes[0])
        can_dynamic = anchor is not None and anchor.op in ("MatMul", "Gemm") and dynamic_ok(model, anchor, dcfg)
        fp16 = all(n in nodes and _fp16_ok(nodes[n], main, ranges) for n in u.nodes)
        offered = {INT8: True, DYNAMIC: can_dynamic, INT16: wide, FP16: fp16, FP32: True}
        ladder = tuple(p for p in PRECISIONS if offered[p] and p in allowed)
        out.append(MixedUnit(u.name, u.nodes, u.ops, ladder, u.nodes[0] if DYNAMIC in ladder else ""))
    if DYNAMIC not in allowed:
        return out
    quantized = set(plan.quantized_nodes)
    for node in model.graph.nodes:
        if node.name in quantized or node.op in excluded or any(re.fullmatch(p, node.name) for p in patterns):
            continue
        if dynamic_ok(model, node, dcfg):
            ladder = (DYNAMIC, FP16, FP32) if FP16 in allowed and _fp16_ok(node, main, ranges) else (DYNAMIC, FP32)
            out.append(MixedUnit(node.name, (node.name,), (node.op,), ladder, node.name, static=False))
    return out


def counts(precisions: Mapping[str, str]) -> dict[str, int]:
    """How many nodes take each precision (every precision present, zeros included)."""
    out = dict.fromkeys(PRECISIONS, 0)
    for p in precisions.values():
        out[p] = out.get(p, 0) + 1
    return out
