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
"""

from __future__ import annotations

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass

from .fold_affine import scale_shift
from .fold_batchnorm import _set_input

__all__ = ["FoldAffineForward", "input_channel_affine"]

_MAX_ROUNDS = 8  # a Mul → Add chain folds in two rounds; longer chains are rare


def _unpadded_conv_weight(conv: Node, x: Tensor) -> np.ndarray | None:
    """The conv's float weight when ``x`` is its data input and it pads nothing."""
    if conv.op != "Conv" or (conv.domain or "") or not conv.inputs or conv.inputs[0] is not x or any(t is x for t in conv.inputs[1:]):
        return None
    if str(conv.attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID") or any(int(p) != 0 for p in conv.attrs.get("pads", [])):
        return None
    w = ir.constant_array(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if w is None or w.dtype.kind != "f" or w.ndim < 3:
        return None
    if len(conv.inputs) > 2 and conv.inputs[2].name and ir.constant_array(conv.inputs[2]) is None:
        return None
    return w


def input_channel_affine(node: Node, x: Tensor, channels: int, rank: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-input-channel ``(scale, shift)`` that ``node`` applies to ``x`` (NCHW-like, ``rank`` dims)."""
    if node.op not in ("Mul", "Add", "Sub", "Div") or (node.domain or "") or len(node.inputs) != 2:
        return None
    idx = 0 if node.inputs[0] is x else 1
    const = ir.constant_array(node.inputs[1 - idx])
    if const is None or const.dtype.kind != "f" or const.ndim > rank or (node.op in ("Sub", "Div") and idx != 0):
        return None
    full: np.ndarray = const.reshape((1,) * (rank - const.ndim) + tuple(const.shape))
    dims = [int(n) for n in full.shape]
    if any(d != 1 for i, d in enumerate(dims) if i != 1) or dims[1] not in (1, channels):
        return None
    affine = scale_shift(node.op, np.broadcast_to(full.reshape(-1).astype(np.float64), (channels,)).copy())
    return None if isinstance(affine, str) else affine


def _fold_into(conv: Node, w: np.ndarray, scale: np.ndarray, shift: np.ndarray, namer: ir.NameGenerator) -> None:
    group = int(conv.attrs.get("group", 1))
    cout, cin_group = w.shape[0], w.shape[1]
    by_output = np.arange(cout) // (cout // group)  # the group of each output channel
    expand = (slice(None), slice(None)) + (None,) * (w.ndim - 2)
    s = scale.reshape(group, cin_group)[by_output][expand]
    t = shift.reshape(group, cin_group)[by_output][expand]
    w64 = w.astype(np.float64)
    b = ir.constant_array(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2].name else None
    bias = (np.zeros(cout) if b is None else b.astype(np.float64).reshape(-1)) + (w64 * t).reshape(cout, -1).sum(axis=1)
    base = conv.name or "conv"
    _set_input(conv, 1, (w64 * s).astype(w.dtype), namer, f"{base}/W_affine_in")
    if b is not None or np.any(shift != 0):
        _set_input(conv, 2, bias.astype(w.dtype), namer, f"{base}/B_affine_in")


def _fold_once(graph: Graph, node: Node, namer: ir.NameGenerator) -> bool:
    out = node.outputs[0] if node.outputs else None
    if out is None or ir.is_graph_output(graph, out) or not out.outputs:
        return False
    for x in node.inputs:
        if ir.is_constant(x):
            continue
        weights = [_unpadded_conv_weight(c, out) for c in out.outputs]
        if any(w is None for w in weights):
            return False
        channels = {w.shape[1] * int(c.attrs.get("group", 1)) for c, w in zip(out.outputs, weights)}  # type: ignore[union-attr]
        ranks = {w.ndim for w in weights}  # type: ignore[union-attr]
        if len(channels) != 1 or len(ranks) != 1:
            return False
        affine = input_channel_affine(node, x, channels.pop(), ranks.pop())
        if affine is None:
            return False
        for conv, w in zip(list(out.outputs), weights):
            _fold_into(conv, w, *affine, namer)  # type: ignore[arg-type]
            conv.inputs[0] = x
        return True
    return False


@register_pass("fold-affine-forward")
class FoldAffineForward(Pass[EmptyConfig]):
    """Fold per-channel Mul/Add/Sub/Div by constants into the unpadded Convs that read them."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        namer = ir.names(model)
        folded = 0
        for graph in ir.iter_graphs(model.graph):
            for _ in range(_MAX_ROUNDS):
                doomed = [n for n in list(graph.nodes) if n.op in ("Mul", "Add", "Sub", "Div") and _fold_once(graph, n, namer)]
                if not doomed:
                    break
                ir.remove_nodes(graph, doomed)
                folded += len(doomed)
        return PassResult(model, folded > 0, {"folded": folded})
