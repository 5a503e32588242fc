"""``fold-affine``: fold per-channel ``Mul``/``Add``/``Sub``/``Div`` by constants into the preceding linear op.

Paddle2ONNX writes inference BatchNormalization as ``Mul(scale) → Add(shift)``; exporters also
leave constant scalings after convolutions. With a producer ``y = W * a + b`` and a per-output-
channel affine ``z = s ⊙ y + t``:  ``W' = W · s`` (along the output-channel axis) and
``b' = b · s + t``. The rules are :mod:`.fold_batchnorm`'s; this pass only extracts ``(s, t)``:

- ``Mul(y, c)`` → ``s = c, t = 0``;  ``Div(y, c)`` → ``s = 1/c, t = 0``
- ``Add(y, d)`` → ``s = 1, t = d``;  ``Sub(y, d)`` → ``s = 1, t = -d``

where the constant broadcasts along the output-channel axis only (axis 1 for Conv outputs, the
last axis for Gemm/MatMul) or is a scalar. Left unfolded, per-channel constants quantized with
one activation scale lose most of their precision. MatMul has no bias input, so only scalings
fold into it.
"""

from __future__ import annotations

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass

from .fold_batchnorm import FOLD_RULES, _check_common, _set_input

_CHANNEL_AXIS = {"Conv": 1, "ConvTranspose": 1, "Gemm": -1, "MatMul": -1}


def _output_rank(producer: Node) -> int | None:
    shape = producer.outputs[0].shape
    if isinstance(shape, (list, tuple)):
        return len(shape)
    if producer.op in ("Conv", "ConvTranspose"):
        w = ir.constant_array(producer.inputs[1])
        return None if w is None else w.ndim
    return 2 if producer.op == "Gemm" else None


def channel_vector(producer: Node, const: np.ndarray, channels: int) -> np.ndarray | None:
    """``const`` as a per-output-channel vector of ``producer``, or None if it varies elsewhere."""
    if const.size == 1:
        return np.full(channels, float(const.reshape(-1)[0]))
    rank = _output_rank(producer)
    if rank is None or const.ndim > rank:
        return None
    full: np.ndarray = const.reshape((1,) * (rank - const.ndim) + tuple(const.shape))
    axis = _CHANNEL_AXIS[producer.op] % rank
    dims = [int(n) for n in full.shape]
    if dims[axis] != channels or any(d != 1 for i, d in enumerate(dims) if i != axis):
        return None
    return full.reshape(-1).astype(np.float64)


def _channels(producer: Node) -> int | None:
    w = ir.constant_array(producer.inputs[1])
    if w is None:
        return None
    if producer.op == "Conv":
        return w.shape[0]
    if producer.op == "ConvTranspose":
        return w.shape[1] * int(producer.attrs.get("group", 1))
    if producer.op == "Gemm":
        return w.shape[0] if producer.attrs.get("transB", 0) else w.shape[1]
    return w.shape[-1]


def _affine(node: Node, y: Tensor, producer: Node) -> tuple[np.ndarray, np.ndarray] | str:
    """(scale, shift) per channel that ``node`` applies to ``y``, or why it is not one."""
    if len(node.inputs) != 2:
        return "not binary"
    idx = 0 if node.inputs[0] is y else 1
    const = ir.constant_array(node.inputs[1 - idx])
    if const is None or const.dtype.kind != "f":
        return "other operand is not a float constant"
    if node.op in ("Sub", "Div") and idx != 0:
        return f"{node.op} with the activation as second operand"
    channels = _channels(producer)
    vec = channel_vector(producer, const, channels) if channels else None
    if vec is None:
        return "constant is not per output channel"
    return scale_shift(node.op, vec)


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


def _fold_matmul_scale(graph: Graph, mm: Node, node: Node, scale: np.ndarray, shift: np.ndarray, namer: ir.NameGenerator) -> Tensor | str:
    w = ir.constant_array(mm.inputs[1])
    if w is None or w.ndim != 2:
        return "MatMul weight is not a 2-D constant"
    if np.any(shift != 0):
        return "MatMul has no bias input to absorb a shift"
    _set_input(mm, 1, (w.astype(np.float64) * scale[None, :]).astype(w.dtype), namer, f"{mm.name or 'matmul'}/W_affine")
    return mm.outputs[0]


@register_pass("fold-affine")
class FoldAffine(Pass[EmptyConfig]):
    """Fold per-channel Mul/Add/Sub/Div by constants into the preceding Conv/ConvTranspose/Gemm/MatMul."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        namer = ir.names(model)
        folded = 0
        for graph in ir.iter_graphs(model.graph):
            doomed = []
            for node in list(graph.nodes):
                if node.op not in ("Mul", "Add", "Sub", "Div") or (node.domain or "") or len(node.inputs) != 2:
                    continue
                for y in node.inputs:
                    producer = ir.producer(y)
                    if producer is None or producer.op not in _CHANNEL_AXIS or (producer.domain or ""):
                        continue
                    if _check_common(graph, producer, node) is not None:
                        continue
                    affine = _affine(node, y, producer)
                    if isinstance(affine, str):
                        continue
                    rule = _fold_matmul_scale if producer.op == "MatMul" else FOLD_RULES[producer.op]
                    result = rule(graph, producer, node, *affine, namer)
                    if isinstance(result, str):
                        continue
                    ir.replace_all_uses(graph, node.outputs[0], result)
                    doomed.append(node)
                    folded += 1
                    break
            ir.remove_nodes(graph, doomed)
        return PassResult(model, folded > 0, {"folded": folded})
