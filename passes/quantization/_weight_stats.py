"""Streaming statistics of the inputs of MatMul / Gemm weights, for data-driven weight-only rounding.

GPTQ needs, per layer, ``H = 2 · E[x xᵀ]`` over the rows ``x`` (length ``K``) of the layer's input;
AWQ needs the per-channel mean magnitude ``E|x_k|`` and a small sample of rows to judge its scale
search on. Layers reading the same tensor (Q/K/V projections) share one set of statistics.

The float model runs on onnxruntime with the input tensors exposed (:func:`stream_tensors` of the
compensation passes), one sample at a time; each sample's rows are folded into running sums
(``Σ x xᵀ`` in float64, ``Σ |x|``, the row count) and a seeded reservoir of rows, then dropped. So
memory holds one sample's exposed tensors plus fixed-size state, whatever the number of samples.

Within the memory budget the tensors are split into consecutive groups (the calibration planner,
:func:`~onnxq.calibration._groups.plan_tensor_groups`), each tensor costing its activation bytes for
one sample (shape inference on the first sample) plus its running state (``8·K²`` for ``Σ x xᵀ``).
The caller handles one group at a time (statistics → quantized weights → statistics dropped) and
the data is read once per group.

**Row reservoir**: every row draws a uniform key (seeded ``numpy`` generator); the ``rows`` rows
with the smallest keys so far are kept, which is a uniform sample without replacement of all rows
seen, in bounded memory, and the same rows for the same data and seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from onnxq.calibration._groups import plan_tensor_groups, tensor_nbytes
from onnxq.ir import Model
from onnxq.passes.compensation._stream import stream_tensors

__all__ = ["InputStats", "RowReservoir", "input_groups", "collect_input_stats"]


@dataclass
class RowReservoir:
    """A uniform sample of at most ``size`` rows of everything :meth:`update` saw (see module docstring)."""

    size: int
    rng: np.random.Generator
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rows: np.ndarray | None = None

    def update(self, rows: np.ndarray) -> None:
        """Offer ``rows[R, K]``; keeps the ``size`` smallest keys of old and new rows."""
        keys = self.rng.random(len(rows))
        if len(rows) > self.size:
            pick = np.sort(np.argpartition(keys, self.size)[: self.size])
            rows, keys = rows[pick], keys[pick]
        rows = rows.astype(np.float32)
        both_keys = np.concatenate([self.keys, keys])
        both = rows if self.rows is None else np.concatenate([self.rows, rows])
        if len(both_keys) > self.size:
            pick = np.sort(np.argpartition(both_keys, self.size)[: self.size])
            both, both_keys = both[pick], both_keys[pick]
        self.rows, self.keys = both, both_keys


@dataclass
class InputStats:
    """Running statistics of one input tensor's rows (``K`` values each).

    Attributes:
        gram: ``Σ x xᵀ`` (float64 ``[K, K]``), when asked for.
        abs_sum / sq_sum: ``Σ |x|`` and ``Σ x²`` (float64 ``[K]``).
        count: rows seen.
        reservoir: a row sample, when asked for.
    """

    k: int
    gram: np.ndarray | None
    abs_sum: np.ndarray
    reservoir: RowReservoir | None
    sq_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    count: int = 0

    def __post_init__(self) -> None:
        if self.sq_sum.shape != (self.k,):
            self.sq_sum = np.zeros(self.k)

    def update(self, rows: np.ndarray) -> None:
        """Add rows ``[R, K]``."""
        x = np.asarray(rows, np.float64)
        if self.gram is not None:
            self.gram += x.T @ x
        self.abs_sum += np.abs(x).sum(axis=0)
        self.sq_sum += np.einsum("rk,rk->k", x, x)
        self.count += len(x)
        if self.reservoir is not None:
            self.reservoir.update(x)

    @property
    def hessian(self) -> np.ndarray:
        """``H = 2 · E[x xᵀ]``."""
        assert self.gram is not None, "statistics collected without the Gram matrix"
        return 2.0 * self.gram / max(self.count, 1)

    @property
    def mean_abs(self) -> np.ndarray:
        """``E|x_k|`` per input channel."""
        return self.abs_sum / max(self.count, 1)

    @property
    def mean_sq(self) -> np.ndarray:
        """``E[x_k²]`` per input channel (``diag H / 2``)."""
        return self.sq_sum / max(self.count, 1)

    @property
    def rows(self) -> np.ndarray:
        """The sampled rows ``[R, K]`` (float32; empty without a reservoir)."""
        if self.reservoir is None or self.reservoir.rows is None:
            return np.zeros((0, self.k), np.float32)
        return self.reservoir.rows


def _rows_of(value: np.ndarray, k: int, transposed: bool) -> np.ndarray:
    """A layer input as rows of ``K`` values (Gemm ``transA=1``: the input is ``[K, M]``)."""
    v = np.asarray(value)
    return v.T if transposed else v.reshape(-1, k)


def input_groups(
    model: Model, inputs: Mapping[str, int], first: Mapping[str, np.ndarray], *, gram: bool, rows: int, max_memory_mb: float | None
) -> list[list[str]]:
    """Consecutive groups of ``inputs`` (tensor → ``K``) whose activations plus state fit the budget."""
    sizes = tensor_nbytes(model, first)
    known = [s for s in sizes.values() if s]
    fallback = max(known) if known else 0
    cost: dict[str, int | None] = {}
    for name, k in inputs.items():
        act = sizes.get(name) or fallback
        cost[name] = act + (8 * k * k if gram else 0) + 4 * rows * k + 16 * k
    return plan_tensor_groups(list(inputs), cost, max_memory_mb)


def collect_input_stats(
    model: Model,
    inputs: Mapping[str, tuple[int, bool]],
    data: Iterable[Mapping[str, np.ndarray]],
    *,
    samples: int,
    gram: bool,
    rows: int = 0,
    seed: int = 0,
) -> dict[str, InputStats]:
    """Statistics of the tensors ``inputs`` (name → ``(K, transposed)``) over the first ``samples`` samples.

    One onnxruntime session with every named tensor exposed; graph inputs come from the feeds.

    Raises:
        CalibrationError: a tensor cannot be exposed or is not finite on a sample (naming both).
    """
    stats = {}
    for name, (k, _) in inputs.items():
        reservoir = RowReservoir(rows, np.random.default_rng([seed, zlib.crc32(name.encode())])) if rows else None  # by name: any grouping
        stats[name] = InputStats(k, np.zeros((k, k)) if gram else None, np.zeros(k), reservoir)
    for values in stream_tensors(model, list(inputs), data, max_samples=samples, where="weight-only statistics"):
        for name, (k, transposed) in inputs.items():
            stats[name].update(_rows_of(values[name], k, transposed))
    return stats
