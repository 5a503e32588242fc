"""How each precision of a mixed-precision plan is written into a model (:mod:`._mixed_units` says who gets which).

- ``int8``: the static plan's Q/DQ, as ``insert-qdq`` materializes it.
- ``int16``: :func:`widen_activations` rewrites the static plan before it is materialized: every
  activation tensor an ``int16`` node reads or writes gets the 16-bit type (and so does every
  tensor sharing its scale: a share group has one type), as do constants quantized in the
  activation type; weights and int32 biases stay as planned. A tensor between an ``int8`` and an
  ``int16`` unit is 16-bit: the int16 unit keeps its precision, the int8 neighbour loses its fused
  kernel there (the search measures what that costs).
- ``dynamic-int8``: :func:`apply_dynamic`, after the plan is materialized (a dynamic node is float
  in the plan), rewrites the node as quantize-dynamic does.
- ``fp16``: :func:`apply_fp16`, after that, runs ``convert-float16`` with every other node blocked
  and ``storage_only=False``: the unit's nodes compute in float16 (onnxruntime wraps nodes without a
  float16 CPU kernel in Casts to float32), their float constants are stored in float16, and Casts
  sit where a float16 region meets float32 (a DequantizeLinear output, a graph output). Constants a
  blocked node also reads stay bit-exact float32 for it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from onnxq import ir
from onnxq.ir import Model
from onnxq.pass_base import PassContext
from onnxq.plan import QuantizationConfig, QuantPlan

from . import convert_float16
from .convert_float16 import ConvertFloat16, ConvertFloat16Config
from .quantize_dynamic import DynamicRewriter, QuantizeDynamicConfig, plan_dynamic_matmul

__all__ = ["dynamic_config", "dynamic_ok", "apply_dynamic", "widen_activations", "apply_fp16", "node_precisions"]

_DYNAMIC_OPS = frozenset({"MatMul", "Gemm", "LSTM"})


def dynamic_config(cfg: QuantizationConfig | None, fmt: str = "fused") -> QuantizeDynamicConfig:
    """quantize-dynamic's options for the units the search makes dynamic: every size (the search
    measures whether it pays), no latency guard of its own (the search times the whole plan).

    7-bit weights only when the static config asks for them everywhere; otherwise quantize-dynamic
    decides by its own kernel (``reduce_range=None``): a ``False`` here is the answer for the static
    kernels (``choose-weight-range`` writes it after measuring them per node), and the dynamic
    kernels (u8·s8 DynamicQuantizeMatMul / LSTM) saturate on their own terms on CPUs without VNNI.
    """
    per_channel = cfg.per_channel if cfg is not None else True
    reduce_range = True if cfg is not None and cfg.reduce_range else None
    return QuantizeDynamicConfig(per_channel=per_channel, format=fmt, min_weight_elements=0, reduce_range=reduce_range, guard_latency=False)  # type: ignore[arg-type]


def dynamic_ok(model: Model, node: ir.Node, dcfg: QuantizeDynamicConfig) -> bool:
    """Whether quantize-dynamic can rewrite ``node`` (a constant-weight MatMul/Gemm, or an LSTM)."""
    if node.op not in _DYNAMIC_OPS or node.domain:
        return False
    if node.op == "LSTM":
        w, r = (ir.constant_array(node.inputs[i]) if len(node.inputs) > i else None for i in (1, 2))
        return w is not None and r is not None and w.ndim == 3 and r.ndim == 3 and not node.attrs.get("layout", 0)
    return not isinstance(plan_dynamic_matmul(model.graph, node, dcfg), str)


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


def widen_activations(model: Model, plan: QuantPlan, nodes: Collection[str], wide: str, narrow: str) -> int:
    """Give the activations of ``nodes`` (quantized in ``plan``) the 16-bit type ``wide``, in place.

    ``narrow`` is the plan's activation type: constants quantized in it (activation-role inputs of
    Add/Mul/Concat...) of those nodes are widened too. Returns how many activation tensors changed.
    """
    wanted = set(nodes)
    if not wanted:
        return 0
    touched = {t.name for n in ir.iter_nodes(model.graph) if n.name in wanted for t in [*n.inputs, *n.outputs] if t.name}
    groups = {tq.group for name, tq in plan.activations.items() if name in touched}
    changed = 0
    for tq in plan.activations.values():
        if tq.name in touched or tq.group in groups:
            tq.dtype = wide
            changed += 1
    for w in plan.weights:
        if w.kind == "weight" and w.node in wanted and w.dtype == narrow and w.axis is None and w.derived_from is None:
            w.dtype = wide
    return changed


def apply_fp16(model: Model, nodes: Collection[str], *, quiet: bool = False) -> dict[str, str]:
    """Compute ``nodes`` (of the main graph) in float16, everything else as it is; in place.

    ``quiet``: no warnings about values clamped to float16's range (a search's candidates would
    repeat the shipped model's warning once per candidate). Returns the nodes that stayed float32,
    with the reason (no float16 schema for the op, ...).
    """
    wanted = set(nodes)
    if not wanted:
        return {}
    all_nodes = list(ir.iter_nodes(model.graph))
    if any(not n.name for n in all_nodes):
        return dict.fromkeys(sorted(wanted), "the model has unnamed nodes (they could not be kept float32)")
    blocked = tuple(sorted(n.name for n in all_nodes if n.name not in wanted))
    cfg = ConvertFloat16Config(storage_only=False, node_block_list=blocked, keep_io_types=True)
    with _quieted(logging.getLogger(convert_float16.__name__), quiet):
        ConvertFloat16(cfg).run(model, PassContext())
    ir.normalize(model)
    half = np.dtype(np.float16)
    refused: dict[str, str] = {}
    for node in ir.iter_nodes(model.graph):
        if node.name in wanted and not any(t.name and t.dtype is not None and np.dtype(t.dtype) == half for t in node.outputs):
            refused[node.name] = "convert-float16 kept it float32 (no float16 variant of the op, or of this tensor's type)"
    return refused


@contextmanager
def _quieted(logger: logging.Logger, quiet: bool) -> Iterator[None]:
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def node_precisions(plan: QuantPlan, precisions: Mapping[str, str]) -> dict[str, str]:
    """What each node of ``precisions`` gets in the model: its precision, or ``fp32`` where it asked
    for ``int8``/``int16`` and the static plan left it float (a glue node with no quantized neighbour)."""
    quantized = set(plan.quantized_nodes)
    return {n: (p if p not in ("int8", "int16") or n in quantized else "fp32") for n, p in precisions.items()}
