"""``fold-affine-forward``: fold per-channel ``Mul``/``Add``/``Sub``/``Div`` by constants into the
unpadded convolutions that read them.

``fold-affine`` folds an affine into the op *before* it. Some networks put the affine after a
non-linearity, where nothing precedes it to absorb it: PP-LCNetV3 (the PP-OCRv4 detector's
backbone) applies a learnable ``z = s · HardSwish(y) + t`` after every activation. When every
reader of ``z`` is a convolution without padding, the affine moves into the convolution exactly:
with input channel ``c`` of output ``o``,

    W'[o, i, ...] = W[o, i, ...] · s[c]        b'[o] = b[o] + Σ_{i, k} W[o, i, k] · t[c]

(zero padding would see ``t`` inside the image and ``0`` outside, so padded convolutions are left
alone). Left in place, each affine is two float passes over the tensor between int8 regions.
A ``Mul → Add`` chain folds from its end: the walk repeats (up to 8 rounds) while something folded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxq import ir
from onnxq.ir import Node, Tensor
from onnxq.pass_base import EmptyConfig, register_pass
from onnxq.rewrite import Match, RewritePass, Rewriter, Rule

from ._affine import affine_of, channel_vector, scale_shift, set_input, weight

__all__ = ["FoldAffineForward", "input_channel_affine"]


def _unpadded_conv_weight(conv: Node, x: Tensor) -> np.ndarray | None:
    """The conv's float weight when ``x`` is its data input and it pads nothing."""
    if conv.op != "Conv" or (conv.domain or "") or not conv.inputs or conv.inputs[0] is not x or any(t is x for t in conv.inputs[1:]):
        return None
    if str(conv.attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID") or any(int(p) != 0 for p in conv.attrs.get("pads", [])):
        return None
    w = weight(conv, 1)
    if w is None or w.dtype.kind != "f" or w.ndim < 3:
        return None
    if len(conv.inputs) > 2 and conv.inputs[2].name and weight(conv, 2) is None:
        return None
    return w


def input_channel_affine(node: Node, x: Tensor, channels: int, rank: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-input-channel ``(scale, shift)`` that ``node`` applies to ``x`` (NCHW-like, ``rank`` dims)."""
    found = affine_of(node, x)
    vec = channel_vector(found[1], channels, rank, 1) if found is not None else None
    affine = scale_shift(found[0], vec) if found is not None and vec is not None else None
    return None if affine is None or isinstance(affine, str) else affine


def _fold_into(rw: Rewriter, conv: Node, w: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
    group = int(conv.attrs.get("group", 1))
    cout, cin_group = w.shape[0], w.shape[1]
    by_output = np.arange(cout) // (cout // group)  # the group of each output channel
    expand = (slice(None), slice(None)) + (None,) * (w.ndim - 2)
    s = scale.reshape(group, cin_group)[by_output][expand]
    t = shift.reshape(group, cin_group)[by_output][expand]
    w64 = w.astype(np.float64)
    b = weight(conv, 2)
    bias = (np.zeros(cout) if b is None else b.astype(np.float64).reshape(-1)) + (w64 * t).reshape(cout, -1).sum(axis=1)
    base = conv.name or "conv"
    set_input(rw, conv, 1, (w64 * s).astype(w.dtype), f"{base}/W_affine_in")
    if b is not None or np.any(shift != 0):
        set_input(rw, conv, 2, bias.astype(w.dtype), f"{base}/B_affine_in")


class _FoldIntoReaders(Rule):
    """An affine whose every reader is an unpadded Conv → those Convs' weights and biases."""

    name = "affine"
    ops = ("Mul", "Add", "Sub", "Div")

    def match(self, rw: Rewriter, node: Node) -> Match | None:
        out = node.outputs[0] if node.outputs else None
        x = next((t for t in node.inputs if not ir.is_constant(t)), None)
        if out is None or x is None or ir.is_graph_output(rw.graph, out) or not out.outputs:
            return None
        convs = list(out.outputs)
        weights = [_unpadded_conv_weight(c, out) for c in convs]
        found = [w for w in weights if w is not None]
        if len(found) != len(convs):
            return None
        channels = {w.shape[1] * int(c.attrs.get("group", 1)) for c, w in zip(convs, found)}
        ranks = {w.ndim for w in found}
        if len(channels) != 1 or len(ranks) != 1:
            return None
        affine = input_channel_affine(node, x, channels.pop(), ranks.pop())
        if affine is None:
            return None
        return Match([node], {"x": x, "convs": list(zip(convs, found)), "scale": affine[0], "shift": affine[1]})

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        v = match.values
        for conv, w in v["convs"]:
            _fold_into(rw, conv, w, v["scale"], v["shift"])
            conv.inputs[0] = v["x"]
        rw.remove(match.anchor)


@register_pass("fold-affine-forward")
class FoldAffineForward(RewritePass[EmptyConfig]):
    """Fold per-channel Mul/Add/Sub/Div by constants into the unpadded Convs that read them."""

    counter = "folded"
    rounds = 8  # a Mul → Add chain folds in two rounds; longer chains are rare

    def rules(self) -> Sequence[Rule]:
        return [_FoldIntoReaders()]
