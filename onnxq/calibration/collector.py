"""Streaming activation-range collection on onnxruntime, within a memory budget.

For each group of tensors the collector builds an in-memory copy of the model with those tensors
exposed as outputs (:mod:`.expose`), runs onnxruntime sample by sample, and feeds every output to
that tensor's observer before the next sample runs. Memory therefore holds one sample's exposed
activations plus the observers' fixed-size state, whatever the number of samples.

When one sample's exposed activations would exceed ``max_memory_mb`` the tensors are split into
groups that fit, and the data is read once per group (sizes come from shape inference on the first
sample's actual input shapes; unknown sizes count as the largest known one).

NaN in an activation is an error naming the sample and the tensor. ±Inf (and |x| >= 1e30, e.g.
attention masks of -3.4e38) is counted by the observer and leaves the tensor flagged as
saturating, so quantizers keep it in float.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
from itertools import islice
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import ir
from .._version import __version__
from ..errors import CalibrationError
from ..ir import Model
from ..progress import track
from ..runtime.session import make_session
from .expose import expose_tensors, float_activations
from .observers import Observer, make_observer
from .ranges import RangeSet

__all__ = ["CalibrationStats", "collect_ranges", "plan_groups", "replayable", "DEFAULT_MAX_MEMORY_MB"]

log = logging.getLogger(__name__)

#: Default budget for one sample's exposed activations (per pass over the data).
DEFAULT_MAX_MEMORY_MB = 1024.0


@dataclass
class CalibrationStats:
    """What a calibration run did: for the summary table and JSON reports."""

    tensors: int = 0
    samples: int = 0
    groups: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    unreachable: dict[str, str] = field(default_factory=dict)
    saturating: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tensors": self.tensors,
            "samples": self.samples,
            "groups": self.groups,
            "seconds": round(self.seconds, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "unreachable": self.unreachable,
            "saturating": self.saturating,
        }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tensor_nbytes(model: Model, first: Mapping[str, np.ndarray]) -> dict[str, int | None]:
    """Estimated bytes of each tensor for one sample shaped like ``first``."""
    copy = ir.clone(model)
    for t in copy.graph.inputs:
        if t.name in first:
            t.shape = list(first[t.name].shape)
    ir.infer_shapes(copy)
    sizes: dict[str, int | None] = {}
    for g in ir.iter_graphs(copy.graph):
        for t in list(g.inputs) + [o for n in g.nodes for o in n.outputs]:
            shape = t.shape
            if isinstance(shape, (list, tuple)) and all(isinstance(d, int) and d >= 0 for d in shape) and t.dtype is not None:
                try:
                    sizes[t.name] = int(np.prod(shape)) * np.dtype(t.dtype).itemsize
                except TypeError:
                    sizes[t.name] = None
            else:
                sizes.setdefault(t.name, None)
    return sizes


def plan_groups(names: Sequence[str], sizes: Mapping[str, int | None], max_bytes: float) -> list[list[str]]:
    """Split ``names`` into consecutive groups whose summed sizes stay within ``max_bytes``.

    A tensor larger than the budget on its own gets a group of its own (it must be observed).
    """
    known = [s for s in sizes.values() if s]
    fallback = max(known) if known else 0
    groups: list[list[str]] = []
    current: list[str] = []
    used = 0.0
    for name in names:
        size = sizes.get(name) or fallback
        if current and used + size > max_bytes:
            groups.append(current)
            current, used = [], 0.0
        current.append(name)
        used += size
    if current:
        groups.append(current)
    return groups


def replayable(source: Any, limit: int | None = None) -> "_Replayable":
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


def _describe(sample: Any, index: int) -> str:
    return getattr(sample, "where", None) or f"sample #{index}"


def collect_ranges(
    model: Model,
    samples: Iterable[Mapping[str, np.ndarray]],
    *,
    tensors: Sequence[str] | None = None,
    method: str = "minmax",
    options: Mapping[str, Any] | None = None,
    per_channel_axis: int | None = None,
    max_memory_mb: float | None = DEFAULT_MAX_MEMORY_MB,
    max_samples: int | None = None,
    threads: int = 0,
    progress: bool | None = None,
) -> tuple[RangeSet, CalibrationStats]:
    """Observe the ranges of ``tensors`` (default: every float activation) over ``samples``.

    Args:
        model: the float model (not modified).
        samples: input feeds, e.g. a :class:`~onnxq.data.DataSource`.
        tensors: tensor names to observe.
        method: observer name (``minmax``, ``moving-average``, ``percentile``, ``entropy``, ``mse``).
        options: observer options (e.g. ``{"percentile": 99.99}``).
        per_channel_axis: observe per channel along this axis (per tensor by default).
        max_memory_mb: budget for one sample's exposed activations; None for no limit.
        max_samples: stop after this many samples.
        threads: onnxruntime intra-op threads (0 = onnxruntime's default).
        progress: show a progress bar (default: on a terminal).

    Returns:
        The ranges and run statistics.

    Raises:
        CalibrationError: no samples, NaN activations (naming sample and tensor), or onnxruntime
            failing on a sample (quoting its message).
        InvalidModelError: onnxruntime cannot load the model.
    """
    start = time.perf_counter()
    work = ir.clone(model)
    if tensors is None:
        ir.infer_shapes(work)  # dtypes tell which activations are float
    names = list(tensors) if tensors is not None else float_activations(work)
    replay = replayable(samples)
    first = next(iter(replay), None)
    if first is None:
        raise CalibrationError(f"{model.source}: no calibration samples")
    budget = float("inf") if max_memory_mb is None else max_memory_mb * 2**20
    summarize_only = method in ("minmax", "moving-average") and per_channel_axis is None
    sizes = {n: 12 for n in names} if summarize_only else _tensor_nbytes(work, first)
    groups = plan_groups(names, sizes, budget) if names else []
    observers: dict[str, Observer] = {}
    stats = CalibrationStats(tensors=len(names), groups=len(groups))
    show = progress
    # Min-max observers only need each tensor's extremes: reduce in the graph, copy three numbers.
    summarize = summarize_only
    for gi, group in enumerate(groups):
        exposed = expose_tensors(work, group, summarize=summarize)
        stats.unreachable.update(exposed.unreachable)
        # Graph optimizations off: which tensors are exposed changes what onnxruntime may fuse, and
        # ranges must not depend on how tensors were grouped.
        # The arena stays on for summaries (outputs are three numbers, activations are freed as
        # onnxruntime's planner sees fit); off for full tensors, whose outputs must not pin memory.
        session = make_session(exposed.model, threads=threads, optimization="disable", where=model.source, enable_arena=summarize)
        outputs = list(exposed.output_to_tensor)
        for name in exposed.output_to_tensor.values():
            observers.setdefault(name, make_observer(method, per_channel_axis=per_channel_axis, **dict(options or {})))
        label = f"calibrating ({method})" + (f" group {gi + 1}/{len(groups)}" if len(groups) > 1 else "")
        count = 0
        tensors_out = [exposed.output_to_tensor[o] for o in outputs]
        fast = _MinMaxSummaries(tensors_out) if summarize and method == "minmax" else None
        for index, sample in enumerate(track(islice(replay, max_samples), label, total=_length(samples, max_samples), enabled=show)):
            values = _run(session, outputs, sample, index, model.source)
            if fast is not None:
                fast.update(values, sample, index)
            else:
                for tensor, value in zip(tensors_out, values):
                    if summarize:
                        _observe_summary(observers[tensor], value, tensor, sample, index)
                    else:
                        _observe(observers[tensor], value, tensor, sample, index)
            del values
            count += 1
        if fast is not None:
            fast.feed(observers)
        stats.samples = count
        del session
    ranges = {name: _with_samples(obs) for name, obs in observers.items() if obs.samples}
    for name, obs in observers.items():
        if not obs.samples:
            stats.unreachable[name] = "not computed on any sample (e.g. an If branch never taken)"
    stats.saturating = sorted(n for n, r in ranges.items() if r.is_saturating)
    stats.seconds = time.perf_counter() - start
    stats.peak_rss_mb = _peak_rss_mb()
    result = RangeSet(
        ranges,
        model_name=model.source,
        model_sha256=_model_digest(model),
        method=method,
        num_samples=stats.samples,
        onnxq_version=__version__,
    )
    return result, stats


def _length(samples: Any, limit: int | None) -> int | None:
    try:
        n = len(samples)
    except Exception:  # no len, or a CalibrationDataReader whose __len__ is not implemented
        return limit
    return min(n, limit) if limit is not None else n


def _run(session: Any, outputs: list[str], sample: Mapping[str, np.ndarray], index: int, source: str) -> list[np.ndarray]:
    feeds = {i.name: sample[i.name] for i in session.get_inputs() if i.name in sample}
    try:
        return session.run(outputs, feeds)
    except Exception as e:
        msg = " ".join(str(e).split())
        raise CalibrationError(f"{source}: onnxruntime failed on {_describe(sample, index)}: {msg}") from e


def _observe(observer: Observer, value: np.ndarray, tensor: str, sample: Any, index: int) -> None:
    if value.size == 0 or value.dtype.kind != "f":
        return  # a not-taken If branch yields an empty dummy
    if np.isnan(np.min(value)):
        bad = int(np.isnan(value).sum())
        raise CalibrationError(f"{_describe(sample, index)} produced {bad} NaN value(s) in tensor '{tensor}'")
    observer.update(value)


class _MinMaxSummaries:
    """Running min/max of many tensors from their in-graph summaries, one vectorized step per sample.

    Per-tensor observer calls cost more than onnxruntime's reductions on models with hundreds of
    tensors; the running extremes go to the observers once at the end (min-max is order-free).
    """

    _NOT_RUN = np.array([np.inf, -np.inf, 0.0])

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.lo = np.full(len(names), np.inf)
        self.hi = np.full(len(names), -np.inf)
        self.seen = np.zeros(len(names), dtype=np.int64)

    def update(self, values: list[np.ndarray], sample: Any, index: int) -> None:
        ran = np.array([v.size >= 3 for v in values])
        arr = np.stack([np.asarray(v[:3], np.float64) if ok else self._NOT_RUN for v, ok in zip(values, ran)])
        lo, hi, total = arr[:, 0], arr[:, 1], arr[:, 2]
        bad = ran & (np.isnan(lo) | np.isnan(hi) | (np.isnan(total) & np.isfinite(lo) & np.isfinite(hi)))
        if bad.any():
            tensor = self.names[int(np.argmax(bad))]
            raise CalibrationError(f"{_describe(sample, index)} produced NaN value(s) in tensor '{tensor}'")
        self.lo = np.minimum(self.lo, np.where(ran, lo, np.inf))
        self.hi = np.maximum(self.hi, np.where(ran, hi, -np.inf))
        self.seen += ran

    def feed(self, observers: dict[str, Observer]) -> None:
        for i, name in enumerate(self.names):
            if self.seen[i]:
                obs = observers[name]
                obs.update(np.array([self.lo[i], self.hi[i]], dtype=np.float32))
                obs.summarized_samples = int(self.seen[i])  # type: ignore[attr-defined]


def _with_samples(obs: Observer) -> Any:
    """The observer's range, with the real sample count when it was fed a summary."""
    r = obs.compute_range()
    seen = getattr(obs, "summarized_samples", None)
    return dataclasses.replace(r, samples=seen) if seen else r


def _observe_summary(observer: Observer, value: np.ndarray, tensor: str, sample: Any, index: int) -> None:
    """Feed ``[min, max, marker]`` (see expose._summary_of) to a min-max observer."""
    if value.size < 3:
        return  # a not-taken If branch yields an empty dummy
    lo, hi, marker = (float(v) for v in value[:3])
    if np.isnan(lo) or np.isnan(hi) or (np.isnan(marker) and np.isfinite(lo) and np.isfinite(hi)):
        raise CalibrationError(f"{_describe(sample, index)} produced NaN value(s) in tensor '{tensor}'")
    observer.update(np.array([lo, hi], dtype=np.float32))


def _model_digest(model: Model) -> str:
    """SHA-256 of the graph's structure (ops, names, connections, weight shapes).

    Enough to tell a ranges file made for another model, without serializing the weights.
    """
    import hashlib

    h = hashlib.sha256()
    for node in ir.iter_nodes(model.graph):
        h.update(f"{node.op}|{node.name}|{[t.name for t in node.inputs]}|{[t.name for t in node.outputs]};".encode())
        for t in node.inputs:
            if ir.is_constant(t):
                h.update(f"{t.name}:{list(t.shape)};".encode())
    return h.hexdigest()
