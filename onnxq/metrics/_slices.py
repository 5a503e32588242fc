"""Worst-slice metrics: SQNR or cosine per slice along an axis, and the worst slice reported.

A whole-tensor metric weighs every element by its magnitude, so the large-range part of an output
hides the rest: a detector output concatenating pixel boxes (hundreds) and probabilities (0..1)
keeps a whole-tensor cosine above 0.99 while the probabilities are ruined. Cutting the output into
slices along ``axis`` — every index (each output channel, each class row) or, with ``split``,
contiguous segments such as the inputs of a Concat (``split=4+80``: channels 0-3 and 4-83) — and
taking the *worst* slice's value means no slice can hide behind another.

For slice ``k`` over all samples (sums over every element of the slice):

- ``sqnr_k = 10 log10(Σ r² / Σ (r - c)²)``; ``cosine_k = Σ r·c / sqrt(Σ r² · Σ c²)``;
- the result is ``min_k`` of them. A slice that is exactly zero in the reference has no signal
  to compare against and is skipped (an unused class row must not fail the guard).

Memory: four running sums per slice, whatever the number of samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ConfigError
from ._base import Metric
from ._registry import register_metric
from ._tensor import cosine_of, sqnr_of

__all__ = ["WorstSliceSQNR", "WorstSliceCosine"]


@dataclass(frozen=True)
class _WorstSlice(Metric):
    """Parameters: ``axis`` (default 1, the channel axis of NCHW / [N, C, A] outputs) and ``split``
    (segment sizes along it; empty: every index is its own slice)."""

    axis: int = 1
    split: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if any(s < 1 for s in self.split):
            raise ConfigError(f"{self.name}: split sizes must be >= 1, got {'+'.join(map(str, self.split))}")

    def slice_value(self, dot: float, ref_sq: float, cand_sq: float, noise_sq: float) -> float:
        raise NotImplementedError

    def accumulator(self) -> _SliceSums:
        return _SliceSums(self)


class _SliceSums:
    """Per-slice Σ r·c, Σ r², Σ c², Σ (r - c)²."""

    def __init__(self, metric: _WorstSlice) -> None:
        self.metric = metric
        self.sums: np.ndarray | None = None  # [4, slices]
        self.worst: int | None = None

    def _slices(self, x: np.ndarray) -> np.ndarray:
        """[slices, elements-per-sample summed later] rows of ``x`` along the metric's axis."""
        m = self.metric
        if not -x.ndim <= m.axis < x.ndim:
            raise ConfigError(f"metric '{m.spec}': axis {m.axis} is out of range for an output of shape {list(x.shape)}")
        return np.moveaxis(x, m.axis, 0).reshape(x.shape[m.axis], -1)

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = self._slices(np.asarray(ref, dtype=np.float64))
        c = self._slices(np.asarray(cand, dtype=np.float64))
        d = r - c
        rows = np.stack([(r * c).sum(1), (r * r).sum(1), (c * c).sum(1), (d * d).sum(1)])
        split = self.metric.split
        if split:
            if sum(split) != r.shape[0]:
                raise ConfigError(
                    f"metric '{self.metric.spec}': split {'+'.join(map(str, split))} covers {sum(split)} of the {r.shape[0]} "
                    f"indices along axis {self.metric.axis}"
                )
            rows = np.add.reduceat(rows, np.cumsum((0, *split[:-1])), axis=1)
        if self.sums is None:
            self.sums = rows
        elif self.sums.shape != rows.shape:
            raise ConfigError(f"metric '{self.metric.spec}': {rows.shape[1]} slices in this sample, {self.sums.shape[1]} before")
        else:
            self.sums += rows

    def result(self) -> float | None:
        if self.sums is None:
            return None
        values = [(self.metric.slice_value(*col), k) for k, col in enumerate(self.sums.T.tolist()) if col[1] > 0]
        if not values:
            return None
        value, self.worst = min(values)
        return value

    def detail(self) -> str:
        """Which slice was the worst (after :meth:`result`)."""
        if self.worst is None:
            return ""
        split = self.metric.split
        if not split:
            return f"index {self.worst} along axis {self.metric.axis}"
        start = sum(split[: self.worst])
        return f"segment {self.worst} (indices {start}..{start + split[self.worst] - 1} along axis {self.metric.axis})"


@register_metric("worst_slice_sqnr")
@dataclass(frozen=True)
class WorstSliceSQNR(_WorstSlice):
    description: ClassVar[str] = "SQNR (dB) of the worst slice along an axis (per channel, or per segment with split=)"
    unit: ClassVar[float | None] = 10.0
    default_threshold: ClassVar[float | None] = 30.0

    def slice_value(self, dot: float, ref_sq: float, cand_sq: float, noise_sq: float) -> float:
        return sqnr_of(ref_sq, noise_sq)


@register_metric("worst_slice_cosine")
@dataclass(frozen=True)
class WorstSliceCosine(_WorstSlice):
    description: ClassVar[str] = "cosine of the worst slice along an axis (per channel, or per segment with split=)"
    default_threshold: ClassVar[float | None] = 0.97

    def slice_value(self, dot: float, ref_sq: float, cand_sq: float, noise_sq: float) -> float:
        return cosine_of(dot, ref_sq, cand_sq)
