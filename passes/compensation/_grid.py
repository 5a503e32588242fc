"""The integer grid a planned weight will be stored on, computed exactly as ``insert-qdq`` will compute it.

``insert-qdq`` stores a weight ``W`` as ``q = clip(round_half_even(W / s) + z, qmin, qmax)`` with
``s, z`` from the weight's own min/max (per tensor, or per output channel along the plan's axis;
:mod:`onnxq.calibration.qparams`), so ``W_q = s · (q - z)`` is known before any Q/DQ node exists.
Bias correction measures ``W_q - W``; AdaRound picks other integers on the same grid and writes
``s · (q - z)`` back as the float weight so that ``insert-qdq`` stores exactly them (see
:func:`on_grid`). Tests check :func:`weight_grid` against the integers ``insert-qdq`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxq.calibration.qparams import QUANT_DTYPES, compute_qparams_array, quant_grid
from onnxq.plan import WeightQuant

__all__ = ["Grid", "weight_grid", "on_grid"]


@dataclass(frozen=True)
class Grid:
    """Scale and zero point broadcastable onto the weight, and the integer bounds.

    ``qmin``/``qmax`` are what QuantizeLinear saturates to (the dtype's full range): the reduced or
    symmetric grids of :func:`~onnxq.calibration.qparams.quant_grid` only shape the scale.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    #: the grid ends the scale was chosen for: every weight lies within them
    lo: int
    hi: int

    def integers(self, w: np.ndarray) -> np.ndarray:
        """``clip(round_half_even(w / s) + z)`` in float32 arithmetic, as QuantizeLinear computes it."""
        q = np.rint(np.asarray(w, np.float32) / self.scale.astype(np.float32)) + self.zero_point
        return np.clip(q, self.qmin, self.qmax)

    def values(self, q: np.ndarray) -> np.ndarray:
        """``s · (q - z)``: the weight DequantizeLinear gives back for integers ``q``."""
        return ((q - self.zero_point) * self.scale.astype(np.float32)).astype(np.float32)

    def fake_quantize(self, w: np.ndarray) -> np.ndarray:
        """``W_q``: ``w`` quantized and dequantized on this grid."""
        return self.values(self.integers(w))


def weight_grid(w: np.ndarray, wq: WeightQuant) -> Grid:
    """The grid ``insert-qdq`` stores ``w`` on for plan entry ``wq`` (same rule, same float32 rounding)."""
    values = np.asarray(w, np.float32)
    if wq.axis is None:
        lo, hi = np.asarray(values.min()), np.asarray(values.max())
        shape: tuple[int, ...] = ()
    else:
        axis = wq.axis % values.ndim
        other = tuple(i for i in range(values.ndim) if i != axis)
        lo, hi = values.min(axis=other), values.max(axis=other)
        shape = tuple(-1 if i == axis else 1 for i in range(values.ndim))
    scale, zp = compute_qparams_array(lo, hi, wq.dtype, wq.symmetric, wq.reduce_range)
    qmin, qmax = QUANT_DTYPES[wq.dtype]
    grid = quant_grid(wq.dtype, wq.symmetric, wq.reduce_range)
    return Grid(scale.reshape(shape), zp.astype(np.float32).reshape(shape), qmin, qmax, grid.qmin, grid.qmax)


def on_grid(q: np.ndarray, grid: Grid, wq: WeightQuant) -> tuple[np.ndarray, int]:
    """Float weights that ``insert-qdq`` will store as exactly the integers ``q``, and how many differ.

    ``s · (q - z)`` lands on grid points; ``insert-qdq`` recomputes ``s`` from their min/max, which
    is the same scale as long as the extreme weights keep their round-to-nearest integers (AdaRound
    freezes them). The second value counts integers that would still come out differently (0
    unless a scale moved by more than float32 rounding); callers report it.
    """
    values = grid.values(q)
    again = weight_grid(values, wq)
    mismatched = int(np.count_nonzero(again.integers(values) != q))
    return values, mismatched
