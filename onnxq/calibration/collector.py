"""Streaming activation-range collection on onnxruntime, within a memory budget.

For each group of tensors the collector builds an in-memory copy of the model with those tensors
exposed as outputs (:mod:`.expose`), runs onnxruntime sample by sample, and feeds every output to
that tensor's observer before the next sample runs. Memory therefore holds one sample's exposed
activations plus the observers' fixed-size state, whatever the number of samples. The model's own
inputs are observed straight from the sample (exposing them would copy them out of onnxruntime).

What ``max_memory_mb`` bounds: the working memory of one pass over the data beyond running the
model on one sample — the exposed activations of one sample plus the observers' work on them.
Not counted: the model and its onnxruntime session, the activations onnxruntime needs anyway to
compute the exposed ones (what one plain inference of the model takes), and the samples (one at a
time from a re-iterable source; a one-shot reader's samples are cached as read, since each pass
reads them again). A tensor larger than the budget gets a pass of its own, so the bound is then
that tensor's size. Measured on a chain of 16 activations of 8 MiB
(``tests/calibration/test_memory_budget.py``, peak RSS growth of the call): percentile with no
budget 145 MiB (1 group), 64 → 85 MiB (2 groups), 16 → 34 (8), 4 → 26 (16); minmax summaries 18
MiB. Growth stays within the budget (or the largest tensor) plus 32 MiB, which covers one plain
inference (here two live activations) and the observers' chunks. Four things make it hold:

* sessions keep onnxruntime's arena on (``mem_pattern`` off): one sample's outputs are carved from
  the arena and handed to numpy without a copy, and the next sample reuses the same memory. With
  the arena off the outputs are malloc'd and freed each run, and glibc leaves freed blocks
  resident and fragmented (a group of 17 exposed tensors peaked at twice their size);
* in-graph summaries run right after the tensor they reduce (:mod:`._strategies`), and sessions
  run nodes in list order: onnxruntime's default order ran them last, keeping every summarized
  activation alive to the end of the run (137 MiB instead of 18 on the chain above);
* each group's session is released, and freed memory returned to the system
  (:func:`._memory.release_freed_memory`), before the next group starts;
* observers never copy a whole tensor to float64: histograms bin it in fixed-size chunks; only
  rare paths (NaN/Inf masks, a per-channel observer's transposed copy) cost about one tensor more.

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
from ._memory import release_freed_memory
from ._samples import describe_sample, replayable, sample_count
from ._strategies import Strategy, choose_strategy, schedule_summaries_early
from .expose import expose_tensors, float_activations
from .observers import Observer, make_observer
from .ranges import RangeSet, TensorRange

__all__ = ["CalibrationStats", "collect_ranges", "plan_groups", "replayable", "DEFAULT_MAX_MEMORY_MB"]

log = logging.getLogger(__name__)

#: Default budget for one pass's working memory: one sample's exposed activations and the observers'
#: work on them (see the module docstring for what is not counted).
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
        max_memory_mb: working memory of one pass over the data beyond running the model on one
            sample: that sample's exposed activations plus observer work (see the module
            docstring); tensors are split into groups that fit, one pass each. None: one pass.
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
    from_feed = [] if strategy.summarize else _model_inputs(work, names)
    exposed = [n for n in names if n not in set(from_feed)]
    groups = plan_tensor_groups(exposed, strategy.tensor_sizes(work, exposed, first), max_memory_mb)
    if from_feed:  # observed from the samples: no activation memory, so with the first pass
        groups = [from_feed + groups[0], *groups[1:]] if groups else [from_feed]
    del first  # a re-iterable source makes new arrays on each pass: do not keep a second sample
    run = _Calibration(
        model=model, work=work, replay=replay, strategy=strategy, method=method,
        options=dict(options or {}), per_channel_axis=per_channel_axis, threads=threads,
        progress=progress, total=sample_count(samples, max_samples), max_samples=max_samples,
        from_feed=set(from_feed), order=names,
    )
    stats = CalibrationStats(tensors=len(names), groups=len(groups))
    for gi, group in enumerate(groups):
        label = f"calibrating ({method})" + (f" group {gi + 1}/{len(groups)}" if len(groups) > 1 else "")
        stats.samples = run.collect_group(group, label, stats.unreachable)
        release_freed_memory()  # the group's session and outputs are gone: the next pass starts clean
    return run.result(stats, start)


def _model_inputs(model: Model, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that are inputs of the main graph (every sample holds their values)."""
    inputs = {t.name for t in model.graph.inputs}
    return [n for n in names if n in inputs]


@dataclass(kw_only=True)
class _Calibration:
    """One :func:`collect_ranges` call: what every tensor group shares, and the observers so far.

    ``model`` is the caller's model (named in errors and digested into the ranges file); ``work`` is
    the annotated copy the groups expose tensors of. ``from_feed`` are main-graph inputs observed
    straight from the samples; ``order`` is the order of the resulting ranges.
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
    from_feed: set[str] = field(default_factory=set)
    order: Sequence[str] = ()
    observers: dict[str, Observer] = field(default_factory=dict)

    def collect_group(self, group: list[str], label: str, unreachable: dict[str, str]) -> int:
        """Expose ``group``, run every sample through onnxruntime into the observers.

        Returns:
            The number of samples read.
        """
        inputs = [n for n in group if n in self.from_feed]
        exposed = expose_tensors(self.work, [n for n in group if n not in self.from_feed], summarize=self.strategy.summarize, loops=True)
        unreachable.update(exposed.unreachable)
        outputs = list(exposed.output_to_tensor)
        if self.strategy.summarize:
            schedule_summaries_early(exposed.model.graph, len(self.work.graph.nodes))
        # Graph optimizations off: which tensors are exposed changes what onnxruntime may fuse, and
        # ranges must not depend on how tensors were grouped. The arena on, its memory planning off,
        # nodes run in list order: see the module docstring.
        session = make_session(
            exposed.model, threads=self.threads, optimization="disable", where=self.model.source,
            mem_pattern=False, execution_order="node-list",
        ) if outputs else None
        tensors = [exposed.output_to_tensor[o] for o in outputs] + inputs
        for name in tensors:
            if name not in self.observers:
                self.observers[name] = make_observer(self.method, per_channel_axis=self.per_channel_axis, **self.options)
        feed = self.strategy.feed(tensors, self.observers, [exposed.output_depth[o] for o in outputs] + [0] * len(inputs))
        count = 0
        samples = islice(self.replay, self.max_samples)
        for index, sample in enumerate(track(samples, label, total=self.total, enabled=self.progress)):
            values = _run(session, outputs, sample, index, self.model.source) if session is not None else []
            values += [_input_value(sample, name, index, self.model.source) for name in inputs]
            feed.update(values, sample, index)
            del values  # before the next sample runs: one sample's activations in memory at a time
            count += 1
        feed.finish()
        return count

    def result(self, stats: CalibrationStats, start: float) -> tuple[RangeSet, CalibrationStats]:
        """The ranges of every observed tensor; tensors never computed are reported unreachable."""
        observers = {n: self.observers[n] for n in self.order if n in self.observers}  # grouping must not show
        ranges = {name: _with_samples(obs) for name, obs in observers.items() if obs.samples}
        for name, obs in observers.items():
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


def _input_value(sample: Mapping[str, np.ndarray], name: str, index: int, source: str) -> np.ndarray:
    """A model input's value in ``sample``, as onnxruntime was fed it."""
    if name not in sample:
        raise CalibrationError(f"{source}: {describe_sample(sample, index)} has no value for model input '{name}'")
    return np.asarray(sample[name])


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
