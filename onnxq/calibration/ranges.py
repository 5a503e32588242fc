"""Calibrated tensor ranges and their JSON file format.

A calibration run produces one :class:`TensorRange` per tensor: the range ``[min, max]`` chosen by an
observer method (min-max, percentile, entropy, MSE, ...), the raw data extremes ``data_min``/``data_max``
(which differ from ``min``/``max`` when the method clips outliers), bookkeeping (updates and elements
seen, NaN/Inf and ``|x| >= EXTREME_ABS`` counts) and optionally the :class:`Histogram` it came from, so a
saved file can be re-evaluated with another method without running the model again.

:class:`RangeSet` maps tensor names to ranges plus metadata and is saved as ``"format": "onnxq-ranges/1"``
JSON. Saving is atomic (temporary file in the target folder, then ``os.replace``) and deterministic
(sorted keys; floats are written by ``repr`` which round-trips every float64 exactly), so the same
ranges always give a byte-identical file that can be diffed and cached.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxq.errors import CalibrationError

__all__ = ["EXTREME_ABS", "FORMAT", "Histogram", "RangeSet", "TensorRange"]

logger = logging.getLogger(__name__)

#: Schema identifier written to (and required in) every ranges file.
FORMAT = "onnxq-ranges/1"

#: Finite values at least this large in magnitude (e.g. the -3.4e38 of attention masks) are "extreme".
EXTREME_ABS = 1e30


def _as_float(value: Any, what: str) -> float:
    """``value`` as a finite Python float (numpy scalars accepted, bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CalibrationError(f"{what} must be a number, found {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise CalibrationError(f"{what} must be finite, found {result!r}")
    return result


def _as_count(value: Any, what: str) -> int:
    """``value`` as a non-negative Python int (bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise CalibrationError(f"{what} must be an integer, found {value!r}")
    if value < 0:
        raise CalibrationError(f"{what} must be >= 0, found {value}")
    return int(value)


def _check_keys(data: Any, required: set[str], optional: set[str], what: str) -> dict[str, Any]:
    """Check that ``data`` is a JSON object with all ``required`` and no unknown keys."""
    if not isinstance(data, dict):
        raise CalibrationError(f"{what} must be a JSON object, found {type(data).__name__}")
    missing = sorted(required - data.keys())
    unknown = sorted(data.keys() - required - optional)
    if missing:
        raise CalibrationError(f"{what} lacks key(s) {', '.join(missing)}")
    if unknown:
        raise CalibrationError(f"{what} has unknown key(s) {', '.join(unknown)}")
    return data


@dataclass(frozen=True, eq=False)
class Histogram:
    """Counts over equal-width bins: bin ``j`` covers ``[origin + j*bin_width, origin + (j+1)*bin_width)``.

    Observers produce power-of-two widths with ``origin`` a multiple of the width, so that edges are
    exact floats and two histograms can be combined exactly; this class only requires a positive width.
    """

    counts: np.ndarray
    bin_width: float
    origin: float

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if counts.ndim != 1 or counts.size == 0:
            raise CalibrationError(f"histogram counts must be a non-empty 1-D array, found shape {counts.shape}")
        if counts.dtype.kind not in "iu":
            raise CalibrationError(f"histogram counts must be integers, found dtype {counts.dtype}")
        if (counts < 0).any():
            raise CalibrationError("histogram counts must be >= 0")
        counts = counts.astype(np.int64, copy=True)
        counts.setflags(write=False)
        width = _as_float(self.bin_width, "histogram bin_width")
        if width <= 0.0:
            raise CalibrationError(f"histogram bin_width must be > 0, found {width!r}")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "bin_width", width)
        object.__setattr__(self, "origin", _as_float(self.origin, "histogram origin"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.bin_width == other.bin_width
            and self.origin == other.origin
            and np.array_equal(self.counts, other.counts)
        )

    __hash__ = None  # type: ignore[assignment]  # holds an array: unhashable like any mutable-looking value

    @property
    def total(self) -> int:
        """Number of values counted."""
        return int(self.counts.sum())

    def edges(self) -> np.ndarray:
        """The ``len(counts) + 1`` bin edges as float64 (exact for power-of-two widths)."""
        return self.origin + self.bin_width * np.arange(self.counts.size + 1, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (counts as a list of ints)."""
        return {"bin_width": self.bin_width, "counts": [int(c) for c in self.counts], "origin": self.origin}

    @classmethod
    def from_json(cls, data: Any) -> Histogram:
        """Inverse of :meth:`to_json`.

        Raises:
            CalibrationError: missing/unknown keys or invalid values.
        """
        data = _check_keys(data, {"bin_width", "counts", "origin"}, set(), "histogram")
        counts = data["counts"]
        if not isinstance(counts, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in counts
        ):
            raise CalibrationError("histogram counts must be a list of integers")
        return cls(np.array(counts, dtype=np.int64), data["bin_width"], data["origin"])


def _channel_tuple(values: Sequence[float] | np.ndarray | None, what: str) -> tuple[float, ...] | None:
    """Per-channel values as a tuple of finite floats (or None)."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise CalibrationError(f"{what} must be a sequence of numbers, found {values!r}")
    return tuple(_as_float(v, f"{what}[{i}]") for i, v in enumerate(values))


@dataclass(frozen=True)
class TensorRange:
    """The calibrated range of one tensor.

    Attributes:
        min, max: The range chosen by ``method`` (what scale/zero point are computed from).
        method: Observer method name (``"minmax"``, ``"percentile"``, ...).
        samples: Number of ``update`` calls seen.
        count: Number of elements seen (including NaN/Inf and extreme ones).
        data_min, data_max: Raw observed finite min/max (default: ``min``/``max``).
        nonfinite: NaN/Inf elements seen (excluded from every statistic).
        extreme: Finite elements with ``|x| >= EXTREME_ABS`` (kept in ``data_min``/``data_max``).
        histogram: The histogram the range was derived from, for histogram methods.
        axis: Channel axis of a per-channel range, with ``channel_min``/``channel_max`` per channel.
    """

    min: float
    max: float
    method: str
    samples: int
    count: int
    data_min: float | None = None
    data_max: float | None = None
    nonfinite: int = 0
    extreme: int = 0
    histogram: Histogram | None = None
    axis: int | None = None
    channel_min: tuple[float, ...] | None = None
    channel_max: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        lo, hi = _as_float(self.min, "min"), _as_float(self.max, "max")
        if lo > hi:
            raise CalibrationError(f"range min {lo!r} > max {hi!r}")
        put("min", lo)
        put("max", hi)
        if not isinstance(self.method, str) or not self.method:
            raise CalibrationError(f"method must be a non-empty string, found {self.method!r}")
        for name in ("samples", "count", "nonfinite", "extreme"):
            put(name, _as_count(getattr(self, name), name))
        dlo = lo if self.data_min is None else _as_float(self.data_min, "data_min")
        dhi = hi if self.data_max is None else _as_float(self.data_max, "data_max")
        if dlo > dhi:
            raise CalibrationError(f"data_min {dlo!r} > data_max {dhi!r}")
        put("data_min", dlo)
        put("data_max", dhi)
        if self.histogram is not None and not isinstance(self.histogram, Histogram):
            raise CalibrationError(f"histogram must be a Histogram, found {type(self.histogram).__name__}")
        self._init_channels(put)

    def _init_channels(self, put: Any) -> None:
        """Validate the per-channel fields: all three set (same length) or all None."""
        cmin = _channel_tuple(self.channel_min, "channel_min")
        cmax = _channel_tuple(self.channel_max, "channel_max")
        given = (self.axis is not None, cmin is not None, cmax is not None)
        if any(given) and not all(given):
            raise CalibrationError("axis, channel_min and channel_max must be given together")
        if self.axis is not None:
            if isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer)):
                raise CalibrationError(f"axis must be an integer, found {self.axis!r}")
            assert cmin is not None and cmax is not None
            if len(cmin) != len(cmax) or not cmin:
                raise CalibrationError(
                    f"channel_min has {len(cmin)} values and channel_max {len(cmax)}; need the same, >= 1"
                )
            bad = [i for i, (a, b) in enumerate(zip(cmin, cmax)) if a > b]
            if bad:
                raise CalibrationError(f"channel_min > channel_max for channel(s) {bad[:10]}")
            put("axis", int(self.axis))
        put("channel_min", cmin)
        put("channel_max", cmax)

    @property
    def span(self) -> float:
        """``max - min`` (may overflow to inf for ranges near the float64 limits)."""
        return self.max - self.min

    @property
    def is_constant(self) -> bool:
        """True when ``min == max`` (a constant tensor, or no finite data at all)."""
        return self.min == self.max

    @property
    def is_saturating(self) -> bool:
        """True when NaN/Inf or extreme (``|x| >= EXTREME_ABS``) values were seen."""
        return self.extreme > 0 or self.nonfinite > 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; optional fields that are None are left out."""
        out: dict[str, Any] = {
            "count": self.count,
            "data_max": self.data_max,
            "data_min": self.data_min,
            "extreme": self.extreme,
            "max": self.max,
            "method": self.method,
            "min": self.min,
            "nonfinite": self.nonfinite,
            "samples": self.samples,
        }
        if self.histogram is not None:
            out["histogram"] = self.histogram.to_json()
        if self.axis is not None:
            out["axis"] = self.axis
            out["channel_min"] = list(self.channel_min or ())
            out["channel_max"] = list(self.channel_max or ())
        return out

    @classmethod
    def from_json(cls, data: Any) -> TensorRange:
        """Inverse of :meth:`to_json`.

        Raises:
            CalibrationError: missing/unknown keys or invalid values.
        """
        required = {"count", "data_max", "data_min", "extreme", "max", "method", "min", "nonfinite", "samples"}
        data = _check_keys(data, required, {"histogram", "axis", "channel_min", "channel_max"}, "range")
        hist = data.get("histogram")
        fields = {k: v for k, v in data.items() if k != "histogram"}
        return cls(**fields, histogram=None if hist is None else Histogram.from_json(hist))


@dataclass(frozen=True)
class _Meta:
    """Metadata of a :class:`RangeSet`."""

    model_name: str = ""
    model_sha256: str = ""
    method: str = ""
    num_samples: int = 0
    onnxq_version: str = ""


class RangeSet(Mapping[str, TensorRange]):
    """Tensor name → :class:`TensorRange`, with the metadata of the calibration run that produced them.

    Args:
        ranges: The ranges by tensor name.
        model_name: Name of the calibrated model (informational).
        model_sha256: SHA-256 of the model file, so stale ranges can be detected.
        method: Observer method used for the run.
        num_samples: Number of calibration samples fed to the model.
        onnxq_version: Version of onnxq that wrote the ranges.
    """

    def __init__(
        self,
        ranges: Mapping[str, TensorRange] | None = None,
        *,
        model_name: str = "",
        model_sha256: str = "",
        method: str = "",
        num_samples: int = 0,
        onnxq_version: str = "",
    ) -> None:
        items = dict(ranges or {})
        for name, rng in items.items():
            if not isinstance(name, str):
                raise CalibrationError(f"tensor names must be strings, found {name!r}")
            if not isinstance(rng, TensorRange):
                raise CalibrationError(f"range of tensor {name!r} must be a TensorRange, found {type(rng).__name__}")
        for key, value in (("model_name", model_name), ("model_sha256", model_sha256), ("method", method),
                           ("onnxq_version", onnxq_version)):
            if not isinstance(value, str):
                raise CalibrationError(f"{key} must be a string, found {value!r}")
        self._ranges = items
        self._meta = _Meta(model_name, model_sha256, method, _as_count(num_samples, "num_samples"), onnxq_version)

    @property
    def model_name(self) -> str:
        """Name of the calibrated model."""
        return self._meta.model_name

    @property
    def model_sha256(self) -> str:
        """SHA-256 of the model file (empty when unknown)."""
        return self._meta.model_sha256

    @property
    def method(self) -> str:
        """Observer method of the run."""
        return self._meta.method

    @property
    def num_samples(self) -> int:
        """Number of calibration samples fed to the model."""
        return self._meta.num_samples

    @property
    def onnxq_version(self) -> str:
        """Version of onnxq that wrote the ranges."""
        return self._meta.onnxq_version

    def __getitem__(self, name: str) -> TensorRange:
        return self._ranges[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ranges)

    def __len__(self) -> int:
        return len(self._ranges)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._meta == other._meta and self._ranges == other._ranges

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RangeSet({len(self)} tensors, method={self.method!r}, model={self.model_name!r})"

    def to_json(self) -> dict[str, Any]:
        """The JSON document (a dict) written by :meth:`save_json`."""
        return {
            "format": FORMAT,
            "method": self.method,
            "model": {"name": self.model_name, "sha256": self.model_sha256},
            "num_samples": self.num_samples,
            "onnxq_version": self.onnxq_version,
            "tensors": {name: rng.to_json() for name, rng in self._ranges.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> RangeSet:
        """Inverse of :meth:`to_json`.

        Raises:
            CalibrationError: unknown format version, missing/unknown keys or invalid values.
        """
        if isinstance(data, dict) and "format" not in data:
            raise CalibrationError(f"no 'format' key: not an onnxq ranges file (expected {FORMAT!r})")
        if isinstance(data, dict) and data["format"] != FORMAT:
            raise CalibrationError(f"unsupported format {data['format']!r}; expected {FORMAT!r}")
        keys = {"format", "method", "model", "num_samples", "onnxq_version", "tensors"}
        data = _check_keys(data, keys, set(), "ranges document")
        model = _check_keys(data["model"], {"name", "sha256"}, set(), "'model'")
        tensors = data["tensors"]
        if not isinstance(tensors, dict):
            raise CalibrationError(f"'tensors' must be a JSON object, found {type(tensors).__name__}")
        ranges = {}
        for name, entry in tensors.items():
            try:
                ranges[name] = TensorRange.from_json(entry)
            except (CalibrationError, TypeError) as e:
                raise CalibrationError(f"tensor {name!r}: {e}") from e
        return cls(
            ranges,
            model_name=model["name"],
            model_sha256=model["sha256"],
            method=data["method"],
            num_samples=data["num_samples"],
            onnxq_version=data["onnxq_version"],
        )

    def dumps(self) -> str:
        """The exact text :meth:`save_json` writes (sorted keys, ``repr`` floats, trailing newline).

        One tensor per line: files with 2048-bin histograms stay readable and diffable.
        """
        data = self.to_json()
        tensors = data.pop("tensors")
        head = json.dumps(data, sort_keys=True, indent=1, allow_nan=False)
        body = ",\n".join(
            f"  {json.dumps(name)}: {json.dumps(entry, sort_keys=True, separators=(',', ':'), allow_nan=False)}" for name, entry in sorted(tensors.items())
        )
        tensors_text = '"tensors": {\n' + body + "\n }" if tensors else '"tensors": {}'
        return head[:-2] + ",\n " + tensors_text + "\n}\n" if data else "{\n " + tensors_text + "\n}\n"

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write the ranges atomically: a temporary file in the same folder, then ``os.replace``.

        Readers therefore see either the old file or the complete new one, never a partial write.
        """
        target = Path(path)
        text = self.dumps()
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.info("wrote %d tensor ranges to %s", len(self), target)

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> RangeSet:
        """Read a file written by :meth:`save_json`.

        Raises:
            CalibrationError: the file cannot be read, is not JSON, has another ``format`` or invalid
                content; the message names the file and what is wrong.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise CalibrationError(f"cannot read ranges file {str(path)!r}: {e.strerror or e}") from e
        except UnicodeDecodeError as e:  # a model or a data file given as --ranges
            raise CalibrationError(f"ranges file {str(path)!r} is not UTF-8 text (byte {e.start}); expected the JSON written by `onnxq calibrate`") from e
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, CalibrationError, RecursionError) as e:
            raise CalibrationError(f"ranges file {str(path)!r} is not valid JSON: {type(e).__name__}: {e}") from e
        try:
            return cls.from_json(data)
        except CalibrationError as e:
            raise CalibrationError(f"ranges file {str(path)!r}: {e}") from e


def _reject_constant(name: str) -> float:
    """``json.loads`` hook: ranges files never contain NaN/Infinity."""
    raise CalibrationError(f"non-finite number {name} is not allowed")
