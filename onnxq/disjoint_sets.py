"""Disjoint sets (union-find) over hashable keys: the connected regions of a graph.

Several passes and reports group nodes into regions joined by some relation (half-capable
regions for fp16, fused quantization units, float islands in a profile). One small structure
serves them all, with path halving so deep chains stay iterative.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["DisjointSets"]

K = TypeVar("K", bound=Hashable)


class DisjointSets(Generic[K]):
    """Disjoint sets of ``keys``; every key starts in a set of its own."""

    def __init__(self, keys: Iterable[K]) -> None:
        self._parent: dict[K, K] = {k: k for k in keys}

    def __contains__(self, key: object) -> bool:
        return key in self._parent

    def find(self, key: K) -> K:
        """The representative of ``key``'s set."""
        parent = self._parent
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(self, a: K, b: K) -> None:
        """Join the sets of ``a`` and ``b`` (``b``'s representative becomes the root)."""
        self._parent[self.find(a)] = self.find(b)

    def groups(self) -> list[list[K]]:
        """The sets, each in key insertion order, ordered by their first key."""
        by_root: dict[K, list[K]] = {}
        for key in self._parent:
            by_root.setdefault(self.find(key), []).append(key)
        return list(by_root.values())
