"""Tensor groups under a memory budget: which tensors one pass over the data may expose together.

One sample's exposed activations are held in memory at once, so when they would exceed the budget
the tensors are split into consecutive groups that fit and the data is read once per group. Sizes
come from shape inference on the first sample's actual input shapes; unknown sizes count as the
largest known one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def plan_tensor_groups(names: Sequence[str], sizes: Mapping[str, int | None], max_memory_mb: float | None) -> list[list[str]]:
    """The groups for ``max_memory_mb`` (None: no limit, one group); no names, no groups."""
    budget = float("inf") if max_memory_mb is None else max_memory_mb * 2**20
    return plan_groups(names, sizes, budget) if names else []
