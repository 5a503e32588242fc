"""``prune-magnitude``: unstructured magnitude pruning of Conv / ConvTranspose / Gemm / MatMul weights.

Weights with the smallest ``|w|`` become exactly 0; shapes and the graph stay the same (the model is
as fast as before on dense kernels, but compresses well and is ready for sparse kernels). One of:

- ``sparsity = s``: in every selected layer, the ``floor(s * n)`` entries of smallest ``|w|`` (``n`` the
  layer's size) are zeroed (existing zeros count among them).
- ``global_sparsity = s``: one ranking over all selected layers; the ``floor(s * N)`` smallest scores
  are zeroed, ``N`` the total size. The score is ``|w|`` (``normalize="none"``), ``|w| / ||W||_2``
  (``"l2"``, each layer's Frobenius norm; note it ranks large layers' entries lower) or
  ``|w| / mean|W|`` (``"mean"``), so that layers with different scales compete fairly.
- ``threshold = t``: every ``|w| < t`` is zeroed.

Quantized weights (integer constant → DequantizeLinear → layer) are ranked by their dequantized
values and pruned by writing the zero point (which dequantizes to exactly 0), keeping scale and zero
point (``quantized="requantize"``, reported per layer); ``quantized="skip"`` leaves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from onnxq.errors import ConfigError
from onnxq.ir import Model
from onnxq.pass_base import PassContext, PassResult, register_pass

from ._weights import (
    LayerPass,
    LayerSelectionConfig,
    WeightLayer,
    check_unit_interval,
    fraction,
    jsonable,
    record_skips,
    require_exactly_one,
    zero_and_report,
)

__all__ = ["PruneMagnitudeConfig", "PruneMagnitude", "smallest_mask"]


@dataclass(frozen=True)
class PruneMagnitudeConfig(LayerSelectionConfig):
    """Options of ``prune-magnitude`` (give exactly one of sparsity, global_sparsity, threshold)."""

    sparsity: float | None = None
    global_sparsity: float | None = None
    threshold: float | None = None
    normalize: Literal["none", "l2", "mean"] = "none"
    quantized: Literal["requantize", "skip"] = "requantize"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_exactly_one("prune-magnitude", self, ("sparsity", "global_sparsity", "threshold"))
        check_unit_interval("prune-magnitude", "sparsity", self.sparsity)
        check_unit_interval("prune-magnitude", "global_sparsity", self.global_sparsity)
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ConfigError(f"prune-magnitude: threshold must be a finite number >= 0, got {self.threshold}")
        if self.normalize != "none" and self.global_sparsity is None:
            raise ConfigError("prune-magnitude: normalize only applies to global_sparsity")


def smallest_mask(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` smallest entries of ``scores`` (deterministic: ties go to the lowest indices).

    A partition finds the ``count``-th smallest value in linear time (a full sort of a 65M-weight
    layer took seconds); entries equal to it are taken in index order, as a stable sort would.
    """
    flat = scores.reshape(-1)
    mask = np.zeros(flat.size, dtype=bool)
    if count >= flat.size:
        mask[:] = True
    elif count > 0:
        kth = np.partition(flat, count - 1)[count - 1]
        if np.isnan(kth):  # NaNs sort last: take them in index order like the stable sort does
            order = np.argsort(flat, kind="stable")
            mask[order[:count]] = True
        else:
            mask = flat < kth
            mask[np.flatnonzero(flat == kth)[: count - int(np.count_nonzero(mask))]] = True
    return mask.reshape(scores.shape)


def _normalized(values: np.ndarray, how: str) -> np.ndarray:
    mag = np.abs(values.astype(np.float64))
    if how == "l2":
        norm = float(np.sqrt((mag**2).sum()))
    elif how == "mean":
        norm = float(mag.mean()) if mag.size else 0.0
    else:
        norm = 1.0
    return mag / norm if norm > 0 else mag


@register_pass("prune-magnitude")
class PruneMagnitude(LayerPass[PruneMagnitudeConfig]):
    """Zero the smallest-magnitude weights (per layer, global ranking, or threshold)."""

    changes_structure = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        cfg = self.config
        layers, skipped = self.selected_layers(model)
        if cfg.quantized == "skip":
            for layer in [lay for lay in layers if lay.quantized]:
                skipped[layer.name] = "weight is quantized (quantized='skip')"
            layers = [lay for lay in layers if not lay.quantized]
        masks = self._masks(layers, cfg)
        report: dict[str, dict] = {}
        changed = 0
        total = zeros_before = zeros_after = 0
        for layer, mask in zip(layers, masks):
            zeros_before += int(layer.zero_mask().sum())
            modified, report[layer.name] = zero_and_report(layer, mask)
            changed += modified
            total += layer.size
            zeros_after += int(layer.zero_mask().sum())
        mode = "sparsity" if cfg.sparsity is not None else "global_sparsity" if cfg.global_sparsity is not None else "threshold"
        stats = {
            "mode": mode,
            "pruned_layers": changed,
            "params": total,
            "sparsity_before": fraction(zeros_before, total),
            "sparsity_after": fraction(zeros_after, total),
            "layers": report,
            "skipped": record_skips(model, ctx, skipped),
        }
        return PassResult(model, changed > 0, jsonable(stats))

    @staticmethod
    def _masks(layers: list[WeightLayer], cfg: PruneMagnitudeConfig) -> list[np.ndarray]:
        if cfg.threshold is not None:
            return [np.abs(layer.values()) < cfg.threshold for layer in layers]
        if cfg.sparsity is not None:
            return [smallest_mask(np.abs(layer.values()), int(math.floor(cfg.sparsity * layer.size))) for layer in layers]
        scores = [_normalized(layer.values(), cfg.normalize) for layer in layers]
        if not scores:
            return []
        flat = np.concatenate([s.reshape(-1) for s in scores])
        mask = smallest_mask(flat, int(math.floor(cfg.global_sparsity * flat.size)))  # type: ignore[operator]
        out, start = [], 0
        for s in scores:
            out.append(mask[start : start + s.size].reshape(s.shape))
            start += s.size
        return out
