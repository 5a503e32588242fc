"""SmoothQuant's migration strength chosen per LayerNorm group: the ``α`` whose int8 MatMuls err least.

One ``α`` for a whole model is a compromise: a group whose activations have strong outliers wants
``α`` near 1 (move them into the weights), one whose weights already have outlier rows wants it
near 0. For each LayerNorm → MatMuls group and each candidate ``α`` of the grid, with
``s = a^α / w^(1-α)`` (:func:`~.smooth_activations.smoothing_scales`) and rows ``X`` of the
LayerNorm's output sampled from the calibration data::

    err(α) = Σ_MatMuls || Q_a(X / s) · Q_w(s ⊙ W) - X · W ||²

where ``Q_a`` quantizes per tensor to uint8 on the calibrated range of ``X / s`` (from the
per-channel min/max the pass measures anyway) and ``Q_w`` per output channel to symmetric int8
(7-bit where onnxruntime's int8 GEMM saturates on this CPU, as ``annotate-quantization``'s default
decides). The ``α`` with the smallest error wins; ties keep the first (the grid's order).

Time bound: a :class:`SearchBudget` shared by every group of one pass is checked before each
candidate. Once it is spent, the remaining candidates are skipped: a group keeps the best of
those it evaluated, or the caller's fallback ``α`` when it evaluated none, and the budget records
that it cut the search short (``search_cut_short``) and the seconds spent (``search_seconds``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from onnxq.calibration.expose import expose_tensors
from onnxq.calibration.qparams import compute_qparams, compute_qparams_array, dequantize, quantize
from onnxq.errors import CalibrationError
from onnxq.ir import Model
from onnxq.runtime.kernels import resolve_reduce_range
from onnxq.runtime.session import make_session, run_session

__all__ = ["SearchBudget", "int8_matmul_error", "best_alpha", "sample_rows"]


@dataclass
class SearchBudget:
    """Wall-clock seconds for every alpha search of one pass (``seconds=None``: unbounded).

    The clock starts when the budget is made; ``cut_short`` becomes true when a candidate is
    skipped for lack of time.
    """

    seconds: float | None = None
    start: float = field(default_factory=time.perf_counter)
    cut_short: bool = False

    @property
    def spent(self) -> float:
        """Seconds since the budget was made."""
        return time.perf_counter() - self.start

    def exhausted(self) -> bool:
        """Whether the seconds are spent (never, without a limit)."""
        return self.seconds is not None and self.spent >= self.seconds

    def as_stats(self) -> dict[str, float | bool]:
        """``search_seconds`` spent and ``search_cut_short``, for the pass's stats."""
        return {"search_seconds": round(self.spent, 3), "search_cut_short": self.cut_short}


def sample_rows(model: Model, names: Sequence[str], data: Iterable[Mapping[str, np.ndarray]], samples: int, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Up to ``rows`` rows (vectors along the last axis) of each tensor, drawn evenly from the first
    ``samples`` calibration samples (seeded), one onnxruntime run per sample."""
    exposed = expose_tensors(model, list(names))
    if exposed.unreachable:
        name, why = next(iter(exposed.unreachable.items()))
        raise CalibrationError(f"{model.source}: cannot read tensor '{name}' for the alpha search: {why}")
    session = make_session(exposed.model, where=f"{model.source} (smoothing alpha search)")
    outputs = list(exposed.output_to_tensor)
    rng = np.random.default_rng(seed)
    per_sample = max(1, -(-rows // samples))
    kept: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for sample in islice(data, samples):
        for out, value in zip(outputs, run_session(session, dict(sample), outputs)):
            flat = value.reshape(-1, value.shape[-1]).astype(np.float64)
            pick = rng.choice(len(flat), size=min(per_sample, len(flat)), replace=False)
            kept[exposed.output_to_tensor[out]].append(flat[np.sort(pick)])
    return {n: np.concatenate(v)[:rows] for n, v in kept.items() if v}


def int8_matmul_error(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, weights: Sequence[np.ndarray], s: np.ndarray) -> float:
    """``Σ || Q_a(X/s) Q_w(s ⊙ W) - X W ||²`` (see the module docstring); ``lo``/``hi``: per-channel range of ``X``."""
    xs = x / s
    scale, a_zp = compute_qparams(float(np.min(lo / s)), float(np.max(hi / s)), "uint8", False)
    a_scale = float(scale)
    xq = dequantize(quantize(xs, a_scale, a_zp, "uint8"), a_scale, a_zp).astype(np.float64)
    reduce_range, _ = resolve_reduce_range(None, "uint8", "int8")
    total = 0.0
    for w in weights:
        ws = w * s[:, None]
        w_scale, w_zp = compute_qparams_array(ws.min(axis=0), ws.max(axis=0), "int8", True, reduce_range)
        wq = dequantize(quantize(ws, w_scale, w_zp, "int8", axis=1), w_scale, w_zp, axis=1).astype(np.float64)
        total += float(np.sum((xq @ wq - x @ w) ** 2))
    return total


def best_alpha(
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    weights: Sequence[np.ndarray],
    grid: Sequence[float],
    scales_for: Callable[[float], np.ndarray],
    *,
    budget: SearchBudget | None = None,
    fallback: float | None = None,
) -> tuple[float, dict[float, float]]:
    """The grid's ``α`` with the smallest :func:`int8_matmul_error`, and every evaluated ``α``'s error.

    ``scales_for(α)`` returns the smoothing scales of that ``α`` for this group. With a ``budget``,
    candidates after it is spent are skipped (see the module docstring): the best evaluated one
    wins, or ``fallback`` when none was (without a fallback the first candidate is always evaluated).
    """
    errors: dict[float, float] = {}
    for a in grid:
        if budget is not None and budget.exhausted() and (errors or fallback is not None):
            budget.cut_short = True
            break
        errors[float(a)] = int8_matmul_error(x, lo, hi, weights, scales_for(a))
    if not errors:  # a spent budget with a fallback, or an empty grid
        if fallback is None:
            raise ValueError("best_alpha: no candidate alpha to evaluate")
        return fallback, errors
    best = min(errors, key=lambda a: errors[a])
    return best, errors
