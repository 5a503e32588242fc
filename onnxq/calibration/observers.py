"""Range observers: streaming statistics that turn calibration activations into a :class:`TensorRange`.

Every observer has the same life cycle: ``update(array)`` per calibration batch, ``compute_range()``
at the end, ``merge(other)`` to combine observers that saw different shards of the data (parallel
calibration), ``reset()`` to start over. ``per_channel_axis=a`` keeps one range per index along axis
``a`` (reducing over all other axes) in addition to the per-tensor one.

Data hygiene, common to all observers:

* NaN/Inf elements are counted in ``TensorRange.nonfinite`` and excluded from every statistic; the
  collector decides whether that is an error.
* Finite elements with ``|x| >= EXTREME_ABS`` (1e30; e.g. the -3.4e38 of attention masks) are counted in
  ``TensorRange.extreme``. They stay in ``data_min``/``data_max`` and in the min-max observers' ranges,
  but are left out of histograms, where they would stretch every bin to uselessness.

Methods:

* ``minmax``: exact running min/max.
* ``moving-average``: exponential moving average of per-batch min/max.
* ``percentile``, ``entropy``, ``mse``: a search over an exact, mergeable histogram
  (:mod:`onnxq.calibration._histogram`) for a clipping range that ignores rare outliers.
"""

from __future__ import annotations

import inspect
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from onnxq.calibration._histogram import (
    GrowableHistogram,
    entropy_threshold,
    fold_abs,
    mse_range,
    percentile_range,
)
from onnxq.calibration.qparams import QUANT_DTYPES, quant_grid
from onnxq.calibration.ranges import EXTREME_ABS, TensorRange
from onnxq.errors import CalibrationError, ConfigError

__all__ = [
    "OBSERVERS",
    "EntropyObserver",
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "Observer",
    "PercentileObserver",
    "entropy_threshold",
    "make_observer",
    "mse_range",
    "percentile_range",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Per-batch scan shared by all observers
# --------------------------------------------------------------------------------------------------


def _as_float_array(array: Any) -> np.ndarray:
    """``array`` as float32/float64 (float16 and integers are widened; other dtypes refused)."""
    x = np.asarray(array)
    if x.dtype in (np.float32, np.float64):
        return x
    if x.dtype.kind == "f" or x.dtype.name == "bfloat16":
        return x.astype(np.float32)
    if x.dtype.kind in "iub":
        return x.astype(np.float64)
    raise CalibrationError(f"observers need real numbers, found an array of dtype {x.dtype}")


@dataclass
class _Batch:
    """Per-channel statistics of one update (``C == 1`` for a per-tensor observer).

    ``lo``/``hi`` are the finite min/max (+inf/-inf for a channel without finite values); the masks are
    None when every element passes, which is the fast common case.
    """

    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray
    nonfinite: np.ndarray
    extreme: np.ndarray
    finite_mask: np.ndarray | None
    moderate_mask: np.ndarray | None


def _scan(x: np.ndarray, axis: int | None, extreme_abs: float) -> _Batch:
    """Finite min/max and NaN/Inf/extreme counts of ``x``, per channel along ``axis``.

    The common case costs one ``min`` and one ``max``: NaN propagates through ``min`` and Inf shows in
    ``min``/``max``, so the masks are only built when those say they are needed.
    """
    red = None if axis is None else tuple(i for i in range(x.ndim) if i != axis)
    channels = 1 if axis is None else x.shape[axis]
    per_channel = x.size // channels

    def reduce(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).reshape(channels)

    lo, hi = reduce(x.min(axis=red)), reduce(x.max(axis=red))
    count = np.full(channels, per_channel, dtype=np.int64)
    nonfinite = np.zeros(channels, dtype=np.int64)
    extreme = np.zeros(channels, dtype=np.int64)
    finite_mask = moderate_mask = None
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        finite_mask = np.isfinite(x)
        nonfinite = per_channel - reduce(np.count_nonzero(finite_mask, axis=red)).astype(np.int64)
        lo = reduce(np.min(x, axis=red, where=finite_mask, initial=np.inf))
        hi = reduce(np.max(x, axis=red, where=finite_mask, initial=-np.inf))
    if (lo <= -extreme_abs).any() or (hi >= extreme_abs).any():
        moderate_mask = np.abs(x) < extreme_abs  # False for NaN/Inf too
        moderate = reduce(np.count_nonzero(moderate_mask, axis=red)).astype(np.int64)
        extreme = per_channel - nonfinite - moderate
    return _Batch(lo, hi, count, nonfinite, extreme, finite_mask, moderate_mask)


@dataclass
class _Stats:
    """Running per-channel element counts and finite data extremes."""

    count: np.ndarray
    nonfinite: np.ndarray
    extreme: np.ndarray
    data_min: np.ndarray
    data_max: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> _Stats:
        zeros = np.zeros(channels, dtype=np.int64)
        inf = np.full(channels, np.inf)
        return cls(zeros, zeros.copy(), zeros.copy(), inf, -inf)

    def add(self, other: _Batch | _Stats) -> None:
        """Accumulate a batch or another observer's statistics (exact: sums of ints, min/max)."""
        self.count = self.count + other.count
        self.nonfinite = self.nonfinite + other.nonfinite
        self.extreme = self.extreme + other.extreme
        lo = other.lo if isinstance(other, _Batch) else other.data_min
        hi = other.hi if isinstance(other, _Batch) else other.data_max
        self.data_min = np.minimum(self.data_min, lo)
        self.data_max = np.maximum(self.data_max, hi)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.count, self.nonfinite, self.extreme, self.data_min, self.data_max))


def _finite_or_zero(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace the (+inf, -inf) of channels without finite data by (0, 0)."""
    empty = lo > hi
    return np.where(empty, 0.0, lo), np.where(empty, 0.0, hi)


# --------------------------------------------------------------------------------------------------
# Observer base
# --------------------------------------------------------------------------------------------------


class Observer(ABC):
    """Streaming range statistics of one tensor.

    Args:
        per_channel_axis: Keep one range per index along this axis (negative values count from the
            end); the per-tensor range is then the envelope of the channel ranges. Every update must
            have the same rank and channel count; other dimensions may vary.
        extreme_abs: Magnitude from which finite values count as extreme (see the module docstring).

    Raises:
        ConfigError: invalid options.
    """

    method: ClassVar[str] = ""

    def __init__(self, *, per_channel_axis: int | None = None, extreme_abs: float = EXTREME_ABS) -> None:
        if per_channel_axis is not None and (
            isinstance(per_channel_axis, bool) or not isinstance(per_channel_axis, int)
        ):
            raise ConfigError(f"per_channel_axis must be an int or None, found {per_channel_axis!r}")
        if not (isinstance(extreme_abs, (int, float)) and 0 < extreme_abs < math.inf):
            raise ConfigError(f"extreme_abs must be a positive finite number, found {extreme_abs!r}")
        self._per_channel_axis = per_channel_axis
        self._extreme_abs = float(extreme_abs)
        self.reset()

    # -- public interface -------------------------------------------------------------------------

    @property
    def per_channel_axis(self) -> int | None:
        """The channel axis as given (None for per-tensor)."""
        return self._per_channel_axis

    @property
    def samples(self) -> int:
        """Number of ``update`` calls since the last reset."""
        return self._samples

    @property
    def state_nbytes(self) -> int:
        """Bytes of numpy state held (what grows with ``bins`` or the channel count)."""
        return (self._stats.nbytes if self._stats is not None else 0) + self._state_nbytes()

    def reset(self) -> None:
        """Forget everything seen (options are kept)."""
        self._samples = 0
        self._axis: int | None = None  # resolved, non-negative
        self._shape_key: tuple[int, int] | None = None  # (ndim, channels) of per-channel updates
        self._stats: _Stats | None = None
        self._reset_state()

    def update(self, array: np.ndarray) -> None:
        """Observe one batch of values (any shape; see ``per_channel_axis`` for its constraints).

        Raises:
            CalibrationError: unsupported dtype, or a per-channel shape that does not match earlier ones.
        """
        x = _as_float_array(array)
        axis = self._resolve_layout(x.shape)
        self._samples += 1
        if x.size == 0:
            return
        batch = _scan(x, axis, self._extreme_abs)
        if self._stats is None:
            self._stats = _Stats.empty(batch.count.size)
        self._stats.add(batch)
        self._observe(x, axis, batch)

    def compute_range(self) -> TensorRange:
        """The range chosen by this method from everything observed.

        A tensor without any finite value gets the range ``[0, 0]`` (check ``nonfinite``).

        Raises:
            CalibrationError: nothing was observed yet.
        """
        if self._samples == 0:
            raise CalibrationError(f"{type(self).__name__}.compute_range() called before any update()")
        stats = self._stats if self._stats is not None else _Stats.empty(1)
        cmin, cmax = self._channel_ranges(stats)
        dmin, dmax = _finite_or_zero(stats.data_min, stats.data_max)
        has_data = stats.data_min <= stats.data_max
        fields: dict[str, Any] = {}
        if self._axis is not None:
            fields = {"axis": self._axis, "channel_min": tuple(cmin), "channel_max": tuple(cmax)}
        any_data = bool(has_data.any())
        return TensorRange(
            min=float(cmin[has_data].min()) if any_data else 0.0,
            max=float(cmax[has_data].max()) if any_data else 0.0,
            method=self.method,
            samples=self._samples,
            count=int(stats.count.sum()),
            data_min=float(dmin[has_data].min()) if any_data else 0.0,
            data_max=float(dmax[has_data].max()) if any_data else 0.0,
            nonfinite=int(stats.nonfinite.sum()),
            extreme=int(stats.extreme.sum()),
            histogram=self._histogram(),
            **fields,
        )

    def merge(self, other: Observer) -> None:
        """Fold in the state of ``other`` (same class and options) that observed another data shard.

        Raises:
            CalibrationError: ``other`` is of another class, has other options or another channel layout.
        """
        if type(other) is not type(self) or other._config() != self._config():
            raise CalibrationError(
                f"cannot merge {type(other).__name__}{other._config()} into {type(self).__name__}{self._config()}"
            )
        if other._stats is not None and self._stats is not None and other._shape_key != self._shape_key:
            raise CalibrationError(
                f"cannot merge observers of different layouts (ndim, channels): {self._shape_key} vs {other._shape_key}"
            )
        self._samples += other._samples
        if other._stats is None:
            return
        if self._stats is None:
            self._axis, self._shape_key = other._axis, other._shape_key
            self._stats = _Stats.empty(other._stats.count.size)
        self._stats.add(other._stats)
        self._merge_state(other)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self._config())
        return f"{type(self).__name__}({options}, samples={self._samples})"

    # -- subclass hooks -----------------------------------------------------------------------------

    def _config(self) -> tuple[tuple[str, Any], ...]:
        """Options that must agree for two observers to merge."""
        return (("per_channel_axis", self._per_channel_axis), ("extreme_abs", self._extreme_abs))

    @abstractmethod
    def _reset_state(self) -> None:
        """Clear method-specific state."""

    @abstractmethod
    def _observe(self, x: np.ndarray, axis: int | None, batch: _Batch) -> None:
        """Fold one non-empty batch into method-specific state."""

    @abstractmethod
    def _channel_ranges(self, stats: _Stats) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(min, max)`` arrays (shape ``(C,)``; ``C == 1`` per-tensor)."""

    @abstractmethod
    def _merge_state(self, other: Any) -> None:
        """Fold in method-specific state of a compatible observer."""

    def _state_nbytes(self) -> int:
        return 0

    def _histogram(self) -> Any:
        return None

    # -- helpers ----------------------------------------------------------------------------------------

    def _resolve_layout(self, shape: tuple[int, ...]) -> int | None:
        """Check ``shape`` against the per-channel axis and earlier updates; return the resolved axis."""
        if self._per_channel_axis is None:
            return None
        ndim, axis = len(shape), self._per_channel_axis
        if not -ndim <= axis < ndim:
            raise CalibrationError(f"per_channel_axis {axis} is out of range for an array of shape {shape}")
        axis %= ndim
        key = (ndim, shape[axis])
        if self._shape_key is not None and key != self._shape_key:
            raise CalibrationError(
                f"per-channel update of shape {shape} does not match earlier updates "
                f"(rank {self._shape_key[0]}, {self._shape_key[1]} channels on axis {self._axis})"
            )
        self._axis, self._shape_key = axis, key
        return axis


# --------------------------------------------------------------------------------------------------
# Min-max observers
# --------------------------------------------------------------------------------------------------


class MinMaxObserver(Observer):
    """Exact running min/max: ``[min(x), max(x)]`` over all finite data (extreme values included).

    The per-tensor result equals ``float(np.min(data))``/``float(np.max(data))`` of all finite data
    exactly (min/max never round), and merging shards is exact.
    """

    method = "minmax"

    def _reset_state(self) -> None:
        pass

    def _observe(self, x: np.ndarray, axis: int | None, batch: _Batch) -> None:
        pass  # the shared statistics hold the running min/max already

    def _channel_ranges(self, stats: _Stats) -> tuple[np.ndarray, np.ndarray]:
        return _finite_or_zero(stats.data_min, stats.data_max)

    def _merge_state(self, other: Any) -> None:
        pass


class MovingAverageMinMaxObserver(Observer):
    """Exponential moving average of per-batch min/max: ``m <- m + c * (batch_min - m)``.

    The first batch initialises ``m``; batches (or channels) without finite values are skipped. This
    tracks the typical batch range rather than the single worst outlier (the PyTorch/TF
    "moving-average" calibration).

    ``merge`` is an approximation: an EMA depends on the order of the batches, which shards do not
    preserve, so merged observers combine their averages weighted by the number of batches each
    averaged. The result lies between the two shards' values.

    Args:
        averaging_constant: ``c`` in (0, 1].
    """

    method = "moving-average"

    def __init__(self, averaging_constant: float = 0.01, **options: Any) -> None:
        if not (isinstance(averaging_constant, (int, float)) and 0.0 < averaging_constant <= 1.0):
            raise ConfigError(f"averaging_constant must be in (0, 1], found {averaging_constant!r}")
        self._c = float(averaging_constant)
        super().__init__(**options)

    def _config(self) -> tuple[tuple[str, Any], ...]:
        return (("averaging_constant", self._c), *super()._config())

    def _reset_state(self) -> None:
        self._ema_min: np.ndarray | None = None
        self._ema_max: np.ndarray | None = None
        self._ema_n: np.ndarray | None = None

    def _observe(self, x: np.ndarray, axis: int | None, batch: _Batch) -> None:
        if self._ema_n is None:
            self._ema_min, self._ema_max = np.zeros_like(batch.lo), np.zeros_like(batch.hi)
            self._ema_n = np.zeros(batch.lo.size, dtype=np.int64)
        assert self._ema_min is not None and self._ema_max is not None
        valid = batch.lo <= batch.hi
        first = valid & (self._ema_n == 0)
        lo, hi = np.where(valid, batch.lo, 0.0), np.where(valid, batch.hi, 0.0)
        step_min = np.where(first, lo, self._ema_min + self._c * (lo - self._ema_min))
        step_max = np.where(first, hi, self._ema_max + self._c * (hi - self._ema_max))
        self._ema_min = np.where(valid, step_min, self._ema_min)
        self._ema_max = np.where(valid, step_max, self._ema_max)
        self._ema_n = self._ema_n + valid

    def _channel_ranges(self, stats: _Stats) -> tuple[np.ndarray, np.ndarray]:
        if self._ema_n is None:
            return np.zeros(stats.count.size), np.zeros(stats.count.size)
        assert self._ema_min is not None and self._ema_max is not None
        seen = self._ema_n > 0
        lo = np.where(seen, np.minimum(self._ema_min, self._ema_max), 0.0)
        hi = np.where(seen, np.maximum(self._ema_min, self._ema_max), 0.0)
        return lo, hi

    def _merge_state(self, other: Any) -> None:
        if other._ema_n is None:
            return
        if self._ema_n is None:
            self._ema_min, self._ema_max = other._ema_min.copy(), other._ema_max.copy()
            self._ema_n = other._ema_n.copy()
            return
        assert self._ema_min is not None and self._ema_max is not None
        n = self._ema_n + other._ema_n
        weight = np.divide(other._ema_n, n, out=np.zeros(n.size), where=n > 0)
        self._ema_min = _weighted(self._ema_min, other._ema_min, weight, self._ema_n, other._ema_n)
        self._ema_max = _weighted(self._ema_max, other._ema_max, weight, self._ema_n, other._ema_n)
        self._ema_n = n

    def _state_nbytes(self) -> int:
        return 0 if self._ema_n is None else 3 * self._ema_n.nbytes


def _weighted(a: np.ndarray, b: np.ndarray, w: np.ndarray, na: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """``a + w * (b - a)`` clamped to ``[min(a, b), max(a, b)]``; the side with no updates is ignored."""
    mixed = np.clip(a + w * (b - a), np.minimum(a, b), np.maximum(a, b))
    return np.where(na == 0, b, np.where(nb == 0, a, mixed))


# --------------------------------------------------------------------------------------------------
# Histogram observers
# --------------------------------------------------------------------------------------------------


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
        bins: Target bin count (at most ``2 * bins`` bins are kept; see :mod:`._histogram`).
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


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

#: Observer classes by method name.
OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "moving-average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
    "mse": MSEObserver,
}


def _option_names(cls: type[Observer]) -> list[str]:
    """Keyword options accepted by ``cls`` and its bases (``**options`` is forwarded up the MRO)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names:
                names.append(p.name)
    return names


def make_observer(method: str, **options: Any) -> Observer:
    """Build the observer registered as ``method`` with keyword ``options``.

    Raises:
        ConfigError: unknown method (the message lists the valid ones), unknown option names, or
            invalid option values.
    """
    cls = OBSERVERS.get(method)
    if cls is None:
        raise ConfigError(f"unknown calibration method {method!r}; valid: {', '.join(OBSERVERS)}")
    valid = _option_names(cls)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for calibration method {method!r}; valid: {', '.join(valid)}"
        )
    return cls(**options)
