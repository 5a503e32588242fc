"""Per-channel affines shared by the folding passes: reading one off arithmetic, folding one into weights.

An element-wise ``Mul``/``Div``/``Add``/``Sub`` by a constant that varies along one channel axis
only is the affine ``z = s ⊙ y + t`` (:func:`affine_of`). Folding it into the linear op that
produces ``y = W * a + b`` (``fold-batchnorm``, ``fold-affine``) rewrites that op's constants:

- Conv:           ``W'[o, ...] = W[o, ...] · s[o]``,                   ``b' = b · s + t``
- ConvTranspose:  ``W'[i, j, ...] = W[i, j, ...] · s[g · C_g + j]`` (weight is [C_in, C_out/group, ...]),
                  ``b' = b · s + t``
- Gemm:           ``B'`` scaled along the output axis with ``alpha`` absorbed, ``C' = beta · C · s + t``
- MatMul (2-D W): ``W'[:, o] = W[:, o] · s[o]``, and a bias ``Add`` carrying ``t`` when ``t ≠ 0``

:class:`FoldIntoProducer` is that rewrite as a rule base: the two passes' rules only match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Node, Tensor
from onnxq.rewrite import Match, Rewriter, Rule

__all__ = [
    "LINEAR_OPS",
    "affine_of",
    "channel_vector",
    "scale_shift",
    "set_input",
    "weight",
    "output_channels",
    "check_fold",
    "fold_into",
    "FoldIntoProducer",
]

_AFFINE_OPS = ("Mul", "Div", "Add", "Sub")


def weight(node: Node, index: int) -> np.ndarray | None:
    """The constant value of input ``index`` (None when absent or computed)."""
    return ir.constant_array(node.inputs[index]) if len(node.inputs) > index and node.inputs[index].name else None


def set_input(rw: Rewriter, node: Node, index: int, values: np.ndarray, base: str) -> None:
    """Make input ``index`` of ``node`` a new constant holding ``values`` (padding skipped inputs)."""
    const = ir.make_constant(rw.name(base), values)
    if len(node.inputs) > index:
        node.inputs[index] = const
    else:
        while len(node.inputs) < index:
            node.inputs.append(ir.make_variable(""))
        node.inputs.append(const)


def affine_of(node: Node, x: Tensor) -> tuple[str, np.ndarray] | None:
    """``(op, constant)`` when ``node`` is Mul/Div/Add/Sub of ``x`` by a float constant, else None.

    Sub and Div only qualify with ``x`` as the first operand (``c - x`` and ``c / x`` are not affine in
    the same sense).
    """
    if node.op not in _AFFINE_OPS or (node.domain or "") or len(node.inputs) != 2 or x not in node.inputs:
        return None
    idx = 0 if node.inputs[0] is x else 1
    const = ir.constant_array(node.inputs[1 - idx])
    if const is None or const.dtype.kind != "f" or (node.op in ("Sub", "Div") and idx != 0):
        return None
    return node.op, const


def channel_vector(const: np.ndarray, channels: int, rank: int | None, axis: int) -> np.ndarray | None:
    """``const`` as one float64 value per channel along ``axis`` of a rank-``rank`` tensor it broadcasts
    onto, or None when it varies along another axis (or would add dimensions)."""
    if rank is not None and const.ndim > rank:
        return None
    if const.size == 1:
        return np.full(channels, float(const.reshape(-1)[0]))
    if rank is None:
        return None
    dims = [1] * (rank - const.ndim) + [int(n) for n in const.shape]
    axis %= rank
    if dims[axis] != channels or any(d != 1 for i, d in enumerate(dims) if i != axis):
        return None
    return const.reshape(-1).astype(np.float64)


def scale_shift(op: str, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray] | str:
    """``(s, t)`` with ``op(y, vec) = s · y + t`` for Mul/Div/Add/Sub by a per-channel constant."""
    ones, zeros = np.ones_like(vec), np.zeros_like(vec)
    if op == "Mul":
        return vec, zeros
    if op == "Div":
        return (1.0 / vec, zeros) if np.all(vec != 0) else "division by zero"
    if op == "Add":
        return ones, vec
    return ones, -vec


def output_channels(producer: Node) -> int | None:
    """Output channels of a Conv/ConvTranspose/Gemm/MatMul with a constant weight."""
    w = weight(producer, 1)
    if w is None or w.ndim < 2:
        return None
    if producer.op == "Conv":
        return int(w.shape[0])
    if producer.op == "ConvTranspose":
        return int(w.shape[1]) * int(producer.attrs.get("group", 1))
    if producer.op == "Gemm":
        return int(w.shape[0] if producer.attrs.get("transB", 0) else w.shape[1])
    return int(w.shape[-1])


def check_fold(graph: Graph, producer: Node, consumer: Node) -> str | None:
    """Why the affine ``consumer`` applies to ``producer``'s output cannot fold into it (None: it can)."""
    op = producer.op
    if ir.only_consumer(graph, producer.outputs[0]) is not consumer:
        return f"{op} output has other readers"
    w = weight(producer, 1)
    if w is None:
        return f"{op} weight is not a constant"
    if len(producer.inputs) > 2 and producer.inputs[2].name and weight(producer, 2) is None:
        return f"{op} bias is not a constant"
    if w.dtype not in (np.float32, np.float64):
        return "weight is not float"
    if op == "MatMul" and w.ndim != 2:
        return "MatMul weight is not 2-D"
    c = weight(producer, 2)
    if op == "Gemm" and c is not None and c.size not in (1, output_channels(producer)):
        return "Gemm bias is not per-output"
    return None


def _bias(node: Node, size: int) -> np.ndarray:
    b = weight(node, 2)
    return np.zeros(size, dtype=np.float64) if b is None else np.broadcast_to(b.astype(np.float64).reshape(-1), (size,))


def _fold_conv(rw: Rewriter, conv: Node, scale: np.ndarray, shift: np.ndarray, tag: str) -> Tensor:
    w = np.asarray(weight(conv, 1))
    shape = (-1,) + (1,) * (w.ndim - 1)
    base = conv.name or "conv"
    set_input(rw, conv, 1, (w.astype(np.float64) * scale.reshape(shape)).astype(w.dtype), f"{base}/W_{tag}")
    set_input(rw, conv, 2, (_bias(conv, scale.size) * scale + shift).astype(w.dtype), f"{base}/B_{tag}")
    return conv.outputs[0]


def _fold_conv_transpose(rw: Rewriter, conv: Node, scale: np.ndarray, shift: np.ndarray, tag: str) -> Tensor:
    w = np.asarray(weight(conv, 1))
    group = int(conv.attrs.get("group", 1))
    # Input channel i belongs to group i // C_in_per_group; its slice j maps to output g·C_g + j.
    groups = np.arange(w.shape[0]) // (w.shape[0] // group)
    per = scale.reshape(group, -1)[groups]  # [C_in, C_out/group]
    base = conv.name or "convT"
    set_input(rw, conv, 1, (w.astype(np.float64) * per.reshape(per.shape + (1,) * (w.ndim - 2))).astype(w.dtype), f"{base}/W_{tag}")
    set_input(rw, conv, 2, (_bias(conv, scale.size) * scale + shift).astype(w.dtype), f"{base}/B_{tag}")
    return conv.outputs[0]


def _fold_gemm(rw: Rewriter, gemm: Node, scale: np.ndarray, shift: np.ndarray, tag: str) -> Tensor:
    w = np.asarray(weight(gemm, 1))
    trans_b = int(gemm.attrs.get("transB", 0))
    alpha = float(gemm.attrs.get("alpha", 1.0))
    beta = float(gemm.attrs.get("beta", 1.0))
    scaled = w.astype(np.float64) * alpha * (scale[:, None] if trans_b else scale[None, :])
    base = gemm.name or "gemm"
    set_input(rw, gemm, 1, scaled.astype(w.dtype), f"{base}/B_{tag}")
    set_input(rw, gemm, 2, (beta * _bias(gemm, scale.size) * scale + shift).astype(w.dtype), f"{base}/C_{tag}")
    gemm.attrs["alpha"] = 1.0
    gemm.attrs["beta"] = 1.0
    return gemm.outputs[0]


def _fold_matmul(rw: Rewriter, mm: Node, scale: np.ndarray, shift: np.ndarray, tag: str) -> Tensor:
    w = np.asarray(weight(mm, 1))
    base = mm.name or "matmul"
    set_input(rw, mm, 1, (w.astype(np.float64) * scale[None, :]).astype(w.dtype), f"{base}/W_{tag}")
    out = mm.outputs[0]
    if not np.any(shift != 0):
        return out
    biased = ir.make_variable(rw.name(f"{out.name}/{tag}"), dtype=out.dtype, shape=out.shape)
    bias = ir.make_constant(rw.name(f"{base}/B_{tag}"), shift.astype(w.dtype))
    add = rw.add(ir.make_node("Add", [biased, bias], [], name=rw.name(f"{base}/{tag}_add")))
    mm.outputs[0] = biased
    add.outputs.append(out)
    return out


_FOLDS: dict[str, Callable[[Rewriter, Node, np.ndarray, np.ndarray, str], Tensor]] = {
    "Conv": _fold_conv,
    "ConvTranspose": _fold_conv_transpose,
    "Gemm": _fold_gemm,
    "MatMul": _fold_matmul,
}
#: The linear ops an affine on their output folds into.
LINEAR_OPS = tuple(_FOLDS)


def fold_into(rw: Rewriter, producer: Node, scale: np.ndarray, shift: np.ndarray, tag: str) -> Tensor:
    """Fold ``z = scale ⊙ y + shift`` into ``producer`` (``y`` its output, :func:`check_fold` passed);
    returns the tensor now holding ``z``. ``tag`` names the new constants (``conv/W_<tag>``)."""
    return _FOLDS[producer.op](rw, producer, scale, shift, tag)


class FoldIntoProducer(Rule):
    """A rule whose anchor applies a per-channel affine to a linear op's output: the rewrite folds it
    into that op (:func:`fold_into`) and the anchor goes. Subclasses match, through :meth:`found`."""

    tag: ClassVar[str] = ""

    def found(self, anchor: Node, producer: Node, scale: np.ndarray, shift: np.ndarray) -> Match:
        """The match folding ``scale``/``shift`` at ``anchor`` into ``producer``, counted under its op.

        The producer is claimed as well: one walk folds at most one affine into a node.
        """
        return Match([anchor, producer], {"producer": producer, "scale": scale, "shift": shift}, label=producer.op)

    def rewrite(self, rw: Rewriter, match: Match) -> None:
        v = match.values
        rw.replace_uses(match.anchor.outputs[0], fold_into(rw, v["producer"], v["scale"], v["shift"], self.tag))
        rw.remove(match.anchor)
