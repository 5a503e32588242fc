"""How activations travel from onnxruntime to the observers: one strategy per kind of observer.

* **Full tensors** (histogram methods, any per-channel observer): every exposed activation is copied
  out of onnxruntime and fed to its observer; NaN is an error naming the sample and the tensor.
* **In-graph summaries** (``moving-average`` per tensor): each tensor is reduced inside the graph to
  ``[min, max, sum]`` (:func:`~onnxq.calibration.expose.expose_tensors` with ``summarize``), so only
  three numbers per tensor and sample leave onnxruntime; a NaN sum reveals NaN data.
* **Vectorized min/max summaries** (``minmax`` per tensor): the same summaries, folded into running
  extremes of all tensors in one numpy step per sample and handed to the observers once at the end
  (min-max is order-free). Per-tensor observer calls cost more than onnxruntime's reductions on
  models with hundreds of tensors.

A strategy says whether to expose summaries, what one sample of a tensor costs in memory (for
:mod:`._groups`) and which :class:`Feed` consumes one tensor group's outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CalibrationError
from ..ir import Model
from ._groups import tensor_nbytes
from ._samples import describe_sample
from .observers import Observer

__all__ = ["Feed", "Strategy", "choose_strategy"]

#: Bytes of one tensor's in-graph summary per sample: three float32 numbers.
_SUMMARY_NBYTES = 12


class Feed(ABC):
    """Consumes one tensor group's session outputs, sample by sample, into the tensors' observers.

    Args:
        tensors: the tensor observed through each session output, in output order.
        observers: observer by tensor name (one exists for every name in ``tensors``).
    """

    def __init__(self, tensors: Sequence[str], observers: Mapping[str, Observer]) -> None:
        self.tensors = list(tensors)
        self.observers = observers

    @abstractmethod
    def update(self, values: Sequence[np.ndarray], sample: Any, index: int) -> None:
        """Observe the outputs of one sample (``sample`` and ``index`` name it in errors).

        Raises:
            CalibrationError: an activation holds NaN.
        """

    def finish(self) -> None:  # noqa: B027 (a hook: most feeds have nothing to finish)
        """Called once after the group's last sample."""


class _FullTensors(Feed):
    """Each activation goes to its observer as it is."""

    def update(self, values: Sequence[np.ndarray], sample: Any, index: int) -> None:
        for tensor, value in zip(self.tensors, values):
            _observe(self.observers[tensor], value, tensor, sample, index)


class _Summaries(Feed):
    """Each ``[min, max, marker]`` summary goes to its observer as a two-element batch."""

    def update(self, values: Sequence[np.ndarray], sample: Any, index: int) -> None:
        for tensor, value in zip(self.tensors, values):
            _observe_summary(self.observers[tensor], value, tensor, sample, index)


class _MinMaxSummaries(Feed):
    """Running min/max of many tensors from their in-graph summaries, one vectorized step per sample.

    The observers get the running extremes once, in :meth:`finish`, and remember the real sample
    count in ``summarized_samples`` (they saw one update).
    """

    _NOT_RUN = np.array([np.inf, -np.inf, 0.0])

    def __init__(self, tensors: Sequence[str], observers: Mapping[str, Observer]) -> None:
        super().__init__(tensors, observers)
        self.lo = np.full(len(self.tensors), np.inf)
        self.hi = np.full(len(self.tensors), -np.inf)
        self.seen = np.zeros(len(self.tensors), dtype=np.int64)

    def update(self, values: Sequence[np.ndarray], sample: Any, index: int) -> None:
        ran = np.array([v.size >= 3 for v in values])
        arr = np.stack([np.asarray(v[:3], np.float64) if ok else self._NOT_RUN for v, ok in zip(values, ran)])
        lo, hi, total = arr[:, 0], arr[:, 1], arr[:, 2]
        bad = ran & (np.isnan(lo) | np.isnan(hi) | (np.isnan(total) & np.isfinite(lo) & np.isfinite(hi)))
        if bad.any():
            tensor = self.tensors[int(np.argmax(bad))]
            raise CalibrationError(f"{describe_sample(sample, index)} produced NaN value(s) in tensor '{tensor}'")
        self.lo = np.minimum(self.lo, np.where(ran, lo, np.inf))
        self.hi = np.maximum(self.hi, np.where(ran, hi, -np.inf))
        self.seen += ran

    def finish(self) -> None:
        for i, name in enumerate(self.tensors):
            if self.seen[i]:
                obs = self.observers[name]
                obs.update(np.array([self.lo[i], self.hi[i]], dtype=np.float32))
                obs.summarized_samples = int(self.seen[i])  # type: ignore[attr-defined]


def _observe(observer: Observer, value: np.ndarray, tensor: str, sample: Any, index: int) -> None:
    if value.size == 0 or value.dtype.kind != "f":
        return  # a not-taken If branch yields an empty dummy
    if np.isnan(np.min(value)):
        bad = int(np.isnan(value).sum())
        raise CalibrationError(f"{describe_sample(sample, index)} produced {bad} NaN value(s) in tensor '{tensor}'")
    observer.update(value)


def _observe_summary(observer: Observer, value: np.ndarray, tensor: str, sample: Any, index: int) -> None:
    """Feed ``[min, max, marker]`` (see expose._summary_of) to a min-max observer."""
    if value.size < 3:
        return  # a not-taken If branch yields an empty dummy
    lo, hi, marker = (float(v) for v in value[:3])
    if np.isnan(lo) or np.isnan(hi) or (np.isnan(marker) and np.isfinite(lo) and np.isfinite(hi)):
        raise CalibrationError(f"{describe_sample(sample, index)} produced NaN value(s) in tensor '{tensor}'")
    observer.update(np.array([lo, hi], dtype=np.float32))


@dataclass(frozen=True)
class Strategy:
    """One way of collecting ranges (see the module docstring).

    Attributes:
        summarize: expose in-graph ``[min, max, sum]`` summaries instead of the tensors themselves.
        feed: consumes one group's outputs.
    """

    summarize: bool
    feed: type[Feed]

    def tensor_sizes(self, model: Model, names: Sequence[str], first: Mapping[str, np.ndarray]) -> dict[str, int | None]:
        """What one sample of each exposed tensor costs, for planning groups under the memory budget."""
        return {n: _SUMMARY_NBYTES for n in names} if self.summarize else tensor_nbytes(model, first)

    def uses_arena(self) -> bool:
        """Whether onnxruntime's memory arena stays on.

        On for summaries (outputs are three numbers, activations are freed as onnxruntime's
        planner sees fit); off for full tensors, whose outputs must not pin memory.
        """
        return self.summarize


_FULL_TENSORS = Strategy(summarize=False, feed=_FullTensors)
_SUMMARIES = Strategy(summarize=True, feed=_Summaries)
_MINMAX_SUMMARIES = Strategy(summarize=True, feed=_MinMaxSummaries)


def choose_strategy(method: str, per_channel_axis: int | None) -> Strategy:
    """The strategy for an observer method: summaries suffice for per-tensor min-max families only."""
    if per_channel_axis is not None:
        return _FULL_TENSORS
    if method == "minmax":
        return _MINMAX_SUMMARIES
    if method == "moving-average":
        return _SUMMARIES
    return _FULL_TENSORS
