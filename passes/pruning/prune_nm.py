"""``prune-nm``: N:M semi-structured sparsity along each layer's reduction (input-channel) axis.

In every run of ``m`` consecutive weights along the reduction axis at most ``n`` are non-zero (2:4 is
what sparse tensor cores accelerate): the ``m - n`` smallest ``|w|`` of each group become 0.

The reduction axis is the one summed over for each output:

- Conv ``W[O, I/g, kh, kw]``: axis 1 (groups of ``m`` input channels at each ``(o, kh, kw)``),
- ConvTranspose ``W[I, O/g, kh, kw]``: axis 0,
- Gemm: ``B[K, N]`` axis 0, or ``B[N, K]`` axis 1 when ``transB=1``,
- MatMul ``W[..., K, N]``: axis -2.

A layer whose reduction dimension is not a multiple of ``m`` is skipped with the reason. Quantized
weights are handled as in ``prune-magnitude`` (pruned to the zero point).
:func:`check_nm_sparsity` and :func:`nm_violations` verify the pattern (tests, reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from onnxq import ir
from onnxq.errors import ConfigError
from onnxq.ir import Model, Node
from onnxq.pass_base import PassContext, PassResult, register_pass

from ._weights import LayerPass, LayerSelectionConfig, jsonable, record_skips, zero_and_report

__all__ = ["PruneNMConfig", "PruneNM", "check_nm_sparsity", "nm_violations", "nm_mask", "reduction_axis"]


def reduction_axis(node: Node, ndim: int) -> int:
    """The weight axis summed over for each output of ``node`` (see the module docstring)."""
    if node.op == "Conv":
        return 1
    if node.op == "ConvTranspose":
        return 0
    if node.op == "Gemm":
        return 1 if int(ir.attr(node, "transB", 0)) else 0
    return max(ndim - 2, 0)


def _groups(values: np.ndarray, axis: int, m: int) -> np.ndarray:
    """``values`` with ``axis`` moved last and split into ``[..., K / m, m]`` groups."""
    moved = np.moveaxis(np.asarray(values), axis, -1)
    k = moved.shape[-1]
    if k % m:
        raise ConfigError(f"N:M sparsity: axis {axis} has {k} entries, not a multiple of m={m}")
    return moved.reshape(*moved.shape[:-1], k // m, m)


def nm_violations(weights: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """Start coordinates (in ``weights``) of the groups with more than ``n`` non-zeros.

    Returns an int array of shape ``[violations, weights.ndim]``; each row is the index of the first
    entry of a violating group of ``m`` consecutive entries along ``axis``.

    Raises:
        ConfigError: the axis length is not a multiple of ``m``.
    """
    weights = np.asarray(weights)
    axis = axis % weights.ndim
    nnz = np.count_nonzero(_groups(weights, axis, m), axis=-1)
    bad = np.argwhere(nnz > n)
    starts = bad[:, -1:] * m
    return np.concatenate([bad[:, :axis], starts, bad[:, axis:-1]], axis=1).astype(np.int64)


def check_nm_sparsity(weights: np.ndarray, axis: int, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive entries along ``axis`` has at most ``n`` non-zeros."""
    return len(nm_violations(weights, axis, n, m)) == 0


def nm_mask(weights: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """Mask of the entries to zero so that ``weights`` becomes N:M sparse (the ``m - n`` smallest per group)."""
    weights = np.asarray(weights)
    axis = axis % weights.ndim
    groups = np.abs(_groups(weights, axis, m))
    order = np.argsort(groups, axis=-1, kind="stable")  # ascending: the first m - n are pruned
    mask = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(mask, order[..., : m - n], True, axis=-1)
    moved_shape = np.moveaxis(weights, axis, -1).shape
    return np.moveaxis(mask.reshape(moved_shape), -1, axis)


@dataclass(frozen=True)
class PruneNMConfig(LayerSelectionConfig):
    """Options of ``prune-nm``: keep at most ``n`` non-zeros in every ``m`` consecutive weights."""

    n: int = 2
    m: int = 4
    quantized: Literal["requantize", "skip"] = "requantize"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (2 <= self.m <= 64):
            raise ConfigError(f"prune-nm: m must be in [2, 64], got {self.m}")
        if not (1 <= self.n < self.m):
            raise ConfigError(f"prune-nm: n must be in [1, m) = [1, {self.m}), got {self.n}")


@register_pass("prune-nm")
class PruneNM(LayerPass[PruneNMConfig]):
    """N:M semi-structured sparsity (default 2:4) along each layer's input-channel axis."""

    changes_structure = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        cfg = self.config
        layers, skipped = self.selected_layers(model)
        report: dict[str, dict] = {}
        changed = 0
        for layer in layers:
            values = layer.values()
            axis = reduction_axis(layer.node, values.ndim)
            if layer.quantized and cfg.quantized == "skip":
                skipped[layer.name] = "weight is quantized (quantized='skip')"
                continue
            if values.ndim == 0 or values.shape[axis] % cfg.m:
                size = values.shape[axis] if values.ndim else 0
                skipped[layer.name] = f"reduction dimension {size} (weight axis {axis}) is not a multiple of m={cfg.m}"
                continue
            modified, report[layer.name] = zero_and_report(layer, nm_mask(values, axis, cfg.n, cfg.m), axis=axis)
            changed += modified
        stats = {"pattern": f"{cfg.n}:{cfg.m}", "pruned_layers": changed, "layers": report, "skipped": record_skips(model, ctx, skipped)}
        return PassResult(model, changed > 0, jsonable(stats))
