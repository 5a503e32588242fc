"""Per-channel activation statistics for data-driven channel pruning (``mean-activation``, ``apoz``).

:func:`collect_channel_stats` runs onnxruntime once per sample on an in-memory copy of the model whose
requested intermediate tensors are exposed as extra graph outputs, and accumulates per-channel sums
as it goes (memory does not grow with the number of samples):

- ``mean_abs[c] = Σ |x[..., c, ...]| / count[c]`` over every sample and position,
- ``apoz[c] = #(x[..., c, ...] == 0) / count[c]``, the *average percentage of zeros* (meaningful on
  ReLU outputs, where a channel that is almost always 0 carries little information).

``prune-channels`` reads the result from ``ctx.channel_stats``; the tensors it looks up
are given by :func:`onnxq.passes.pruning.prune_channels.channel_stat_tensors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from onnxq import ir
from onnxq.errors import CalibrationDataError, ConfigError
from onnxq.runtime.session import make_session, run_session

__all__ = ["collect_channel_stats"]


class _ChannelAccumulator:
    """Streaming per-channel sums for one tensor."""

    def __init__(self, name: str, axis: int) -> None:
        self.name, self.axis = name, axis
        self.abs_sum: np.ndarray | None = None
        self.zeros: np.ndarray | None = None
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.ndim == 0 or not -x.ndim <= self.axis < x.ndim:
            raise CalibrationDataError(f"tensor '{self.name}' has shape {x.shape}, no channel axis {self.axis}")
        moved = np.moveaxis(x, self.axis, 0).reshape(x.shape[self.axis], -1)
        abs_sum = np.abs(moved.astype(np.float64)).sum(axis=1)
        zeros = np.count_nonzero(moved == 0, axis=1).astype(np.float64)
        if self.abs_sum is None:
            self.abs_sum, self.zeros = abs_sum, zeros
        elif self.abs_sum.shape != abs_sum.shape:
            raise CalibrationDataError(f"tensor '{self.name}': channel count changed between samples ({self.abs_sum.size} then {abs_sum.size})")
        else:
            self.abs_sum += abs_sum
            assert self.zeros is not None  # set together with abs_sum
            self.zeros += zeros
        self.count += moved.shape[1]

    def result(self, samples: int) -> dict[str, Any]:
        assert self.abs_sum is not None and self.zeros is not None
        count = max(self.count, 1)
        return {"mean_abs": self.abs_sum / count, "apoz": self.zeros / count, "samples": samples}


def collect_channel_stats(
    model: Any,
    samples: Iterable[Mapping[str, np.ndarray]],
    tensors: Mapping[str, int] | Sequence[str],
    *,
    threads: int = 1,
) -> dict[str, dict[str, Any]]:
    """Per-channel ``mean_abs`` and ``apoz`` of intermediate ``tensors`` over ``samples``.

    Args:
        model: a :class:`onnxq.ir.Model` (not modified), ModelProto, bytes or path.
        samples: feeds (dicts of input name → array), iterated once.
        tensors: tensor name → channel axis (negative counts from the end), or a list of names
            whose channel axis is 1 (NCHW). ``channel_stat_tensors(model)`` gives the mapping the
            pruning pass needs.
        threads: onnxruntime intra-op threads.

    Returns:
        ``{tensor: {"mean_abs": float64[C], "apoz": float64[C], "samples": n}}``.

    Raises:
        ConfigError: a tensor is not computed by any node of the model.
        CalibrationDataError: no samples, or a tensor has no such channel axis.
    """
    base = model if isinstance(model, ir.Model) else ir.load(model)
    work = ir.clone(base)
    axes = dict(tensors) if isinstance(tensors, Mapping) else {name: 1 for name in tensors}
    produced = {t.name: t for node in work.graph.nodes for t in node.outputs if t.name}
    missing = [name for name in axes if name not in produced]
    if missing:
        examples = ", ".join(list(produced)[:6])
        raise ConfigError(f"channel statistics: tensor '{missing[0]}' is not computed by any node of {base.source}; e.g. {examples}")
    if not axes:
        return {}
    ir.infer_shapes(work)  # graph outputs need a dtype
    outputs = {t.name for t in work.graph.outputs}
    for name in axes:
        t = produced[name]
        if name not in outputs:
            if t.dtype is None:
                t.dtype = np.float32
            work.graph.outputs.append(t)
    session = make_session(work, threads=threads, where=f"{base.source} (channel statistics)")
    names = list(axes)
    accs = [_ChannelAccumulator(name, axes[name]) for name in names]
    count = 0
    for sample in samples:
        for acc, value in zip(accs, run_session(session, dict(sample), names)):
            acc.update(value)
        count += 1
    if count == 0:
        raise CalibrationDataError("channel statistics: the data source yielded no samples")
    return {acc.name: acc.result(count) for acc in accs}
