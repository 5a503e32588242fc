"""Compression passes: weight sharing by k-means clustering (``cluster-weights``)."""

from __future__ import annotations

from . import cluster_weights  # noqa: F401  (imported to register the passes)
from .cluster_weights import is_uniform, kmeans_1d

__all__ = ["kmeans_1d", "is_uniform"]
