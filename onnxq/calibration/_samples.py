"""Calibration samples that can be read more than once: one pass over the data per tensor group."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["describe_sample", "replayable", "sample_count"]


def replayable(source: Any, limit: int | None = None) -> _Replayable:
    """Wrap samples so several passes can iterate them (one-shot readers are cached as consumed)."""
    return source if isinstance(source, _Replayable) else _Replayable(source, limit)


class _Replayable:
    """Iterate a sample source several times (once per tensor group).

    Re-iterable sources (our data sources, lists) are simply iterated again. One-shot sources
    (generators, CalibrationDataReader objects) are cached as they are consumed: inputs are small
    next to the activations they produce, and the reader cannot be rewound.
    """

    def __init__(self, source: Any, limit: int | None) -> None:
        if callable(getattr(source, "get_next", None)) and not hasattr(source, "__iter__"):
            source = _reader_samples(source)  # onnxruntime's CalibrationDataReader protocol
        self.source = source
        self.limit = limit
        self.one_shot = iter(source) is source
        self._pending: Iterator[Mapping[str, np.ndarray]] | None = iter(source) if self.one_shot else None
        self._cache: list[Mapping[str, np.ndarray]] = []

    def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]:
        if not self.one_shot:
            for i, sample in enumerate(self.source):
                if self.limit is not None and i >= self.limit:
                    return
                yield sample
            return
        i = 0
        while self.limit is None or i < self.limit:
            if i < len(self._cache):
                yield self._cache[i]
            else:
                sample = next(self._pending, None) if self._pending is not None else None
                if sample is None:
                    self._pending = None
                    return
                self._cache.append(sample)
                yield sample
            i += 1


def _reader_samples(reader: Any) -> Iterator[Mapping[str, np.ndarray]]:
    while (sample := reader.get_next()) is not None:
        yield sample


def describe_sample(sample: Any, index: int) -> str:
    """How error messages name a sample: its ``where`` when it has one, else its index."""
    return getattr(sample, "where", None) or f"sample #{index}"


def sample_count(samples: Any, limit: int | None) -> int | None:
    """The number of samples a pass will read (for the progress bar), None when unknown."""
    try:
        n = len(samples)
    except Exception:  # no len, or a CalibrationDataReader whose __len__ is not implemented
        return limit
    return min(n, limit) if limit is not None else n
