"""The observer contract and the per-batch statistics every observer shares.

:class:`Observer` owns the life cycle (``update`` / ``compute_range`` / ``merge`` / ``reset``), the
per-channel layout checks and the data hygiene of the package docstring: one scan per batch
(:func:`_scan`) finds the finite min/max and counts NaN/Inf and extreme values, and running
:class:`_Stats` accumulate them exactly. Subclasses only add their method's state through the
``_reset_state`` / ``_observe`` / ``_channel_ranges`` / ``_merge_state`` hooks.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from onnxq.calibration.ranges import EXTREME_ABS, TensorRange
from onnxq.errors import CalibrationError, ConfigError

__all__ = ["Observer"]


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
        nonfinite = per_channel - reduce(np.asarray(np.count_nonzero(finite_mask, axis=red))).astype(np.int64)
        lo = reduce(np.min(x, axis=red, where=finite_mask, initial=np.inf))
        hi = reduce(np.max(x, axis=red, where=finite_mask, initial=-np.inf))
    if (lo <= -extreme_abs).any() or (hi >= extreme_abs).any():
        moderate_mask = np.abs(x) < extreme_abs  # False for NaN/Inf too
        moderate = reduce(np.asarray(np.count_nonzero(moderate_mask, axis=red))).astype(np.int64)
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
