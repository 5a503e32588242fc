"""The data-source contract: what every source yields and the checks every source shares.

A :class:`DataSource` yields *samples* (``dict[str, np.ndarray]`` keyed by model input name, ready
for ``onnxruntime.InferenceSession.run``) with optional labels. Concrete sources derive from
:class:`RecordSource`: they only produce raw :class:`Record` s, and this base validates each one
against the model's signature (:func:`validate_sample`) and attaches labels from an optional labels
file, so every kind of data fails the same way. Validation happens before a sample is yielded
because onnxruntime's own errors name neither the file nor the sample, and a float64 array or a NaN
would silently skew calibration ranges.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from onnxq.errors import CalibrationDataError, ConfigError

from ._files import load_labels
from ._validation import (
    InputSpec,
    Label,
    PathArg,
    Sample,
    _as_numeric_array,
    _check_finite,
    _require_mapping,
    validate_sample,
)

__all__ = ["DataSource", "LimitedSource", "Record", "RecordSource"]


class DataSource(ABC):
    """An iterable of validated samples, with labels for evaluation and a one-line description."""

    specs: tuple[InputSpec, ...] | None

    @abstractmethod
    def iter_with_labels(self) -> Iterator[tuple[Sample, Label | None]]:
        """Yield ``(sample, label)`` pairs; the label is None when the data carries none."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and the CLI: what the data is and how many samples it holds."""

    @property
    def num_samples(self) -> int | None:
        """Number of samples, or None when only iterating can tell (reader objects)."""
        return None

    def __iter__(self) -> Iterator[Sample]:
        for sample, _ in self.iter_with_labels():
            yield sample

    def __len__(self) -> int:
        count = self.num_samples
        if count is None:
            raise TypeError(f"{type(self).__name__} does not know its length before iterating")
        return count

    def __bool__(self) -> bool:
        # Without this, bool() would fall back to __len__ and raise for sources of unknown length.
        return True


@dataclass(frozen=True)
class Record:
    """One raw, not yet validated sample: where it came from, its arrays and its inline label."""

    where: str
    sample: Mapping[str, Any]
    label: Label | None = None


class RecordSource(DataSource):
    """Base of the concrete sources: subclasses yield :class:`Record` s, this class validates them
    and attaches labels from an optional labels file, so every source behaves the same."""

    def __init__(self, specs: Sequence[InputSpec] | None, labels_file: PathArg | None = None) -> None:
        self.specs = None if specs is None else tuple(specs)
        self.labels_file = None if labels_file is None else Path(labels_file)

    @abstractmethod
    def records(self) -> Iterator[Record]:
        """Yield raw records lazily, one file in memory at a time."""

    def iter_with_labels(self) -> Iterator[tuple[Sample, Label | None]]:
        """Validated samples with labels; a labels file must have exactly one label per sample."""
        external = None if self.labels_file is None else load_labels(self.labels_file)
        count = 0
        for count, record in enumerate(self.records(), start=1):
            sample = (
                _validate_unbound(record.sample, record.where)
                if self.specs is None
                else validate_sample(record.sample, self.specs, record.where)
            )
            yield sample, _label_for(record, count - 1, external, self.labels_file)
        if external is not None and count != len(external):
            raise CalibrationDataError(
                f"labels file '{self.labels_file}' has {len(external)} labels but the data has {count} samples"
            )


def _label_for(record: Record, index: int, external: list[Label] | None, labels_file: Path | None) -> Label | None:
    if external is None:
        return record.label
    if record.label is not None:
        raise CalibrationDataError(
            f"{record.where}: carries its own label and a labels file '{labels_file}' was given too; use one"
        )
    if index >= len(external):
        raise CalibrationDataError(
            f"{record.where}: labels file '{labels_file}' has only {len(external)} labels, none for sample #{index}"
        )
    return external[index]


def _validate_unbound(sample: Mapping[str, Any], where: str) -> Sample:
    """Checks possible without a model signature (reader objects used on their own)."""
    _require_mapping(sample, where)
    arrays = {}
    for name, value in sample.items():
        array = _as_numeric_array(value, f"{where}: input '{name}'")
        _check_finite(array, f"{where}: input '{name}'")
        arrays[name] = np.require(array, requirements="C")
    return arrays


class LimitedSource(DataSource):
    """The first ``limit`` samples of another source (``--samples N``)."""

    def __init__(self, source: DataSource, limit: int) -> None:
        if limit < 1:
            raise ConfigError(f"the number of samples must be >= 1, got {limit}")
        self.source = source
        self.limit = limit
        self.specs = source.specs

    def iter_with_labels(self) -> Iterator[tuple[Sample, Label | None]]:
        """The wrapped source's pairs, stopping after ``limit``."""
        return islice(self.source.iter_with_labels(), self.limit)

    @property
    def num_samples(self) -> int | None:
        """``min(limit, len(source))``, unknown when the wrapped source's length is."""
        inner = self.source.num_samples
        return None if inner is None else min(inner, self.limit)

    def describe(self) -> str:
        """The wrapped description with the limit."""
        return f"first {self.limit} samples of {self.source.describe()}"
