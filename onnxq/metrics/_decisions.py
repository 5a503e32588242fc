"""Decision metrics: does the candidate make the same decisions as the reference?

A task reads scores through a decision — the arg-max class, the decoded string, the top-k set, the
detections above a score threshold — and these metrics compare decisions rather than numbers:

- ``top1``: share of rows (every index of the other axes) whose arg-max along the class ``axis``
  (default: last) is the same. Does not apply to non-float outputs or a class axis of size 1.
- ``sequence_agreement``: share of sequences whose arg-max is identical at *every* position. A
  sequence is one index along ``batch_axis`` (None: the whole sample) and its positions are the
  remaining axes. A CTC string or a tagged sentence is only right when every step is; a 2 %
  per-step disagreement spread over 40 steps changes about 1 - 0.98^40 = 55 % of sequences.
- ``topk``: mean over rows of ``|top_k(ref) ∩ top_k(cand)| / k`` (``k`` clamped to the axis size).
- ``threshold``: the Jaccard index ``|R ∩ C| / |R ∪ C|`` of the elements above ``t`` in the
  reference (R) and in the candidate (C), over all samples (1 when both are empty). On a score map
  it reads like detection agreement; unlike a per-element share it does not drown in the
  background's many far-below-threshold scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ConfigError
from ._base import Metric, RatioMetric
from ._registry import register_metric

__all__ = ["Top1", "SequenceAgreement", "TopK", "ThresholdAgreement"]


def _class_axis(metric: Metric, x: np.ndarray, axis: int) -> int | None:
    """``axis`` normalized, or None when the output has no usable class axis."""
    if not np.issubdtype(x.dtype, np.floating) or x.ndim == 0:
        return None
    if not -x.ndim <= axis < x.ndim:
        raise ConfigError(f"metric '{metric.spec}': axis {axis} is out of range for an output of shape {list(x.shape)}")
    axis %= x.ndim
    return axis if x.shape[axis] > 1 else None


@dataclass(frozen=True)
class _ArgmaxAgreement(RatioMetric):
    """Share of units whose arg-max along the class ``axis`` agrees; subclasses say what a unit is."""

    axis: int = -1

    def agreeing(self, same: np.ndarray, ref: np.ndarray, axis: int) -> np.ndarray | np.bool_:
        """One bool per unit from ``same`` (per-row arg-max agreement, the class axis gone)."""
        raise NotImplementedError

    def counts(self, ref: np.ndarray, cand: np.ndarray) -> tuple[float, int]:
        axis = _class_axis(self, ref, self.axis)
        if axis is None:
            return 0, 0
        units = self.agreeing(np.argmax(ref, axis=axis) == np.argmax(cand, axis=axis), ref, axis)
        return int(units.sum()), units.size


@register_metric("top1")
@dataclass(frozen=True)
class Top1(_ArgmaxAgreement):
    description: ClassVar[str] = "share of rows whose arg-max along the class axis agrees"
    default_threshold: ClassVar[float | None] = 0.98

    def agreeing(self, same: np.ndarray, ref: np.ndarray, axis: int) -> np.ndarray | np.bool_:
        return same


@register_metric("sequence_agreement")
@dataclass(frozen=True)
class SequenceAgreement(_ArgmaxAgreement):
    description: ClassVar[str] = "share of sequences whose arg-max agrees at every position"
    default_threshold: ClassVar[float | None] = 0.98
    batch_axis: int | None = 0

    def agreeing(self, same: np.ndarray, ref: np.ndarray, axis: int) -> np.ndarray | np.bool_:
        if self.batch_axis is None:
            return same.all()  # the whole sample is one sequence
        if not -ref.ndim <= self.batch_axis < ref.ndim or self.batch_axis % ref.ndim == axis:
            raise ConfigError(f"metric '{self.spec}': batch_axis {self.batch_axis} must be another axis of the output's shape {list(ref.shape)}")
        batch = self.batch_axis % ref.ndim
        batch -= batch > axis  # the class axis is gone
        return np.moveaxis(same, batch, 0).reshape(same.shape[batch], -1).all(axis=1)


@register_metric("topk")
@dataclass(frozen=True)
class TopK(RatioMetric):
    description: ClassVar[str] = "mean overlap of the top-k sets along the class axis"
    default_threshold: ClassVar[float | None] = 0.98
    k: int = 5
    axis: int = -1

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"topk: k must be >= 1, got {self.k}")

    def counts(self, ref: np.ndarray, cand: np.ndarray) -> tuple[float, int]:
        """(Σ over rows of the top-k overlap share, rows)."""
        axis = _class_axis(self, ref, self.axis)
        if axis is None:
            return 0, 0
        r, c = np.moveaxis(ref, axis, -1), np.moveaxis(cand, axis, -1)
        r, c = r.reshape(-1, r.shape[-1]), c.reshape(-1, c.shape[-1])
        k = min(self.k, r.shape[1])
        top_r = np.argpartition(-r, k - 1, axis=1)[:, :k]
        top_c = np.argpartition(-c, k - 1, axis=1)[:, :k]
        hits = (top_r[:, :, None] == top_c[:, None, :]).any(axis=2).sum(axis=1)
        return float(hits.sum()) / k, r.shape[0]


@register_metric("threshold")
@dataclass(frozen=True)
class ThresholdAgreement(RatioMetric):
    description: ClassVar[str] = "Jaccard index of the elements above t (e.g. detections) in reference and candidate"
    default_threshold: ClassVar[float | None] = 0.98
    empty: ClassVar[float | None] = 1.0  # no element above t in either: they agree
    t: float = 0.5

    def counts(self, ref: np.ndarray, cand: np.ndarray) -> tuple[float, int]:
        """(|R ∩ C|, |R ∪ C|) of one sample."""
        r, c = np.asarray(ref) > self.t, np.asarray(cand) > self.t
        return int((r & c).sum()), int((r | c).sum())
