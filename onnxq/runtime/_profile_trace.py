"""Reading onnxruntime's profiler trace for :mod:`.profile`: node categories and per-node medians.

The trace (``InferenceSession.end_profiling()``) is a JSON list of events. ``Session`` events named
``model_run`` bound each run; ``Node`` events named ``<node>_kernel_time`` carry a kernel call's
duration (µs), the op type onnxruntime ran (``args.op_name``) and the element types of its inputs
and outputs (``args.input_type_shape`` / ``output_type_shape``). Categories are defined in
:mod:`.profile`'s docstring.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CATEGORIES", "CATEGORY_LABELS", "FLOAT_TYPES", "NodeTime", "categorize", "node_times", "share"]

#: Categories in report order, and how tables spell them.
CATEGORIES = ("int8_compute", "float_compute", "conversions", "layout", "rest")
CATEGORY_LABELS = {"int8_compute": "int8 compute", "float_compute": "float compute", "conversions": "conversions (Q/DQ/Cast)",
                   "layout": "layout (data movement)", "rest": "rest"}  # fmt: skip

_INT8_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "ConvInteger", "QGemm", "DynamicQuantizeMatMul",
    "QAttention", "QEmbedLayerNormalization", "DynamicQuantizeLSTM", "MatMulNBits", "MatMulBnb4", "GatherBlockQuantized",
    "QLinearConvTranspose", "QuantizedConv",
})  # fmt: skip
_CONVERSION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast", "CastLike"})
_LAYOUT_OPS = frozenset({
    "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND",
    "Pad", "Tile", "Expand", "DepthToSpace", "SpaceToDepth", "Identity", "ReorderInput", "ReorderOutput",
})  # fmt: skip
_SHAPE_OPS = frozenset({"Shape", "Size", "Range", "ConstantOfShape", "EyeLike", "NonZero", "RandomNormalLike", "RandomUniformLike"})
FLOAT_TYPES = frozenset({"float", "float16", "double", "bfloat16"})
_INT8_TYPES = frozenset({"int8", "uint8", "int4", "uint4"})
_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


def categorize(op_type: str, input_type: str | None) -> str:
    """The category of a node onnxruntime ran (defined in :mod:`onnxq.runtime.profile`).

    Args:
        op_type: the op type as onnxruntime reports it (``op_name`` of the trace event).
        input_type: the element type of its first input as the trace spells it (``float``,
            ``uint8``...), or None when it has no input.
    """
    if op_type in _CONVERSION_OPS:
        return "conversions"
    if op_type in _LAYOUT_OPS:
        return "layout"
    if op_type in _INT8_OPS or op_type.startswith("QLinear"):
        return "int8_compute"
    if op_type in _SHAPE_OPS or op_type in _CONTROL_FLOW:
        return "rest"
    if input_type in _INT8_TYPES:
        return "int8_compute"
    if input_type in FLOAT_TYPES:
        return "float_compute"
    return "rest"


@dataclass(frozen=True)
class NodeTime:
    """One executed node: its median time per run (ms) and what it is."""

    name: str
    op_type: str
    category: str
    ms: float
    output_types: tuple[str, ...] = ()

    def as_dict(self, total_ms: float) -> dict[str, Any]:
        return {"node": self.name, "op_type": self.op_type, "category": self.category, "ms": round(self.ms, 4), "share": share(self.ms, total_ms)}


def node_times(trace: list[dict[str, Any]], warmup: int) -> tuple[list[NodeTime], float, int]:
    """Median ms per executed node over the runs after ``warmup``, the median run time, the runs kept."""
    windows = sorted((int(e["ts"]), int(e["ts"]) + int(e["dur"])) for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")
    kept = windows[warmup:]
    starts = [w[0] for w in kept]
    per_run: dict[str, list[float]] = {}
    info: dict[str, tuple[str, str, str | None, tuple[str, ...]]] = {}
    for e, self_us in _self_times(e for e in trace if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")):
        i = bisect.bisect_right(starts, int(e["ts"])) - 1
        if i < 0 or int(e["ts"]) > kept[i][1]:
            continue  # a warm-up run
        args = e.get("args", {})
        op = str(args.get("op_name", "?"))
        node = e["name"][: -len("_kernel_time")] or f"<{op} #{args.get('node_index', '?')}>"
        key = f"{node}\0{args.get('node_index', '')}"
        per_run.setdefault(key, [0.0] * len(kept))[i] += self_us / 1000.0
        if key not in info:
            inputs = [next(iter(d), None) for d in args.get("input_type_shape", []) if isinstance(d, dict)]
            outputs = tuple(next(iter(d), "") for d in args.get("output_type_shape", []) if isinstance(d, dict))
            info[key] = (node, op, inputs[0] if inputs else None, outputs)
    nodes = [NodeTime(nm, op, categorize(op, dtype), float(np.median(per_run[key])), outs) for key, (nm, op, dtype, outs) in info.items()]
    nodes.sort(key=lambda n: (-n.ms, n.name))
    run_ms = float(np.median([(b - a) / 1000.0 for a, b in kept])) if kept else 0.0
    return nodes, run_ms, len(kept)


def _self_times(events: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    """Each kernel event with its own time (µs): a control-flow node's event spans the events of
    the subgraph nodes it ran, which are counted as themselves, so only the rest is its own."""
    ordered = sorted(events, key=lambda e: (int(e["ts"]), -int(e["dur"])))
    own = [float(e["dur"]) for e in ordered]
    open_: list[int] = []  # indices of control-flow events whose window is still open
    for k, e in enumerate(ordered):
        ts = int(e["ts"])
        while open_ and int(ordered[open_[-1]]["ts"]) + int(ordered[open_[-1]]["dur"]) <= ts:
            open_.pop()
        if open_:
            own[open_[-1]] -= float(e["dur"])  # the innermost open one is the parent
        if e.get("args", {}).get("op_name") in _CONTROL_FLOW:
            open_.append(k)
    return [(e, max(t, 0.0)) for e, t in zip(ordered, own)]


def share(ms: float, total: float) -> float:
    """``ms / total`` rounded for reports (0 when nothing was timed)."""
    return round(ms / total, 4) if total > 0 else 0.0
