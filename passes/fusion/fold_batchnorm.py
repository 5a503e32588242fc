"""``fold-batchnorm``: fold inference BatchNormalization into the preceding linear op.

BatchNormalization computes ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel.
With ``s = gamma / sqrt(var + eps)`` and a producer ``x = W * a + b`` this is
``y = (W * s) * a + ((b - mean) * s + beta)``, so

- Conv:            ``W'[o, ...] = W[o, ...] * s[o]``,              ``b' = (b - mean) * s + beta``
- ConvTranspose:   ``W'[i, j, ...] = W[i, j, ...] * s[g * C_g + j]`` (weight is [C_in, C_out/group, ...])
- Gemm:            ``B'`` scaled along the output axis, ``alpha``/``beta`` absorbed, ``C' = (beta*C - mean) * s + beta_bn``
- MatMul (2-D):    ``W'[:, o] = W[:, o] * s[o]`` and a bias ``Add`` carrying ``beta - mean * s``

Each rule is a *check* returning a reason string when it does not apply, and a *rewrite*.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.pass_base import EmptyConfig, Pass, PassContext, PassResult, register_pass


def _bn_scale_shift(bn: Node) -> tuple[np.ndarray, np.ndarray] | str:
    params = [ir.constant_array(t) for t in bn.inputs[1:5]]
    if any(p is None for p in params):
        return "BatchNormalization parameters are not constants"
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
    if bn.attrs.get("training_mode", 0):
        return "BatchNormalization is in training mode"
    if len([t for t in bn.outputs if t.outputs]) > 1:
        return "BatchNormalization running statistics outputs are used"
    eps = float(bn.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _weight(node: Node, index: int) -> np.ndarray | None:
    return ir.constant_array(node.inputs[index]) if len(node.inputs) > index else None


def _check_common(graph: Graph, producer: Node, bn: Node) -> str | None:
    if ir.only_consumer(graph, producer.outputs[0]) is not bn:
        return f"{producer.op} output has other readers"
    if _weight(producer, 1) is None:
        return f"{producer.op} weight is not a constant"
    if len(producer.inputs) > 2 and producer.inputs[2].name and _weight(producer, 2) is None:
        return f"{producer.op} bias is not a constant"
    if _weight(producer, 1).dtype != np.float32 and _weight(producer, 1).dtype != np.float64:  # type: ignore[union-attr]
        return "weight is not float"
    return None


def _bias(node: Node, index: int, size: int, dtype: np.dtype) -> np.ndarray:
    b = _weight(node, index)
    return np.zeros(size, dtype=np.float64) if b is None else b.astype(np.float64).reshape(-1)


def _set_input(node: Node, index: int, values: np.ndarray, namer: ir.NameGenerator, base: str) -> None:
    const = ir.make_constant(namer.new(base), values)
    if len(node.inputs) > index:
        node.inputs[index] = const
    else:
        while len(node.inputs) < index:
            node.inputs.append(ir.make_variable(""))
        node.inputs.append(const)


def _fold_conv(graph: Graph, conv: Node, bn: Node, scale: np.ndarray, shift: np.ndarray, namer: ir.NameGenerator) -> Tensor | str:
    w = _weight(conv, 1)
    if w.shape[0] != scale.size:  # type: ignore[union-attr]
        return f"Conv has {w.shape[0]} output channels, BatchNormalization {scale.size}"  # type: ignore[union-attr]
    b = _bias(conv, 2, scale.size, w.dtype)  # type: ignore[union-attr]
    shape = (-1,) + (1,) * (w.ndim - 1)  # type: ignore[union-attr]
    _set_input(conv, 1, (w.astype(np.float64) * scale.reshape(shape)).astype(w.dtype), namer, f"{conv.name or 'conv'}/W_bnfold")  # type: ignore[union-attr]
    _set_input(conv, 2, ((b * scale) + shift).astype(w.dtype), namer, f"{conv.name or 'conv'}/B_bnfold")  # type: ignore[union-attr]
    return conv.outputs[0]


def _fold_conv_transpose(graph: Graph, conv: Node, bn: Node, scale: np.ndarray, shift: np.ndarray, namer: ir.NameGenerator) -> Tensor | str:
    w = _weight(conv, 1)
    group = int(conv.attrs.get("group", 1))
    c_out = w.shape[1] * group  # type: ignore[union-attr]
    if c_out != scale.size:
        return f"ConvTranspose has {c_out} output channels, BatchNormalization {scale.size}"
    c_in_per_group = w.shape[0] // group  # type: ignore[union-attr]
    # Input channel i belongs to group i // c_in_per_group; its slice j maps to output g*C_g + j.
    groups = np.arange(w.shape[0]) // c_in_per_group  # type: ignore[union-attr]
    per = scale.reshape(group, -1)[groups]  # [C_in, C_out/group]
    shape = per.shape + (1,) * (w.ndim - 2)  # type: ignore[union-attr]
    b = _bias(conv, 2, scale.size, w.dtype)  # type: ignore[union-attr]
    _set_input(conv, 1, (w.astype(np.float64) * per.reshape(shape)).astype(w.dtype), namer, f"{conv.name or 'convT'}/W_bnfold")  # type: ignore[union-attr]
    _set_input(conv, 2, (b * scale + shift).astype(w.dtype), namer, f"{conv.name or 'convT'}/B_bnfold")  # type: ignore[union-attr]
    return conv.outputs[0]


def _fold_gemm(graph: Graph, gemm: Node, bn: Node, scale: np.ndarray, shift: np.ndarray, namer: ir.NameGenerator) -> Tensor | str:
    w = _weight(gemm, 1).astype(np.float64)  # type: ignore[union-attr]
    trans_b = int(gemm.attrs.get("transB", 0))
    n_out = w.shape[0] if trans_b else w.shape[1]
    if n_out != scale.size:
        return f"Gemm has {n_out} outputs, BatchNormalization {scale.size}"
    alpha = float(gemm.attrs.get("alpha", 1.0))
    beta = float(gemm.attrs.get("beta", 1.0))
    c = _weight(gemm, 2)
    if c is not None and c.size not in (1, n_out):
        return "Gemm bias is not per-output"
    c = np.zeros(n_out) if c is None else np.broadcast_to(c.astype(np.float64).reshape(-1), (n_out,))
    w = w * alpha * (scale[:, None] if trans_b else scale[None, :])
    dtype = _weight(gemm, 1).dtype  # type: ignore[union-attr]
    _set_input(gemm, 1, w.astype(dtype), namer, f"{gemm.name or 'gemm'}/B_bnfold")
    _set_input(gemm, 2, (beta * c * scale + shift).astype(dtype), namer, f"{gemm.name or 'gemm'}/C_bnfold")
    gemm.attrs["alpha"] = 1.0
    gemm.attrs["beta"] = 1.0
    return gemm.outputs[0]


def _fold_matmul(graph: Graph, mm: Node, bn: Node, scale: np.ndarray, shift: np.ndarray, namer: ir.NameGenerator) -> Tensor | str:
    w = _weight(mm, 1)
    x = mm.inputs[0]
    if w.ndim != 2 or not isinstance(x.shape, (list, tuple)) or len(x.shape) != 2:  # type: ignore[union-attr]
        return "MatMul is not 2-D (BatchNormalization's channel axis would not be the last axis)"
    if w.shape[1] != scale.size:  # type: ignore[union-attr]
        return f"MatMul has {w.shape[1]} outputs, BatchNormalization {scale.size}"  # type: ignore[union-attr]
    _set_input(mm, 1, (w.astype(np.float64) * scale[None, :]).astype(w.dtype), namer, f"{mm.name or 'matmul'}/W_bnfold")  # type: ignore[union-attr]
    out = mm.outputs[0]
    biased = ir.make_variable(namer.new(f"{out.name}/bnfold"), dtype=out.dtype, shape=out.shape)
    bias = ir.make_constant(namer.new(f"{mm.name or 'matmul'}/B_bnfold"), shift.astype(w.dtype))  # type: ignore[union-attr]
    add = ir.make_node("Add", [biased, bias], [], name=namer.new(f"{mm.name or 'matmul'}/bnfold_add"))
    mm.outputs[0] = biased
    add.outputs.append(out)
    graph.nodes.append(add)
    return out


FoldRule = Callable[[Graph, Node, Node, np.ndarray, np.ndarray, ir.NameGenerator], "Tensor | str"]
#: producer op → rewrite. Each returns the tensor replacing the BatchNormalization output, or the
#: reason it cannot fold.
FOLD_RULES: dict[str, FoldRule] = {
    "Conv": _fold_conv,
    "ConvTranspose": _fold_conv_transpose,
    "Gemm": _fold_gemm,
    "MatMul": _fold_matmul,
}


@register_pass("fold-batchnorm")
class FoldBatchNorm(Pass[EmptyConfig]):
    """Fold inference BatchNormalization into the preceding Conv / ConvTranspose / Gemm / MatMul."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        namer = ir.names(model)
        folded = 0
        skipped: dict[str, str] = {}
        for graph in ir.iter_graphs(model.graph):
            doomed = []
            for bn in list(graph.nodes):
                if bn.op != "BatchNormalization" or (bn.domain or ""):
                    continue
                reason = self._try_fold(graph, bn, namer)
                if reason is None:
                    doomed.append(bn)
                    folded += 1
                else:
                    skipped[bn.name or bn.outputs[0].name] = reason
            ir.remove_nodes(graph, doomed)
        return PassResult(model, folded > 0, {"folded": folded, "skipped": len(skipped), "reasons": skipped})

    @staticmethod
    def _try_fold(graph: Graph, bn: Node, namer: ir.NameGenerator) -> str | None:
        producer = ir.producer(bn.inputs[0])
        if producer is None or producer.op not in FOLD_RULES or (producer.domain or ""):
            return "not preceded by Conv/ConvTranspose/Gemm/MatMul"
        reason = _check_common(graph, producer, bn)
        if reason:
            return reason
        ss = _bn_scale_shift(bn)
        if isinstance(ss, str):
            return ss
        folded = FOLD_RULES[producer.op](graph, producer, bn, *ss, namer)
        if isinstance(folded, str):
            return folded
        ir.replace_all_uses(graph, bn.outputs[0], folded)
        return None
