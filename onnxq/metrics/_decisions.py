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
from ._base import Metric
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


class _Share:
    """Matches over a total: the result is their ratio (None while the total is 0)."""

    def __init__(self) -> None:
        self.match = 0
        self.total = 0

    def result(self) -> float | None:
        return self.match / self.total if self.total else None


@register_metric("top1")
@dataclass(frozen=True)
class Top1(Metric):
    description: ClassVar[str] = "share of rows whose arg-max along the class axis agrees"
    default_threshold: ClassVar[float | None] = 0.98
    axis: int = -1

    def accumulator(self) -> _Top1Acc:
        return _Top1Acc(self)


class _Top1Acc(_Share):
    def __init__(self, metric: Top1) -> None:
        super().__init__()
        self.metric = metric

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        axis = _class_axis(self.metric, ref, self.metric.axis)
        if axis is None:
            return
        same = np.argmax(ref, axis=axis) == np.argmax(cand, axis=axis)
        self.match += int(same.sum())
        self.total += same.size


@register_metric("sequence_agreement")
@dataclass(frozen=True)
class SequenceAgreement(Metric):
    description: ClassVar[str] = "share of sequences whose arg-max agrees at every position"
    default_threshold: ClassVar[float | None] = 0.98
    axis: int = -1
    batch_axis: int | None = 0

    def accumulator(self) -> _SequenceAcc:
        return _SequenceAcc(self)


class _SequenceAcc(_Share):
    def __init__(self, metric: SequenceAgreement) -> None:
        super().__init__()
        self.metric = metric

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        m = self.metric
        axis = _class_axis(m, ref, m.axis)
        if axis is None:
            return
        same = np.argmax(ref, axis=axis) == np.argmax(cand, axis=axis)
        if m.batch_axis is None:
            self.match += int(same.all())
            self.total += 1
            return
        if not -ref.ndim <= m.batch_axis < ref.ndim or m.batch_axis % ref.ndim == axis:
            raise ConfigError(f"metric '{m.spec}': batch_axis {m.batch_axis} must be another axis of the output's shape {list(ref.shape)}")
        batch = m.batch_axis % ref.ndim
        batch -= batch > axis  # the class axis is gone
        per_sequence = np.moveaxis(same, batch, 0).reshape(same.shape[batch], -1).all(axis=1)
        self.match += int(per_sequence.sum())
        self.total += per_sequence.size


@register_metric("topk")
@dataclass(frozen=True)
class TopK(Metric):
    description: ClassVar[str] = "mean overlap of the top-k sets along the class axis"
    default_threshold: ClassVar[float | None] = 0.98
    k: int = 5
    axis: int = -1

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"topk: k must be >= 1, got {self.k}")

    def accumulator(self) -> _TopKAcc:
        return _TopKAcc(self)


class _TopKAcc:
    def __init__(self, metric: TopK) -> None:
        self.metric = metric
        self.overlap = 0.0
        self.rows = 0

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        axis = _class_axis(self.metric, ref, self.metric.axis)
        if axis is None:
            return
        r, c = np.moveaxis(ref, axis, -1), np.moveaxis(cand, axis, -1)
        r, c = r.reshape(-1, r.shape[-1]), c.reshape(-1, c.shape[-1])
        k = min(self.metric.k, r.shape[1])
        top_r = np.argpartition(-r, k - 1, axis=1)[:, :k]
        top_c = np.argpartition(-c, k - 1, axis=1)[:, :k]
        hits = (top_r[:, :, None] == top_c[:, None, :]).any(axis=2).sum(axis=1)
        self.overlap += float(hits.sum()) / k
        self.rows += r.shape[0]

    def result(self) -> float | None:
        return self.overlap / self.rows if self.rows else None


@register_metric("threshold")
@dataclass(frozen=True)
class ThresholdAgreement(Metric):
    description: ClassVar[str] = "Jaccard index of the elements above t (e.g. detections) in reference and candidate"
    default_threshold: ClassVar[float | None] = 0.98
    t: float = 0.5

    def accumulator(self) -> _ThresholdAcc:
        return _ThresholdAcc(self.t)


class _ThresholdAcc:
    def __init__(self, t: float) -> None:
        self.t = t
        self.both = 0
        self.either = 0

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r, c = np.asarray(ref) > self.t, np.asarray(cand) > self.t
        self.both += int((r & c).sum())
        self.either += int((r | c).sum())

    def result(self) -> float | None:
        return self.both / self.either if self.either else 1.0
