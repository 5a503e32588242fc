"""Tensor groups under a memory budget: which tensors one pass over the data may expose together.

One sample's exposed activations are held in memory at once, so when they would exceed the budget
the tensors are split into consecutive groups that fit and the data is read once per group. Sizes
come from shape inference on the first sample's actual input shapes; unknown sizes count as the
largest known one. A tensor of a ``Loop``/``Scan`` body is exposed stacked over the iterations, so
its size is multiplied by the trip count (a Loop's constant ``M``, a Scan's sequence length); when
that count is unknown the size is too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from .. import ir
from ..ir import Model

__all__ = ["plan_groups", "plan_tensor_groups", "tensor_nbytes"]


def tensor_nbytes(model: Model, first: Mapping[str, np.ndarray]) -> dict[str, int | None]:
    """Estimated bytes of each tensor for one sample shaped like ``first``."""
    copy = ir.clone(model)
    for t in copy.graph.inputs:
        if t.name in first:
            t.shape = list(first[t.name].shape)
    ir.infer_shapes(copy)
    sizes: dict[str, int | None] = {}
    for g, repeats in _repeats(copy.graph):
        for t in list(g.inputs) + [o for n in g.nodes for o in n.outputs]:
            shape = t.shape
            if repeats is not None and isinstance(shape, (list, tuple)) and all(isinstance(d, int) and d >= 0 for d in shape) and t.dtype is not None:
                try:
                    sizes[t.name] = int(np.prod(shape)) * np.dtype(t.dtype).itemsize * repeats
                except TypeError:
                    sizes[t.name] = None
            else:
                sizes.setdefault(t.name, None)
    return sizes


def _repeats(graph: ir.Graph, times: int | None = 1) -> Iterator[tuple[ir.Graph, int | None]]:
    """Every (sub)graph with how many values of one of its tensors an exposure stacks (None: unknown)."""
    yield graph, times
    for node in graph.nodes:
        for sub in ir.subgraphs_of(node):
            trips = _trip_count(node) if node.op in ("Loop", "Scan") else 1
            yield from _repeats(sub, None if times is None or trips is None else times * trips)


def _trip_count(node: ir.Node) -> int | None:
    """A Loop's constant ``M`` or a Scan's (static) sequence length; None when unknown."""
    if node.op == "Loop":
        m = ir.constant_array(node.inputs[0]) if node.inputs and node.inputs[0].name else None
        return int(m.reshape(-1)[0]) if m is not None and m.size == 1 else None
    n_scan = int(ir.attr(node, "num_scan_inputs", 1))
    if len(node.inputs) < n_scan:
        return None
    first = node.inputs[len(node.inputs) - n_scan]
    axes = ir.attr(node, "scan_input_axes") or [0]
    shape = first.shape
    if not isinstance(shape, (list, tuple)) or not shape:
        return None
    length = shape[int(axes[0]) % len(shape)]
    return length if isinstance(length, int) and length >= 0 else None


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


def plan_tensor_groups(names: Sequence[str], sizes: Mapping[str, int | None], max_memory_mb: float | None) -> list[list[str]]:
    """The groups for ``max_memory_mb`` (None: no limit, one group); no names, no groups."""
    budget = float("inf") if max_memory_mb is None else max_memory_mb * 2**20
    return plan_groups(names, sizes, budget) if names else []
