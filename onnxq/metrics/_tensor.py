"""Whole-tensor metrics: cosine, SQNR, max and mean absolute error.

Over all samples, with ``r`` the reference and ``c`` the candidate flattened and concatenated:

- ``cosine = Σ r·c / sqrt(Σ r² · Σ c²)`` (1 when both are all zero, 0 when only one is);
- ``sqnr = 10 log10(Σ r² / Σ (r - c)²)`` dB (inf when equal);
- ``max_abs = max |r - c|``, ``mean_abs = Σ |r - c| / count``.

Cosine and SQNR are two views of one quantity for an error uncorrelated with the signal:
``cos ≈ 1 / sqrt(1 + 10^(-SQNR/10))``, so cosine 0.97 is about 12 dB and 0.999 about 27 dB. Both
are dominated by the tensor's largest values — which is why a small-range part of an output needs
the worst-slice metrics (:mod:`onnxq.metrics._slices`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._base import Accumulator, Direction, Metric
from ._registry import register_metric

__all__ = ["Cosine", "SQNR", "MaxAbs", "MeanAbs", "cosine_of", "sqnr_of"]


def cosine_of(dot: float, ref_sq: float, cand_sq: float) -> float:
    """``dot / sqrt(ref_sq · cand_sq)`` with the all-zero conventions of the module docstring."""
    if ref_sq == 0 and cand_sq == 0:
        return 1.0
    if ref_sq == 0 or cand_sq == 0:
        return 0.0
    return float(dot / math.sqrt(ref_sq * cand_sq))


def sqnr_of(ref_sq: float, noise_sq: float) -> float:
    """``10 log10(ref_sq / noise_sq)``: inf without noise, very negative for noise on a zero signal."""
    if noise_sq == 0:
        return math.inf
    return float(10 * math.log10(max(ref_sq, 1e-300) / noise_sq))


def _flat(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(ref, dtype=np.float64).ravel(), np.asarray(cand, dtype=np.float64).ravel()


class _Sums:
    """Σ r·c, Σ r², Σ c², Σ (r-c)², Σ |r-c|, max |r-c| and the element count."""

    def __init__(self) -> None:
        self.dot = self.ref_sq = self.cand_sq = self.noise_sq = self.abs_sum = self.max_abs = 0.0
        self.count = 0

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r, c = _flat(ref, cand)
        diff = r - c
        self.dot += float(r @ c)
        self.ref_sq += float(r @ r)
        self.cand_sq += float(c @ c)
        self.noise_sq += float(diff @ diff)
        if diff.size:
            magnitude = np.abs(diff)
            self.abs_sum += float(magnitude.sum())
            self.max_abs = max(self.max_abs, float(magnitude.max()))
        self.count += diff.size


class _SumsAccumulator:
    def __init__(self, read: type[_TensorMetric]) -> None:
        self.sums = _Sums()
        self.read = read

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        self.sums.update(ref, cand)

    def result(self) -> float | None:
        return self.read.value(self.sums)


@dataclass(frozen=True)
class _TensorMetric(Metric):
    """A metric read off the running sums of :class:`_Sums`."""

    @staticmethod
    def value(s: _Sums) -> float | None:
        raise NotImplementedError

    def accumulator(self) -> Accumulator:
        return _SumsAccumulator(type(self))


@register_metric("cosine")
@dataclass(frozen=True)
class Cosine(_TensorMetric):
    description: ClassVar[str] = "cosine similarity of the whole output over all samples"
    default_threshold: ClassVar[float | None] = 0.97

    @staticmethod
    def value(s: _Sums) -> float | None:
        return cosine_of(s.dot, s.ref_sq, s.cand_sq)


@register_metric("sqnr")
@dataclass(frozen=True)
class SQNR(_TensorMetric):
    description: ClassVar[str] = "signal-to-quantization-noise ratio of the whole output, dB"
    unit: ClassVar[float | None] = 10.0
    default_threshold: ClassVar[float | None] = 20.0

    @staticmethod
    def value(s: _Sums) -> float | None:
        return sqnr_of(s.ref_sq, s.noise_sq)


@register_metric("max_abs")
@dataclass(frozen=True)
class MaxAbs(_TensorMetric):
    direction: ClassVar[Direction] = "lower"
    description: ClassVar[str] = "largest absolute difference"
    unit: ClassVar[float | None] = None

    @staticmethod
    def value(s: _Sums) -> float | None:
        return s.max_abs


@register_metric("mean_abs")
@dataclass(frozen=True)
class MeanAbs(_TensorMetric):
    direction: ClassVar[Direction] = "lower"
    description: ClassVar[str] = "mean absolute difference"
    unit: ClassVar[float | None] = None

    @staticmethod
    def value(s: _Sums) -> float | None:
        return s.abs_sum / max(s.count, 1)
