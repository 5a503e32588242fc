"""Streaming activation-range collection on onnxruntime, within a memory budget.

For each group of tensors the collector builds an in-memory copy of the model with those tensors
exposed as outputs (:mod:`.expose`), runs onnxruntime sample by sample, and feeds every output to
that tensor's observer before the next sample runs. Memory therefore holds one sample's exposed
activations plus the observers' fixed-size state, whatever the number of samples.

The pieces, one concern each: :mod:`._strategies` decides how activations reach the observers
(full tensors, or min/max summaries computed in the graph), :mod:`._groups` splits the tensors into
groups whose exposed activations fit ``max_memory_mb`` (the data is then read once per group), and
:mod:`._samples` makes one-shot sample sources readable once per group. This module runs the groups.

NaN in an activation is an error naming the sample and the tensor. ±Inf (and |x| >= 1e30, e.g.
attention masks of -3.4e38) is counted by the observer and leaves the tensor flagged as
saturating, so quantizers keep it in float.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from .. import ir
from .._version import __version__
from ..errors import CalibrationError
from ..ir import Model
from ..progress import track
from ..runtime.session import make_session
from ._groups import plan_groups, plan_tensor_groups
from ._samples import describe_sample, replayable, sample_count
from ._strategies import Strategy, choose_strategy
from .expose import expose_tensors, float_activations
from .observers import Observer, make_observer
from .ranges import RangeSet, TensorRange

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
    if not ir.serializes_cheaply(model):
        # onnxruntime is about to hold every weight: weights earlier passes computed in memory
        # (smoothing...) move to a mapped scratch file first, so they are not resident twice.
        # Values do not change. Before the clone, which would otherwise keep the in-memory arrays.
        ir.spill_weights(model)
    work = ir.clone(model)
    if tensors is None:
        ir.infer_shapes(work)  # dtypes tell which activations are float
    names = list(tensors) if tensors is not None else float_activations(work)
    replay = replayable(samples)
    first = next(iter(replay), None)
    if first is None:
        raise CalibrationError(f"{model.source}: no calibration samples")
    strategy = choose_strategy(method, per_channel_axis)
    groups = plan_tensor_groups(names, strategy.tensor_sizes(work, names, first), max_memory_mb)
    run = _Calibration(
        model=model, work=work, replay=replay, strategy=strategy, method=method,
        options=dict(options or {}), per_channel_axis=per_channel_axis, threads=threads,
        progress=progress, total=sample_count(samples, max_samples), max_samples=max_samples,
    )
    stats = CalibrationStats(tensors=len(names), groups=len(groups))
    for gi, group in enumerate(groups):
        label = f"calibrating ({method})" + (f" group {gi + 1}/{len(groups)}" if len(groups) > 1 else "")
        stats.samples = run.collect_group(group, label, stats.unreachable)
    return run.result(stats, start)


@dataclass(kw_only=True)
class _Calibration:
    """One :func:`collect_ranges` call: what every tensor group shares, and the observers so far.

    ``model`` is the caller's model (named in errors and digested into the ranges file); ``work`` is
    the annotated copy the groups expose tensors of.
    """

    model: Model
    work: Model
    replay: Iterable[Mapping[str, np.ndarray]]
    strategy: Strategy
    method: str
    options: dict[str, Any]
    per_channel_axis: int | None
    threads: int
    progress: bool | None
    total: int | None
    max_samples: int | None
    observers: dict[str, Observer] = field(default_factory=dict)

    def collect_group(self, group: list[str], label: str, unreachable: dict[str, str]) -> int:
        """Expose ``group``, run every sample through onnxruntime into the observers.

        Returns:
            The number of samples read.
        """
        exposed = expose_tensors(self.work, group, summarize=self.strategy.summarize, loops=True)
        unreachable.update(exposed.unreachable)
        # Graph optimizations off: which tensors are exposed changes what onnxruntime may fuse, and
        # ranges must not depend on how tensors were grouped.
        session = make_session(
            exposed.model,
            threads=self.threads,
            optimization="disable",
            where=self.model.source,
            enable_arena=self.strategy.uses_arena(),
        )
        outputs = list(exposed.output_to_tensor)
        tensors = [exposed.output_to_tensor[o] for o in outputs]
        for name in tensors:
            if name not in self.observers:
                self.observers[name] = make_observer(self.method, per_channel_axis=self.per_channel_axis, **self.options)
        feed = self.strategy.feed(tensors, self.observers, [exposed.output_depth[o] for o in outputs])
        count = 0
        samples = islice(self.replay, self.max_samples)
        for index, sample in enumerate(track(samples, label, total=self.total, enabled=self.progress)):
            values = _run(session, outputs, sample, index, self.model.source)
            feed.update(values, sample, index)
            del values  # before the next sample runs: one sample's activations in memory at a time
            count += 1
        feed.finish()
        return count

    def result(self, stats: CalibrationStats, start: float) -> tuple[RangeSet, CalibrationStats]:
        """The ranges of every observed tensor; tensors never computed are reported unreachable."""
        ranges = {name: _with_samples(obs) for name, obs in self.observers.items() if obs.samples}
        for name, obs in self.observers.items():
            if not obs.samples:
                stats.unreachable[name] = "not computed on any sample (e.g. an If branch never taken)"
        stats.saturating = sorted(n for n, r in ranges.items() if r.is_saturating)
        stats.seconds = time.perf_counter() - start
        stats.peak_rss_mb = _peak_rss_mb()
        result = RangeSet(
            ranges,
            model_name=self.model.source,
            model_sha256=_model_digest(self.model),
            method=self.method,
            num_samples=stats.samples,
            onnxq_version=__version__,
        )
        return result, stats


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(session: Any, outputs: list[str], sample: Mapping[str, np.ndarray], index: int, source: str) -> list[np.ndarray]:
    feeds = {i.name: sample[i.name] for i in session.get_inputs() if i.name in sample}
    try:
        return session.run(outputs, feeds)
    except Exception as e:
        msg = " ".join(str(e).split())
        raise CalibrationError(f"{source}: onnxruntime failed on {describe_sample(sample, index)}: {msg}") from e


def _with_samples(obs: Observer) -> TensorRange:
    """The observer's range, with the real sample count when it was fed a summary."""
    r = obs.compute_range()
    seen = getattr(obs, "summarized_samples", None)
    return dataclasses.replace(r, samples=seen) if seen else r


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
