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

A tensor of a ``Loop``/``Scan`` body arrives stacked over the iterations (``depth`` leading axes,
see :mod:`.expose`), and every iteration is merged into the sample's one observation: a full tensor
is observed whole (per-tensor observers) or one iteration at a time (per-channel observers, whose
axis refers to the body tensor), and summaries ``[..., 3]`` are folded into one ``[min, max, sum]``.
An ``If`` branch that did not run shows up as an empty tensor or the neutral summary
``[+inf, -inf, 0]``; neither is observed, so observers see only the branch taken.

A strategy says whether to expose summaries, what one sample of a tensor costs in memory (for
:mod:`._groups`) and which :class:`Feed` consumes one tensor group's outputs.

A summary costs 12 bytes only if the tensor it reduces is freed when a plain inference would free
it. onnxruntime's default execution order (depth first from the graph outputs) runs the summary
nodes, which :mod:`.expose` appends to the graph, after the whole model: every summarized tensor
then stays alive to the end of the run (a chain of 16 tensors of 8 MB peaked at 137 MB instead of
18 MB). :func:`schedule_summaries_early` moves each appended node right after the nodes it reads
from, and the collector runs the node list in that order (``execution_order="node-list"``).
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import ir
from ..errors import CalibrationError
from ..ir import Model
from ._groups import tensor_nbytes
from ._samples import describe_sample
from .observers import Observer

__all__ = ["Feed", "Strategy", "choose_strategy", "merge_summaries", "schedule_summaries_early"]

#: Bytes of one tensor's in-graph summary per sample: three float32 numbers.
_SUMMARY_NBYTES = 12


class Feed(ABC):
    """Consumes one tensor group's session outputs, sample by sample, into the tensors' observers.

    Args:
        tensors: the tensor observed through each session output, in output order.
        observers: observer by tensor name (one exists for every name in ``tensors``).
        depths: leading iteration axes of each output (0 outside Loop/Scan bodies; default all 0).
    """

    def __init__(self, tensors: Sequence[str], observers: Mapping[str, Observer], depths: Sequence[int] | None = None) -> None:
        self.tensors = list(tensors)
        self.observers = observers
        self.depths = list(depths) if depths is not None else [0] * len(self.tensors)

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
        for tensor, value, depth in zip(self.tensors, values, self.depths):
            observer = self.observers[tensor]
            if depth and observer.per_channel_axis is not None and value.size:
                # The channel axis is the body tensor's: observe each iteration on its own.
                for step in value.reshape((-1, *value.shape[depth:])):
                    _observe(observer, step, tensor, sample, index)
            else:
                _observe(observer, value, tensor, sample, index)


class _Summaries(Feed):
    """Each ``[min, max, marker]`` summary goes to its observer as a two-element batch."""

    def update(self, values: Sequence[np.ndarray], sample: Any, index: int) -> None:
        for tensor, value in zip(self.tensors, values):
            _observe_summary(self.observers[tensor], merge_summaries(value), tensor, sample, index)


class _MinMaxSummaries(Feed):
    """Running min/max of many tensors from their in-graph summaries, one vectorized step per sample.

    The observers get the running extremes once, in :meth:`finish`, and remember the real sample
    count in ``summarized_samples`` (they saw one update).
    """

    _NOT_RUN = np.array([np.inf, -np.inf, 0.0])

    def __init__(self, tensors: Sequence[str], observers: Mapping[str, Observer], depths: Sequence[int] | None = None) -> None:
        super().__init__(tensors, observers, depths)
        self.lo = np.full(len(self.tensors), np.inf)
        self.hi = np.full(len(self.tensors), -np.inf)
        self.seen = np.zeros(len(self.tensors), dtype=np.int64)

    def update(self, values: Sequence[np.ndarray], sample: Any, index: int) -> None:
        merged = [merge_summaries(v) for v in values]
        ran = np.array([m is not None for m in merged])
        arr = np.stack([m if m is not None else self._NOT_RUN for m in merged])
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


def merge_summaries(value: np.ndarray) -> np.ndarray | None:
    """One ``[min, max, sum]`` (float64) from a summary stacked over iterations (``[..., 3]``).

    None when nothing ran: no iteration, or only If branches that were not taken (their neutral
    ``[+inf, -inf, 0]`` placeholder). ``np.min`` / ``np.max`` propagate NaN, so NaN detection holds.
    """
    if value.size == 0 or value.size % 3:
        return None
    rows = np.asarray(value, np.float64).reshape(-1, 3)
    lo, hi = rows[:, 0].min(), rows[:, 1].max()
    if lo == np.inf and hi == -np.inf:
        return None
    return np.array([lo, hi, rows[:, 2].sum()])


def _observe_summary(observer: Observer, value: np.ndarray | None, tensor: str, sample: Any, index: int) -> None:
    """Feed a merged ``[min, max, marker]`` (see expose._summary_of) to a min-max observer."""
    if value is None:
        return  # not computed on this sample (an If branch not taken, a loop without iterations)
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


def schedule_summaries_early(graph: ir.Graph, originals: int) -> None:
    """Reorder ``graph.nodes`` in place: nodes after the first ``originals`` run as early as they can.

    The first ``originals`` nodes (the model's own, in their order) keep their relative order; each
    later node (an in-graph summary that :mod:`.expose` appended) is placed right after the last
    node it depends on, so the tensor it reduces is freed when the model would free it. A stable
    Kahn sort on the key ``(position of the latest original node it follows, tie-break)`` keeps the
    result topological whatever the input order. Nested graphs are left alone (their tensors are
    one iteration's).
    """
    nodes = graph.nodes
    if len(nodes) <= originals:
        return
    index = {id(n): i for i, n in enumerate(nodes)}
    deps: list[set[int]] = [set() for _ in nodes]
    users: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        tensors = list(node.inputs)
        for sub in ir.subgraphs_of(node):
            tensors.extend(ir.foreign_inputs(sub))
        for t in tensors:
            for p in t.inputs:
                j = index.get(id(p))
                if j is not None and j != i and j not in deps[i]:
                    deps[i].add(j)
                    users[j].append(i)
    # An original node's key is its position; an appended node's is that of its latest dependency.
    anchor = [i if i < originals else -1 for i in range(len(nodes))]
    missing = [len(d) for d in deps]
    ready = [(anchor[i], i) for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            if u >= originals:
                anchor[u] = max(anchor[u], anchor[i])
            missing[u] -= 1
            if missing[u] == 0:
                heapq.heappush(ready, (anchor[u], u))
    if len(order) == len(nodes):  # a cycle is onnxruntime's to report
        graph.nodes = [nodes[i] for i in order]
