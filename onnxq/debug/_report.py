"""The layer-wise error report: one row per compared tensor, the first jumps and the blame ranking.

Per tensor (JSON keys of :meth:`TensorStats.as_dict`): ``tensor`` (the float twin's name), ``layer``
(QUANT's node computing it) and ``op``, ``matched_by``, ``sqnr`` / ``cosine`` / ``max_abs`` /
``mean_abs`` of QUANT's value (accumulated error), ``local_sqnr`` / ``local_max_abs`` (the layer fed
float inputs, :mod:`._local`), ``quantization`` (dtype, scale, zero point, the range they represent;
None for a float output), ``observed`` (the float range seen), ``saturation`` (share of float values
clipped), ``input_sqnr`` (the worst SQNR among the compared tensors it reads), ``jump`` (``input_sqnr
- sqnr``) and ``first_jump``.

**Jumps**: a tensor whose SQNR is more than ``jump_db`` below its inputs' is where error jumps. The
drop is measured from ``min(input SQNR, EXACT_INPUT_DB)``: a tensor reading only exact values (graph
inputs) starts from :data:`EXACT_INPUT_DB`, about what a well-used 8-bit grid gives, so a first layer
is flagged only when it is clearly worse than rounding, and a drop from excellent inputs (16-bit
ones) to a still excellent tensor is not a jump.
``first_jumps`` lists the flagged tensors none of whose upstream compared tensors is flagged: where
each jump starts. **Blame** ranks the tensors by local SQNR, worst first: the layer that *adds* the
most error, whatever reached it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._match import Unmatched

__all__ = ["TensorStats", "LayerReport", "EXACT_INPUT_DB", "SCHEMA_VERSION"]

#: SQNR credited to exact inputs when measuring a jump (about what 8-bit rounding of a well-ranged
#: tensor gives: 6.02 dB per bit less the crest factor of real activations).
EXACT_INPUT_DB = 40.0
#: Version of the JSON layout of :meth:`LayerReport.to_dict`.
SCHEMA_VERSION = 1


@dataclass
class TensorStats:
    """The measurements of one compared tensor (see the module docstring)."""

    tensor: str
    quant_tensor: str
    layer: str
    op: str
    matched_by: str
    order: int
    sqnr: float | None = None
    cosine: float | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    local_sqnr: float | None = None
    local_max_abs: float | None = None
    quantization: dict[str, Any] | None = None
    observed: tuple[float, float] | None = None
    saturation: float | None = None
    inputs: list[str] = field(default_factory=list)
    input_sqnr: float | None = None
    jump: float | None = None
    first_jump: bool = False
    segment_ops: list[str] = field(default_factory=list)
    #: histogram of the float values: (bin edges, counts); for the HTML page, not the JSON
    histogram: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    #: |float - quantized| on one 2-D slice of the first sample, and which slice
    error_map: np.ndarray | None = field(default=None, repr=False)
    map_caption: str = ""

    @property
    def range_used(self) -> tuple[float, float] | None:
        """The real range the scale and zero point represent (None for a float output)."""
        if not self.quantization:
            return None
        lo, hi = self.quantization["range"]
        return float(lo), float(hi)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "quant_tensor": self.quant_tensor,
            "layer": self.layer,
            "op": self.op,
            "segment_ops": self.segment_ops,
            "matched_by": self.matched_by,
            "sqnr": _num(self.sqnr),
            "cosine": _num(self.cosine),
            "max_abs": _num(self.max_abs),
            "mean_abs": _num(self.mean_abs),
            "local_sqnr": _num(self.local_sqnr),
            "local_max_abs": _num(self.local_max_abs),
            "quantization": self.quantization,
            "observed": list(self.observed) if self.observed else None,
            "saturation": _num(self.saturation),
            "inputs": self.inputs,
            "input_sqnr": _num(self.input_sqnr),
            "jump": _num(self.jump),
            "first_jump": self.first_jump,
        }


def _num(value: float | None) -> float | str | None:
    """JSON has no infinity: ``inf`` (no error at all) is written as the string ``"inf"``."""
    if value is None:
        return None
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return round(float(value), 6)


@dataclass
class LayerReport:
    """What :func:`onnxq.debug.compare_layers` measured (see the module docstring)."""

    float_model: str
    quant_model: str
    tensors: list[TensorStats]
    unmatched: list[Unmatched]
    quantized: int
    samples: int = 0
    jump_db: float = 10.0
    groups: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def first_jumps(self) -> list[TensorStats]:
        """Where error jumps first (topological order)."""
        return [t for t in self.tensors if t.first_jump]

    def blame(self) -> list[TensorStats]:
        """Tensors by local SQNR, worst first (those without a local measurement last)."""
        return sorted(self.tensors, key=lambda t: (t.local_sqnr is None, t.local_sqnr if t.local_sqnr is not None else 0.0, t.order))

    def worst(self, n: int) -> list[TensorStats]:
        """The ``n`` tensors to show first: the blame ranking's head."""
        return self.blame()[:n]

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """The JSON form (``schema_version`` first)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "float_model": self.float_model,
            "quant_model": self.quant_model,
            "samples": self.samples,
            "quantized_tensors": self.quantized,
            "matched": len(self.tensors),
            "unmatched": [u.as_dict() for u in self.unmatched],
            "jump_db": self.jump_db,
            "first_jumps": [t.tensor for t in self.first_jumps],
            "blame": [{"tensor": t.tensor, "layer": t.layer, "local_sqnr": _num(t.local_sqnr)} for t in self.blame()[:top]],
            "groups": self.groups,
            "seconds": round(self.seconds, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "notes": self.notes,
            "tensors": [t.as_dict() for t in self.tensors],
        }


def mark_jumps(tensors: list[TensorStats], jump_db: float) -> None:
    """Fill ``input_sqnr``, ``jump`` and ``first_jump`` (see the module docstring)."""
    by_name = {t.quant_tensor: t for t in tensors}
    flagged: set[str] = set()
    upstream_flagged: dict[str, bool] = {}
    for t in sorted(tensors, key=lambda s: s.order):
        ins = [by_name[i] for i in t.inputs if i in by_name]
        known = [i.sqnr for i in ins if i.sqnr is not None]
        t.input_sqnr = min(known) if known else None
        base = min(t.input_sqnr, EXACT_INPUT_DB) if t.input_sqnr is not None else EXACT_INPUT_DB
        if t.sqnr is not None and not math.isinf(t.sqnr):
            t.jump = base - t.sqnr
        above = any(i.quant_tensor in flagged or upstream_flagged.get(i.quant_tensor, False) for i in ins)
        upstream_flagged[t.quant_tensor] = above
        if t.jump is not None and t.jump > jump_db:
            flagged.add(t.quant_tensor)
            t.first_jump = not above
