"""Pruning passes: magnitude, N:M, structured channel pruning (also searched to an accuracy bound or a speed target), low-rank factorization; the search loop.

Importing this package registers the passes. Library helpers: :func:`check_nm_sparsity`,
:func:`collect_channel_stats`, :func:`channel_stat_tensors` and :func:`prune_until`.
"""

from __future__ import annotations

from . import factorize_lowrank, prune_channels, prune_channels_search, prune_magnitude, prune_nm  # noqa: F401  (register the passes)
from .channel_stats import collect_channel_stats
from .prune_channels import channel_groups, channel_stat_tensors
from .prune_nm import check_nm_sparsity, nm_violations
from .search import SearchResult, prune_until

__all__ = [
    "check_nm_sparsity",
    "nm_violations",
    "collect_channel_stats",
    "channel_stat_tensors",
    "channel_groups",
    "prune_until",
    "SearchResult",
]
