"""Histogram observers: percentile, entropy (KL) and MSE searches over one histogram per channel.

They share :class:`_HistogramObserver`, which keeps an exact, mergeable
:class:`~onnxq.calibration._histogram.GrowableHistogram` of the non-extreme finite values per
channel; each method is only its :meth:`~_HistogramObserver._search` of that histogram. The
histogram maths (bins, folding, the searches themselves) live in :mod:`onnxq.calibration._histogram`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import numpy as np

from onnxq.calibration._histogram import (
    GrowableHistogram,
    entropy_threshold,
    fold_abs,
    mse_range,
    percentile_range,
)
from onnxq.calibration.qparams import QUANT_DTYPES, quant_grid
from onnxq.errors import ConfigError

from ._base import Observer, _Batch, _finite_or_zero, _Stats

__all__ = ["EntropyObserver", "MSEObserver", "PercentileObserver"]


def _channel_rows(x: np.ndarray, axis: int | None) -> np.ndarray:
    """``x`` as ``(channels, elements)`` rows (one copy at most; a view for per-tensor contiguous data)."""
    if axis is None:
        return x.reshape(1, -1)
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


class _HistogramObserver(Observer):
    """Shared machinery: one :class:`GrowableHistogram` per channel of the non-extreme finite values.

    Subclasses implement :meth:`_search`, which turns one channel's histogram into a range. Channels
    whose values were all extreme (or NaN/Inf) fall back to their finite min/max (or ``[0, 0]``).

    Args:
        bins: Target bin count (at most ``2 * bins`` bins are kept; see :mod:`onnxq.calibration._histogram`).
    """

    def __init__(self, *, bins: int = 2048, **options: Any) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int) or not 16 <= bins <= 1 << 20:
            raise ConfigError(f"bins must be an int in [16, 1048576], found {bins!r}")
        self._bins = bins
        super().__init__(**options)

    def _config(self) -> tuple[tuple[str, Any], ...]:
        return (("bins", self._bins), *super()._config())

    def _reset_state(self) -> None:
        self._hists: list[GrowableHistogram] = []

    def _observe(self, x: np.ndarray, axis: int | None, batch: _Batch) -> None:
        if not self._hists:
            self._hists = [GrowableHistogram(self._bins) for _ in range(batch.lo.size)]
        mask = batch.moderate_mask if batch.moderate_mask is not None else batch.finite_mask
        rows = _channel_rows(x, axis)
        mask_rows = None if mask is None else _channel_rows(mask, axis)
        for c, hist in enumerate(self._hists):
            if mask_rows is None:
                hist.add(rows[c], float(batch.lo[c]), float(batch.hi[c]))
            else:
                hist.add(rows[c][mask_rows[c]])  # rare path: min/max of the kept values recomputed

    def _merge_state(self, other: Any) -> None:
        if not self._hists:
            self._hists = [GrowableHistogram(self._bins) for _ in other._hists]
        for mine, theirs in zip(self._hists, other._hists):
            mine.merge(theirs)

    def _channel_ranges(self, stats: _Stats) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = _finite_or_zero(stats.data_min, stats.data_max)
        for c, hist in enumerate(self._hists):
            if not hist.is_empty:
                lo[c], hi[c] = self._search(hist)
        return lo, hi

    @abstractmethod
    def _search(self, hist: GrowableHistogram) -> tuple[float, float]:
        """The method's range for one channel's histogram."""

    def _histogram(self) -> Any:
        """The per-tensor histogram (channel histograms merged exactly), or None."""
        if not self._hists:
            return None
        merged = self._hists[0].copy()
        for hist in self._hists[1:]:
            merged.merge(hist)
        return merged.to_histogram()

    def _state_nbytes(self) -> int:
        return sum(h.nbytes for h in self._hists)


class PercentileObserver(_HistogramObserver):
    """Two-sided percentile clipping: ``[value at (100-p)%, value at p%]`` of the histogram's CDF.

    Interpolated within a bin, clamped to the data, ``min = 0`` for non-negative data (see
    :func:`percentile_range`). Merging is exact, so shards give the same range as one pass.

    Args:
        percentile: ``p`` in (50, 100]; 100 gives the (histogram-resolution) min-max range.
    """

    method = "percentile"

    def __init__(self, percentile: float = 99.999, **options: Any) -> None:
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 50 < percentile <= 100:
            raise ConfigError(f"percentile must be in (50, 100], found {percentile!r}")
        self._percentile = float(percentile)
        super().__init__(**options)

    def _config(self) -> tuple[tuple[str, Any], ...]:
        return (("percentile", self._percentile), *super()._config())

    def _search(self, hist: GrowableHistogram) -> tuple[float, float]:
        return percentile_range(hist.counts, hist.origin, hist.width, self._percentile, hist.lo, hist.hi)


def _check_dtype(target_dtype: str) -> None:
    if target_dtype not in QUANT_DTYPES:
        raise ConfigError(f"target_dtype must be one of {', '.join(QUANT_DTYPES)}, found {target_dtype!r}")


class EntropyObserver(_HistogramObserver):
    """TensorRT-style KL-divergence (entropy) calibration, symmetric in ``|x|``.

    The signed histogram is folded into a histogram of ``|x|`` (at most ``2 * bins`` bins from 0) and
    :func:`entropy_threshold` picks ``T`` minimizing ``KL(P || Q)`` over all candidate thresholds. The
    range is ``[max(-T, lo), min(T, hi)]`` (``min = 0`` for non-negative data).

    Why ``|x|`` rather than a two-sided search: the int8 grid calibrated this way is symmetric, the
    search stays one-dimensional (all candidates, vectorized), and it is the variant TensorRT and
    onnxruntime ship. For one-sided data it is the exact one-sided search (``|x| = x``); for skewed
    signed data the clamp to ``[lo, hi]`` keeps the short side from being stretched.

    Args:
        target_dtype: Integer type the tensor will be quantized to.
        num_quantized_bins: Quantization levels of ``|x|``. Default: 128 for 8-bit types, but 255 for
            ``uint8`` when the data are non-negative (the whole grid then covers ``[0, T]``); 32768 /
            65535 for 16-bit types (finer than the histogram: no clipping).
    """

    method = "entropy"

    def __init__(self, target_dtype: str = "int8", num_quantized_bins: int | None = None, **options: Any) -> None:
        _check_dtype(target_dtype)
        if num_quantized_bins is not None and (
            isinstance(num_quantized_bins, bool) or not isinstance(num_quantized_bins, int) or num_quantized_bins < 2
        ):
            raise ConfigError(f"num_quantized_bins must be an int >= 2 or None, found {num_quantized_bins!r}")
        self._target_dtype = target_dtype
        self._num_quantized_bins = num_quantized_bins
        super().__init__(**options)

    def _config(self) -> tuple[tuple[str, Any], ...]:
        return (
            ("target_dtype", self._target_dtype),
            ("num_quantized_bins", self._num_quantized_bins),
            *super()._config(),
        )

    def _levels(self, non_negative: bool) -> int:
        """Quantization levels available for ``|x|`` (see the class docstring)."""
        if self._num_quantized_bins is not None:
            return self._num_quantized_bins
        qmin, qmax = QUANT_DTYPES[self._target_dtype]
        if non_negative and qmin == 0:
            return qmax
        return (qmax - qmin + 1) // 2

    def _search(self, hist: GrowableHistogram) -> tuple[float, float]:
        assert hist.k is not None
        abs_counts, k_abs = fold_abs(hist.counts, hist.start, hist.k, hist.cap)
        threshold = entropy_threshold(abs_counts, math.ldexp(1.0, k_abs), self._levels(hist.lo >= 0.0))
        rmin = 0.0 if hist.lo >= 0.0 else min(max(-threshold, hist.lo), hist.hi)
        rmax = min(max(threshold, hist.lo), hist.hi)
        return rmin, max(rmin, rmax)


class MSEObserver(_HistogramObserver):
    """Clip range minimizing the expected squared quantization error on the target integer grid.

    See :func:`mse_range`: ``num_candidates`` shrink factors of the data range (both ends searched
    jointly when asymmetric), error = rounding noise ``step**2 / 12`` inside plus squared clipping
    error outside, ties to the wider range.

    Args:
        target_dtype: Integer type (sets the grid: 255 steps for 8-bit, 254 for symmetric int8, ...).
        symmetric: Search symmetric ranges ``[-t, t]`` (for symmetric quantization).
        num_candidates: Shrink factors per end, ``k / num_candidates`` for ``k = 1..num_candidates``.
    """

    method = "mse"

    def __init__(
        self, target_dtype: str = "uint8", symmetric: bool = False, num_candidates: int = 128, **options: Any
    ) -> None:
        _check_dtype(target_dtype)
        if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or not 1 <= num_candidates <= 4096:
            raise ConfigError(f"num_candidates must be an int in [1, 4096], found {num_candidates!r}")
        self._target_dtype = target_dtype
        self._symmetric = bool(symmetric)
        self._num_candidates = num_candidates
        super().__init__(**options)

    def _config(self) -> tuple[tuple[str, Any], ...]:
        return (
            ("target_dtype", self._target_dtype),
            ("symmetric", self._symmetric),
            ("num_candidates", self._num_candidates),
            *super()._config(),
        )

    def _search(self, hist: GrowableHistogram) -> tuple[float, float]:
        levels = quant_grid(self._target_dtype, self._symmetric).levels
        return mse_range(
            hist.counts, hist.origin, hist.width, hist.lo, hist.hi, levels, self._symmetric, self._num_candidates
        )
