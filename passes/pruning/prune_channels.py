"""``prune-channels``: structured pruning that removes whole channels and shrinks the graph.

Channels are grouped by :mod:`._channel_graph` (a group is every producer whose output channels must
stay aligned: a residual Add, a squeeze-excite Mul, a depthwise Conv couple them). In every group
that is not blocked, ``floor(ratio * C)`` channels are removed (at least ``min_channels`` kept, the
kept count rounded up to a multiple of ``round_to``), chosen by the lowest group score
``score[c] = Σ_members s_m[c]``:

- ``l1`` / ``l2``: ``s_m[c]`` is the L1 / L2 norm of producer ``m``'s weights for output channel ``c``;
- ``mean-activation``: the mean ``|x|`` of the channel where a layer reads it (needs statistics);
- ``apoz``: ``1 - APoZ`` (the fraction of non-zero activations) there (needs statistics).

Statistics come from ``ctx.channel_stats`` (see :func:`collect_channel_stats` and
:func:`channel_stat_tensors`). The rewrite slices, for every kept index set, the producers' weights
(output axis) and biases, BatchNormalization / per-channel constants, depthwise filters (and their
``group``), Resize ``sizes``, and the consumers' weights (input axis; Concat offsets included). The
result is a smaller dense model computing the same function up to the removed channels' contribution
— exactly the same when the removed channels were all zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from onnxq import ir
from onnxq.context import Need
from onnxq.errors import ConfigError, PreconditionError
from onnxq.ir import Model
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass

from ._channel_graph import ChannelGraph, Edit, Layout, analyze
from ._weights import jsonable, record_skips, restore_shapes, set_const_input, shape_snapshot

__all__ = ["PruneChannelsConfig", "PruneChannels", "channel_stat_tensors", "channel_groups"]

DATA_CRITERIA = ("mean-activation", "apoz")


@dataclass(frozen=True)
class PruneChannelsConfig(PassConfig):
    """Options of ``prune-channels``.

    Attributes:
        ratio: fraction of each group's channels to remove, in [0, 1).
        criterion: how channels are ranked (``l1``, ``l2``, ``mean-activation``, ``apoz``).
        min_channels: never keep fewer channels than this in a group (>= 1).
        round_to: round the kept count up to a multiple of this (default 8: onnxruntime's convolution
            kernels block channels by 8, and uneven counts measured slower than the unpruned model); 1 = off.
        exclude_names: regexes on node names; a group with a matching producer is left whole.
    """

    ratio: float = 0.25
    criterion: Literal["l1", "l2", "mean-activation", "apoz"] = "l1"
    min_channels: int = 1
    round_to: int = 8
    exclude_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.ratio) and 0 <= self.ratio < 1):
            hint = " (ratio 1 would remove every channel and disconnect the graph)" if self.ratio >= 1 else ""
            raise ConfigError(f"prune-channels: ratio must be in [0, 1), got {self.ratio}{hint}")
        if self.min_channels < 1:
            raise ConfigError(f"prune-channels: min_channels must be >= 1 (a layer needs at least one channel), got {self.min_channels}")
        if self.round_to < 1:
            raise ConfigError(f"prune-channels: round_to must be >= 1, got {self.round_to}")
        for pattern in self.exclude_names:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"prune-channels: exclude_names pattern '{pattern}' is invalid: {e}") from e


def _group_name(cg: ChannelGraph, root: int) -> str:
    first = cg.producers[root][0]
    return first.name or first.outputs[0].name


def _stat_tensors(cg: ChannelGraph, root: int) -> list[tuple[str, int]]:
    """Tensors holding exactly this group's channels where a layer reads them: (name, axis)."""
    found: dict[str, int] = {}
    for t, lay in cg.consumer_inputs:
        if len(lay.segments) == 1 and lay.segments[0].group is not None and cg.find(lay.segments[0].group) == root:
            found.setdefault(t.name, lay.axis)
    if not found:
        for t, lay in cg.layouts.values():
            if len(lay.segments) == 1 and lay.segments[0].group is not None and cg.find(lay.segments[0].group) == root:
                found.setdefault(t.name, lay.axis)
    return list(found.items())


def _prepared(model: Model) -> ChannelGraph:
    ir.infer_shapes(model)
    return analyze(model)


def channel_stat_tensors(model: Model) -> dict[str, int]:
    """Tensors whose channel statistics the data-driven criteria read: name → channel axis (negative).

    Pass the result to :func:`collect_channel_stats`. Shape annotations of ``model`` are refreshed.
    """
    cg = _prepared(model)
    out: dict[str, int] = {}
    for root in cg.roots():
        if not cg.reasons(root):
            out.update(_stat_tensors(cg, root))
    return out


def channel_groups(model: Model) -> list[dict[str, Any]]:
    """The channel groups of ``model`` for reports: name, channels, producers, blocking reasons."""
    cg = _prepared(model)
    return [
        {"name": _group_name(cg, r), "channels": cg.sizes[r], "producers": [n.name for n in cg.producers[r]], "blocked": list(cg.reasons(r))}
        for r in cg.roots()
    ]


def _weight_scores(cg: ChannelGraph, root: int, order: int) -> np.ndarray:
    score = np.zeros(cg.sizes[root])
    for edit in cg.edits:
        if edit.role != "producer" or cg.find(edit.layout.segments[0].group) != root:  # type: ignore[arg-type]
            continue
        w = np.moveaxis(np.asarray(ir.const_value(edit.node.inputs[1]), dtype=np.float64), edit.axis, 0).reshape(cg.sizes[root], -1)
        score += np.abs(w).sum(axis=1) if order == 1 else np.sqrt((w**2).sum(axis=1))
    return score


def _data_scores(cg: ChannelGraph, root: int, stats: Mapping[str, Any], criterion: str) -> np.ndarray | str:
    score = np.zeros(cg.sizes[root])
    used = 0
    wanted = _stat_tensors(cg, root)
    for name, _ in wanted:
        entry = stats.get(name)
        if entry is None:
            continue
        values = np.asarray(entry["mean_abs"] if criterion == "mean-activation" else 1.0 - np.asarray(entry["apoz"]), dtype=np.float64)
        if values.shape != score.shape:
            return f"channel statistics of '{name}' have {values.size} channels, the group has {score.size}"
        score += values
        used += 1
    if not used:
        return f"no channel statistics for {', '.join(repr(n) for n, _ in wanted[:3]) or 'its tensors'}"
    return score


def _kept_count(size: int, cfg: PruneChannelsConfig) -> int:
    keep = size - int(math.floor(cfg.ratio * size))
    keep = max(keep, cfg.min_channels, 1)
    if cfg.round_to > 1:
        keep = int(math.ceil(keep / cfg.round_to) * cfg.round_to)
    return min(keep, size)


def _layout_keep(cg: ChannelGraph, layout: Layout, keep: dict[int, np.ndarray]) -> np.ndarray | None:
    """Indices kept along a tensor with ``layout`` (None when nothing is removed)."""
    parts, offset, changed = [], 0, False
    for seg in layout.segments:
        kept = keep.get(cg.find(seg.group)) if seg.group is not None else None
        if kept is None:
            parts.append(np.arange(seg.length) + offset)
        else:
            parts.append(kept + offset)
            changed = True
        offset += seg.length
    return np.concatenate(parts) if changed else None


def _apply(edit: Edit, idx: np.ndarray, namer: ir.NameGenerator) -> None:
    node = edit.node
    if edit.kind == "group":
        node.attrs["group"] = int(idx.size)
        return
    values = np.asarray(ir.const_value(node.inputs[edit.index]))
    if edit.kind == "sizes":
        values = values.copy()
        values[edit.axis] = idx.size
    else:
        values = np.take(values, idx, axis=edit.axis)
    set_const_input(node, edit.index, values, namer)


@register_pass("prune-channels")
class PruneChannels(Pass[PruneChannelsConfig]):
    """Remove whole output channels (Conv) / hidden units (Gemm, MatMul) and shrink the graph."""

    def needs(self) -> tuple[Need, ...]:
        """The data-driven criteria read ``channel_stats``; the weight norms need nothing."""
        return ("channel_stats",) if self.config.criterion in DATA_CRITERIA else ()

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        cfg = self.config
        before = shape_snapshot(model)
        cg = _prepared(model)
        stats = ctx.channel_stats
        if cfg.criterion in DATA_CRITERIA and stats is None:
            raise PreconditionError(
                f"prune-channels: criterion '{cfg.criterion}' needs ctx.channel_stats; compute it with "
                "collect_channel_stats(model, samples, channel_stat_tensors(model))"
            )
        keep, groups, skipped = self._choose(cg, cfg, stats or {})
        if not keep:
            restore_shapes(before)  # nothing pruned: leave the model exactly as it came
        params_before = _param_count(model)
        namer = ir.names(model)
        for edit in cg.edits:
            idx = _layout_keep(cg, edit.layout, keep)
            if idx is not None:
                _apply(edit, idx, namer)
        self._fix_shapes(cg, keep)
        params_after = _param_count(model)
        layers = {
            n.name or n.outputs[0].name: {"out_before": cg.sizes[r], "out_after": int(keep[r].size) if r in keep else cg.sizes[r]}
            for r in cg.roots()
            for n in cg.producers[r]
        }
        result = {
            "criterion": cfg.criterion,
            "ratio": cfg.ratio,
            "pruned_groups": len(keep),
            "channels_removed": int(sum(cg.sizes[r] - keep[r].size for r in keep)),
            "params_before": params_before,
            "params_after": params_after,
            "groups": groups,
            "skipped": record_skips(model, ctx, skipped),
            "layers": layers,
        }
        return PassResult(model, bool(keep), jsonable(result))

    @staticmethod
    def _choose(cg: ChannelGraph, cfg: PruneChannelsConfig, stats: Mapping[str, Any]) -> tuple[dict[int, np.ndarray], dict[str, Any], dict[str, str]]:
        keep: dict[int, np.ndarray] = {}
        groups: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        for root in cg.roots():
            name = _group_name(cg, root)
            size = cg.sizes[root]
            producers = [n.name for n in cg.producers[root]]
            reasons = list(cg.reasons(root))
            pattern = next((p for p in cfg.exclude_names for n in producers if re.search(p, n)), None)
            if pattern is not None:
                reasons.append(f"a member matches exclude pattern '{pattern}'")
            if reasons:
                skipped[name] = "; ".join(reasons[:3]) + (f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else "")
                continue
            count = _kept_count(size, cfg)
            if cfg.criterion in DATA_CRITERIA:
                score = _data_scores(cg, root, stats, cfg.criterion)
                if isinstance(score, str):
                    skipped[name] = score
                    continue
            else:
                score = _weight_scores(cg, root, 1 if cfg.criterion == "l1" else 2)
            groups[name] = {"channels_before": size, "channels_after": count, "members": producers}
            if count >= size:
                continue
            order = np.argsort(-score, kind="stable")
            keep[root] = np.sort(order[:count])
        return keep, groups, skipped

    @staticmethod
    def _fix_shapes(cg: ChannelGraph, keep: dict[int, np.ndarray]) -> None:
        """Update the channel dim of annotated tensors whose channels were removed."""

        for t, lay in cg.layouts.values():
            idx = _layout_keep(cg, lay, keep)
            if idx is None or not isinstance(t.shape, (list, tuple)) or len(t.shape) < -lay.axis:
                continue
            shape = list(t.shape)
            shape[lay.axis] = int(idx.size)
            t.shape = shape


def _param_count(model: Model) -> int:
    seen: set[int] = set()
    total = 0
    for node in model.graph.nodes:
        for t in node.inputs:
            if ir.is_constant(t) and id(t) not in seen and ir.const_value(t).dtype.kind == "f":
                seen.add(id(t))
                total += int(ir.const_value(t).size)
    return total
