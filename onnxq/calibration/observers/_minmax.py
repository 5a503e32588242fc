"""Min-max observers: the exact running range and its exponential moving average."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxq.errors import ConfigError

from ._base import Observer, _Batch, _finite_or_zero, _Stats

__all__ = ["MinMaxObserver", "MovingAverageMinMaxObserver"]


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
