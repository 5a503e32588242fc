"""``fold-affine``: fold per-channel ``Mul``/``Add``/``Sub``/``Div`` by constants into the preceding linear op.

Paddle2ONNX writes inference BatchNormalization as ``Mul(scale) → Add(shift)``; exporters also
leave constant scalings after convolutions. With a producer ``y = W * a + b`` and a per-output-
channel affine ``z = s ⊙ y + t``:  ``W' = W · s`` (along the output-channel axis) and
``b' = b · s + t`` (the folds are :mod:`._affine`'s, shared with ``fold-batchnorm``); the rule
only extracts ``(s, t)``:

- ``Mul(y, c)`` → ``s = c, t = 0``;  ``Div(y, c)`` → ``s = 1/c, t = 0``
- ``Add(y, d)`` → ``s = 1, t = d``;  ``Sub(y, d)`` → ``s = 1, t = -d``

where the constant broadcasts along the output-channel axis only (axis 1 for Conv outputs, the
last axis for Gemm/MatMul) or is a scalar. Left unfolded, per-channel constants quantized with
one activation scale lose most of their precision. MatMul has no bias input, so only scalings
fold into it (a non-zero bias ``Add`` after a 2-D MatMul is ``fuse-matmul-add``'s). A chain
``Mul → Add → Div`` folds one affine per run (the pipeline repeats cleanup).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxq import ir
from onnxq.ir import Node, Tensor
from onnxq.pass_base import EmptyConfig, register_pass
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule

from ._affine import LINEAR_OPS, FoldIntoProducer, affine_of, channel_vector, check_fold, output_channels, scale_shift, weight

__all__ = ["FoldAffine"]

_CHANNEL_AXIS = {"Conv": 1, "ConvTranspose": 1, "Gemm": -1, "MatMul": -1}


def _output_rank(producer: Node) -> int | None:
    shape = producer.outputs[0].shape
    if isinstance(shape, (list, tuple)):
        return len(shape)
    if producer.op in ("Conv", "ConvTranspose"):
        w = weight(producer, 1)
        return None if w is None else w.ndim
    return 2 if producer.op == "Gemm" else None


def _affine(node: Node, y: Tensor, producer: Node) -> tuple[np.ndarray, np.ndarray] | str | None:
    """Per-channel ``(scale, shift)`` that ``node`` applies to ``producer``'s output ``y``; a reason
    when that affine cannot exist; None when ``node`` is not such an affine."""
    found = affine_of(node, y)
    channels = output_channels(producer)
    if found is None or not channels:
        return None
    vec = channel_vector(found[1], channels, _output_rank(producer), _CHANNEL_AXIS[producer.op])
    if vec is None:
        return None
    affine = scale_shift(found[0], vec)
    if producer.op == "MatMul" and not isinstance(affine, str) and np.any(affine[1] != 0):
        return None  # a bias Add after a MatMul: fuse-matmul-add's pattern, not a scaling
    return affine


class _FoldAffine(FoldIntoProducer):
    """A per-output-channel affine by constants → the producing linear op's weight and bias."""

    name = "affine"
    ops = ("Mul", "Add", "Sub", "Div")
    tag = "affine"

    def match(self, rw: Rewriter, node: Node) -> Match | str | None:
        reason = None
        for y in node.inputs:
            producer = ir.producer(y)
            if producer is None or producer.op not in LINEAR_OPS or (producer.domain or "") or weight(producer, 1) is None:
                continue
            found = _affine(node, y, producer)
            if isinstance(found, str):
                reason = reason or found
                continue
            if found is None:
                continue
            if ir.only_consumer(rw.graph, y) is not node:
                continue  # one reader among several (x + 3 in a decomposed HardSwish): not a fold
            refusal = check_fold(rw.graph, producer, node)
            if refusal:
                reason = reason or refusal
                continue
            # found() claims the producer, so a run folds one affine into it: the next of a chain
            # (Mul → Add) waits for the next cleanup round, where fold-affine-forward may take it
            # first. That keeps the order of folds, and so the output, of the pass before the engine.
            return self.found(node, producer, *found)
        return reason


@register_pass("fold-affine")
class FoldAffine(RewritePass[EmptyConfig]):
    """Fold per-channel Mul/Add/Sub/Div by constants into the preceding Conv/ConvTranspose/Gemm/MatMul."""

    counter = "folded"

    def rules(self) -> Sequence[Rule]:
        return [_FoldAffine()]
