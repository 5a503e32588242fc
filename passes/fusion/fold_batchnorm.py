"""``fold-batchnorm``: fold inference BatchNormalization into the preceding linear op.

BatchNormalization computes ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel.
With ``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s`` that is the affine
``y = s ⊙ x + t``, and with a producer ``x = W * a + b`` it becomes ``y = (W * s) * a + (b * s + t)``:

- Conv:            ``W'[o, ...] = W[o, ...] * s[o]``,              ``b' = (b - mean) * s + beta``
- ConvTranspose:   ``W'[i, j, ...] = W[i, j, ...] * s[g * C_g + j]`` (weight is [C_in, C_out/group, ...])
- Gemm:            ``B'`` scaled along the output axis, ``alpha``/``beta`` absorbed, ``C' = (beta*C - mean) * s + beta_bn``
- MatMul (2-D):    ``W'[:, o] = W[:, o] * s[o]`` and a bias ``Add`` carrying ``beta - mean * s``

One rule anchored on BatchNormalization: its check returns the reason a node cannot fold (recorded
as a skip, the node kept unchanged); the rewrite is :func:`._affine.fold_into`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxq import ir
from onnxq.ir import Node
from onnxq.pass_base import EmptyConfig, register_pass
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule

from ._affine import LINEAR_OPS, FoldIntoProducer, check_fold, output_channels

__all__ = ["FoldBatchNorm"]


def _bn_scale_shift(bn: Node) -> tuple[np.ndarray, np.ndarray] | str:
    params = [ir.constant_array(t) for t in bn.inputs[1:5]]
    if len(params) != 4 or any(p is None for p in params):
        return "BatchNormalization parameters are not constants"
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    if bn.attrs.get("training_mode", 0):
        return "BatchNormalization is in training mode"
    if len([t for t in bn.outputs if t.outputs]) > 1:
        return "BatchNormalization running statistics outputs are used"
    eps = float(bn.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


class _FoldBatchNorm(FoldIntoProducer):
    """BatchNormalization after a Conv/ConvTranspose/Gemm/MatMul → that op with folded constants."""

    name = "BatchNormalization"
    ops = ("BatchNormalization",)
    tag = "bnfold"

    def match(self, rw: Rewriter, bn: Node) -> Match | str | None:
        producer = ir.producer(bn.inputs[0])
        if producer is None or producer.op not in LINEAR_OPS or (producer.domain or ""):
            return "not preceded by Conv/ConvTranspose/Gemm/MatMul"
        reason = check_fold(rw.graph, producer, bn)
        if reason:
            return reason
        ss = _bn_scale_shift(bn)
        if isinstance(ss, str):
            return ss
        channels = output_channels(producer)
        if channels != ss[0].size:
            return f"{producer.op} has {channels} output channels, BatchNormalization {ss[0].size}"
        x = producer.inputs[0]
        if producer.op == "MatMul" and (not isinstance(x.shape, (list, tuple)) or len(x.shape) != 2):
            return "MatMul is not 2-D (BatchNormalization's channel axis would not be the last axis)"
        return self.found(bn, producer, *ss)


@register_pass("fold-batchnorm")
class FoldBatchNorm(RewritePass[EmptyConfig]):
    """Fold inference BatchNormalization into the preceding Conv / ConvTranspose / Gemm / MatMul."""

    counter = "folded"

    def rules(self) -> Sequence[Rule]:
        return [_FoldBatchNorm()]

    def summarize(self, counts: dict[str, int], refused: dict[str, str]) -> dict[str, Any]:
        """``folded`` (and per producer op), ``skipped`` and ``reasons`` ``{node: reason}``."""
        stats = super().summarize(counts, refused)
        del stats["refused"]
        return {**stats, "skipped": len(refused), "reasons": refused}
