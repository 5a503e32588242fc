"""The concrete data sources: .npz/.npy files and folders, synthetic tensors, reader objects.

Each one only produces raw :class:`Record` s; validation and labels come from :class:`RecordSource`.
They are lazy (one file in memory at a time), deterministic (files in natural sorted order, seeded
synthetic data) and never unpickle anything (``allow_pickle=False`` throughout). Image folders live
in :mod:`onnxq.data.images`; which source a user's argument means is decided by :func:`open_source`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxq.errors import CalibrationDataError, ConfigError

from ._base import Record, RecordSource
from ._files import (
    _existing,
    _label_value,
    _read_npy,
    _read_npy_header,
    _read_npz,
    _refuse_stacked,
    _split_label,
    data_files,
    require_single_input,
)
from ._validation import _BATCH_NAMES, InputSpec, PathArg, check_input_names

_LOG = logging.getLogger(__name__)

__all__ = ["NpyFolderSource", "NpzFileSource", "NpzFolderSource", "ReaderSource", "SyntheticSource", "MAX_SYNTHETIC_SAMPLES", "MAX_SYNTHETIC_BYTES"]

#: More random samples than this are refused (``synthetic:N`` with an absurd N would never finish).
MAX_SYNTHETIC_SAMPLES = 1_000_000
#: Largest synthetic sample (all inputs together): a declared shape can ask for any size, and the
#: allocation must be refused before it is tried.
MAX_SYNTHETIC_BYTES = 2 * 2**30


class NpzFolderSource(RecordSource):
    """A folder with one ``.npz`` per sample, one array per input (plus an optional ``label``)."""

    def __init__(self, folder: PathArg, specs: Sequence[InputSpec], *, labels_file: PathArg | None = None) -> None:
        super().__init__(specs, labels_file)
        self.model_specs: tuple[InputSpec, ...] = tuple(specs)
        self.folder = Path(folder)
        self.files = data_files(self.folder, {".npz"}, ".npz")

    @property
    def num_samples(self) -> int:
        """One sample per file."""
        return len(self.files)

    def records(self) -> Iterator[Record]:
        """Read one file at a time."""
        for path in self.files:
            where = str(path)
            inputs, label = _split_label(_read_npz(path), self.model_specs, where)
            _refuse_stacked(inputs, self.model_specs, where, "to stack samples along a leading axis pass one .npz file")
            yield Record(where, inputs, None if label is None else _label_value(label))

    def describe(self) -> str:
        """E.g. ``12 .npz files in calib/``."""
        return f"{len(self.files)} .npz files in {self.folder}/"


class NpzFileSource(RecordSource):
    """One ``.npz`` whose arrays stack samples along a leading axis (or hold exactly one sample).

    The arrays are read once, on first use, and yielded as per-sample views.
    """

    def __init__(self, path: PathArg, specs: Sequence[InputSpec], *, labels_file: PathArg | None = None) -> None:
        super().__init__(specs, labels_file)
        self.model_specs: tuple[InputSpec, ...] = tuple(specs)
        self.path = _existing(path)
        self._loaded: tuple[dict[str, np.ndarray], np.ndarray | None, int | None] | None = None

    def _load(self) -> tuple[dict[str, np.ndarray], np.ndarray | None, int | None]:
        if self._loaded is None:
            where = str(self.path)
            inputs, label = _split_label(_read_npz(self.path), self.model_specs, where)
            check_input_names(inputs, self.model_specs, where)
            count = _stacked_count(inputs, self.model_specs, where)
            if count is not None and label is not None and (label.ndim == 0 or label.shape[0] != count):
                raise CalibrationDataError(
                    f"{where}: labels have shape {label.shape}, expected one label per sample ({count} along axis 0)"
                )
            self._loaded = (inputs, label, count)
        return self._loaded

    @property
    def num_samples(self) -> int:
        """Length of the leading axis, or 1 when the arrays hold a single sample."""
        count = self._load()[2]
        return 1 if count is None else count

    def records(self) -> Iterator[Record]:
        """Views into the loaded arrays, one sample at a time."""
        inputs, label, count = self._load()
        if count is None:
            yield Record(str(self.path), inputs, None if label is None else _label_value(label))
            return
        for index in range(count):
            sample = {name: array[index] for name, array in inputs.items()}
            yield Record(
                f"{self.path} sample #{index}", sample, None if label is None else _label_value(label[index])
            )

    def describe(self) -> str:
        """E.g. ``calib.npz: 100 samples``."""
        return f"{self.path}: {self.num_samples} samples"


def _stacked_count(arrays: Mapping[str, np.ndarray], specs: Sequence[InputSpec], where: str) -> int | None:
    """None when the arrays hold one sample, else the number of samples along their leading axis."""
    counts: dict[str, int | None] = {}
    for spec in specs:
        array = arrays.get(spec.name)
        if array is None or spec.rank is None:
            continue
        if array.ndim == spec.rank:
            counts[spec.name] = None
        elif array.ndim == spec.rank + 1:
            counts[spec.name] = array.shape[0]
        else:
            raise CalibrationDataError(
                f"{where}: input '{spec.name}' has rank {array.ndim} (shape {array.shape}), expected "
                f"{spec.rank} (one sample) or {spec.rank + 1} (samples along a leading axis) for "
                f"{spec.shape_text()}"
            )
    single = [name for name, count in counts.items() if count is None]
    stacked = {name: count for name, count in counts.items() if count is not None}
    if single and stacked:
        raise CalibrationDataError(
            f"{where}: input '{single[0]}' holds one sample but '{next(iter(stacked))}' has a leading axis "
            "of samples; store every input the same way"
        )
    if len(set(stacked.values())) > 1:
        found = ", ".join(f"'{name}' has {count}" for name, count in stacked.items())
        raise CalibrationDataError(f"{where}: inputs disagree on the number of samples: {found}")
    if stacked and next(iter(stacked.values())) == 0:
        raise CalibrationDataError(f"{where}: holds no samples (leading axis of length 0)")
    return next(iter(stacked.values()), None)


class NpyFolderSource(RecordSource):
    """``.npy`` data for single-input models: a folder with one sample per file, or one file that stacks
    samples along a leading axis (memory-mapped) or holds exactly one sample."""

    def __init__(self, path: PathArg, specs: Sequence[InputSpec], *, labels_file: PathArg | None = None) -> None:
        super().__init__(specs, labels_file)
        self.model_specs: tuple[InputSpec, ...] = tuple(specs)
        self.spec = require_single_input(self.model_specs, ".npy data", "save one .npz per sample with one array per input")
        self.path = Path(path)
        self.files = data_files(self.path, {".npy"}, ".npy")

    @property
    def num_samples(self) -> int:
        """Files in a folder; for one file, its leading axis when stacked (read from the header only)."""
        if self.path.is_dir():
            return len(self.files)
        with open(self.path, "rb") as fp:
            shape, _ = _read_npy_header(fp, str(self.path))
        return shape[0] if self._stacked(len(shape)) else 1

    def _stacked(self, ndim: int) -> bool:
        return self.spec.rank is not None and ndim == self.spec.rank + 1

    def records(self) -> Iterator[Record]:
        """One file, or one view of the memory-mapped file, at a time."""
        name = self.spec.name
        if self.path.is_dir():
            for path in self.files:
                array = _read_npy(path, mmap=False)
                _refuse_stacked({name: array}, self.model_specs, str(path), "to stack samples pass that .npy file alone")
                yield Record(str(path), {name: array})
            return
        array = _read_npy(self.path, mmap=True)
        if not self._stacked(array.ndim):
            yield Record(str(self.path), {name: array})
            return
        for index in range(array.shape[0]):
            yield Record(f"{self.path} sample #{index}", {name: array[index]})

    def describe(self) -> str:
        """E.g. ``8 .npy files in calib/`` or ``x.npy: 100 samples``."""
        if self.path.is_dir():
            return f"{len(self.files)} .npy files in {self.path}/"
        return f"{self.path}: {self.num_samples} samples"


class SyntheticSource(RecordSource):
    """Random samples generated from the input signature, for smoke tests and shape-only calibration.

    Floats are N(0, 1) clipped to +-4; integer inputs whose name contains ``mask`` are all ones (a
    padding mask that hides everything makes attention degenerate); other integers are uniform in
    ``[0, int_high)`` (valid token ids for any real vocabulary); bools are fair coin flips. Sample ``k``
    depends only on ``(seed, k)``, so a longer run starts with the samples of a shorter one.

    Symbolic dims come from ``dims`` (by name; an unnamed dynamic axis as ``"input:axis"``); batch-like
    dims (``batch``, ``N``, ``batch_size`` or an unnamed first axis) default to 1.
    """

    def __init__(
        self,
        specs: Sequence[InputSpec],
        count: int = 8,
        dims: Mapping[str, int] | None = None,
        seed: int = 0,
        *,
        int_high: int = 100,
        labels_file: PathArg | None = None,
    ) -> None:
        super().__init__(specs, labels_file)
        self.model_specs: tuple[InputSpec, ...] = tuple(specs)
        if not 1 <= count <= MAX_SYNTHETIC_SAMPLES or seed < 0 or int_high < 1:
            raise ConfigError(
                f"synthetic data needs count >= 1 (at most {MAX_SYNTHETIC_SAMPLES:,}), seed >= 0 and int_high >= 1; "
                f"got {count}, {seed}, {int_high}"
            )
        self.count, self.seed, self.int_high = count, seed, int_high
        self.dims = dict(dims or {})
        self.shapes = {spec.name: _synthetic_shape(spec, self.dims) for spec in self.model_specs}
        _check_sample_size(self.model_specs, self.shapes)
        for spec in self.model_specs:
            if spec.dtype.kind not in "biuf":
                raise CalibrationDataError(f"input '{spec.name}' has dtype {spec.dtype}; synthetic data cannot make it")
        used = {d for spec in self.model_specs for d in spec.shape or () if isinstance(d, str)}
        unused = sorted(k for k in self.dims if k not in used and ":" not in k)
        if unused:
            _LOG.warning("--dim %s: the model has no such symbolic dim", ", ".join(unused))

    @property
    def num_samples(self) -> int:
        """The requested count."""
        return self.count

    def records(self) -> Iterator[Record]:
        """Generate sample ``k`` from a generator seeded with ``(seed, k)``."""
        for index in range(self.count):
            rng = np.random.default_rng([self.seed, index])
            sample = {spec.name: self._tensor(spec, rng) for spec in self.model_specs}
            yield Record(f"synthetic sample #{index}", sample)

    def _tensor(self, spec: InputSpec, rng: np.random.Generator) -> np.ndarray:
        shape = self.shapes[spec.name]
        if spec.dtype.kind == "f":
            return np.clip(rng.standard_normal(shape), -4.0, 4.0).astype(spec.dtype)
        if spec.dtype.kind == "b":
            return rng.random(shape) < 0.5
        if "mask" in spec.name.lower():
            return np.ones(shape, dtype=spec.dtype)
        high = min(self.int_high, int(np.iinfo(spec.dtype).max) + 1)
        return rng.integers(0, high, size=shape, dtype=spec.dtype)

    def describe(self) -> str:
        """E.g. ``synthetic: 8 samples (seed 0, seq=16)``."""
        dims = "".join(f", {k}={v}" for k, v in sorted(self.dims.items()))
        return f"synthetic: {self.count} samples (seed {self.seed}{dims})"


def _check_sample_size(specs: Sequence[InputSpec], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse a sample larger than :data:`MAX_SYNTHETIC_BYTES` before allocating it."""
    sizes = {spec.name: float(np.prod(shapes[spec.name], dtype=np.float64)) * spec.dtype.itemsize for spec in specs}
    total = sum(sizes.values())
    if total > MAX_SYNTHETIC_BYTES:
        name = max(sizes, key=lambda n: sizes[n])
        raise CalibrationDataError(
            f"input '{name}': a synthetic sample of shape {list(shapes[name])} would take {sizes[name] / 2**30:.1f} GiB "
            f"(all inputs: {total / 2**30:.1f} GiB, limit {MAX_SYNTHETIC_BYTES / 2**30:.0f} GiB); pass smaller --dim values or real data"
        )


def _synthetic_shape(spec: InputSpec, dims: Mapping[str, int]) -> tuple[int, ...]:
    if spec.shape is None:
        raise CalibrationDataError(f"input '{spec.name}' has no shape in the model; synthetic data needs one")
    shape = []
    for axis, dim in enumerate(spec.shape):
        key = dim if isinstance(dim, str) else f"{spec.name}:{axis}"
        if isinstance(dim, int):
            shape.append(dim)
        elif key in dims:
            shape.append(int(dims[key]))
        elif (dim is None and axis == 0) or (isinstance(dim, str) and dim.lower() in _BATCH_NAMES):
            shape.append(1)
        elif isinstance(dim, str):
            raise CalibrationDataError(f"input '{spec.name}' has symbolic dim '{dim}'; pass --dim {dim}=N")
        else:
            raise CalibrationDataError(
                f"input '{spec.name}' axis {axis} is dynamic and unnamed; pass --dim {key}=N"
            )
    return tuple(shape)


class ReaderSource(RecordSource):
    """Any object with onnxruntime's ``CalibrationDataReader`` protocol: ``get_next()`` returns a dict
    or None when exhausted. Calls ``rewind()`` (when the reader has one) before iterating again."""

    def __init__(
        self, reader: Any, specs: Sequence[InputSpec] | None = None, *, labels_file: PathArg | None = None
    ) -> None:
        super().__init__(specs, labels_file)
        if not callable(getattr(reader, "get_next", None)):
            raise CalibrationDataError(f"{type(reader).__name__} has no get_next() method; it is not a data reader")
        self.reader = reader
        self._passes = 0

    def records(self) -> Iterator[Record]:
        """Drain ``get_next()``; an immediately exhausted reader is an error, not an empty calibration."""
        rewind = getattr(self.reader, "rewind", None)
        if self._passes and callable(rewind):
            rewind()
        self._passes += 1
        index = 0
        while (item := self.reader.get_next()) is not None:
            yield Record(f"reader sample #{index}", item)
            index += 1
        if index == 0:
            raise CalibrationDataError(
                "reader sample #0: get_next() returned None before any sample; the reader is empty or already "
                "consumed (give it a rewind() method to iterate it twice)"
            )

    def describe(self) -> str:
        """The reader's class name."""
        return f"data reader {type(self.reader).__name__}"
