"""AWQ (Lin et al. 2023): per-input-channel scales that protect the weights of salient channels.

For ``Y = X @ W`` and any positive ``s[K]``, ``Y = (X / s) @ (s ⊙ W)`` (row ``k`` of ``W`` times
``s_k``). Quantizing ``s ⊙ W`` instead of ``W`` gives the rows of channels with large activations
more resolution relative to their block (their relative rounding error shrinks by ``s_k``), at the
cost of the others. With ``a_k = E|x_k|`` from calibration data::

    s(α) = a^α / sqrt(max(a^α) · min(a^α))        (a clamped at 1e-4; α in a grid, α = 0: s = 1)
    α*   = argmin_α  Σ_layers || X W - (X / s) · Q(s ⊙ W) ||²

over rows ``X`` sampled from the calibration data, ``Q`` the block quantizer of :mod:`._blockwise`
(round to nearest during the search). Layers reading the same tensor (Q/K/V) share one ``s`` and
one summed loss. ``α = 0`` comes first in the grid and wins ties, so on the sampled rows AWQ is
never worse than plain rounding. When the block grid uses the MSE clip search, it runs after the
scaling, and the scaled result is kept only if its loss (with clipping) beats the unscaled one's.

**Where ``1 / s`` goes** (:func:`apply_scales`): the consumers' weights become ``s ⊙ W`` and the
activation they read must become ``X / s``. Folded exactly into the producer when nothing else
reads ``X`` (and ``X`` is not a graph output):

- ``LayerNormalization`` (last axis, constant ``scale`` / ``bias``): both divided by ``s``;
- ``RMSNormalization`` (opset 23) and ``com.microsoft.SimplifiedLayerNormalization`` (last axis,
  constant ``scale``): ``scale`` divided by ``s``;
- ``MatMul`` with a constant 2-D weight read only by it (``X = H @ Wp``, optionally followed by an
  ``Add`` of a constant ``[K]`` bias): ``Wp[:, k]`` and ``bias[k]`` divided by ``s_k``.

Otherwise (a residual reads the LayerNorm output as in post-LN BERT, an activation function sits in
between, ...) one ``Mul(X, 1/s)`` is inserted before the scaled consumers: one elementwise op on the
activation per group, ``K`` multiplications per row next to the ``K·N`` of the MatMuls it feeds.
Not supported: folding through activation functions, Transpose/Reshape, or into Conv/Gemm producers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from onnxq import ir
from onnxq.ir import Graph, Node, Tensor

__all__ = ["AWQChoice", "awq_scales", "search_alpha", "apply_scales", "alpha_grid"]

#: Normalization ops whose per-channel ``scale`` (input 1) multiplies their output, with their domain.
_NORMS = {("", "LayerNormalization"), ("", "RMSNormalization"), (ir.MS_DOMAIN, "SimplifiedLayerNormalization")}


@dataclass(frozen=True)
class AWQChoice:
    """The searched scaling of one group: ``alpha``, ``scales[K]`` and the losses (sampled rows)."""

    alpha: float
    scales: np.ndarray
    loss: float
    loss_plain: float


def alpha_grid(steps: int) -> np.ndarray:
    """``α`` in ``[0, 1]``, ``steps`` intervals (20: step 0.05), 0 first."""
    return np.linspace(0.0, 1.0, steps + 1)


def awq_scales(mean_abs: np.ndarray, alpha: float) -> np.ndarray:
    """``s = a^α / sqrt(max · min)`` (float64, ``a`` clamped at 1e-4); all ones for ``α = 0``."""
    s = np.maximum(np.asarray(mean_abs, np.float64), 1e-4) ** alpha
    return s / np.sqrt(s.max() * s.min())


def _loss(x: np.ndarray, refs: Sequence[np.ndarray], weights: Sequence[np.ndarray], s: np.ndarray, quantize: Callable[[np.ndarray], np.ndarray]) -> float:
    """``Σ || X W - (X / s) Q(s ⊙ W) ||²`` (float32 products, float64 sum)."""
    xs = (x / s.astype(np.float32)).astype(np.float32)
    total = 0.0
    for ref, w in zip(refs, weights):
        deq = quantize((w * s[:, None]).astype(np.float32))
        total += float(np.square((xs @ deq - ref).astype(np.float64)).sum())
    return total


def search_alpha(
    x: np.ndarray, mean_abs: np.ndarray, weights: Sequence[np.ndarray], quantize: Callable[[np.ndarray], np.ndarray], grid: Sequence[float]
) -> AWQChoice:
    """The ``α`` of ``grid`` minimizing the group's loss on rows ``x[R, K]`` (module docstring).

    Args:
        x: sampled input rows.
        mean_abs: ``E|x_k|`` over all calibration rows.
        weights: the group's ``W[K, N_i]`` (float32).
        quantize: ``W → Q(W)``, the dequantized block quantization.
        grid: candidate ``α`` values; the first wins ties (put 0 first).
    """
    x = np.asarray(x, np.float32)
    refs = [x @ np.asarray(w, np.float32) for w in weights]
    best: tuple[float, float, np.ndarray] | None = None
    plain = 0.0
    for i, alpha in enumerate(grid):
        s = awq_scales(mean_abs, float(alpha))
        loss = _loss(x, refs, weights, s, quantize)
        if i == 0:
            plain = loss
        if best is None or loss < best[1]:
            best = (float(alpha), loss, s)
    assert best is not None, "empty alpha grid"
    return AWQChoice(best[0], best[2], best[1], plain)


def final_loss(x: np.ndarray, weights: Sequence[np.ndarray], s: np.ndarray, quantize: Callable[[np.ndarray], np.ndarray]) -> float:
    """The group's loss for given scales (used to compare scaled and plain results with clipping)."""
    x = np.asarray(x, np.float32)
    return _loss(x, [x @ np.asarray(w, np.float32) for w in weights], weights, s, quantize)


# -- the graph ------------------------------------------------------------------------------------


def _norm_fold(node: Node, k: int) -> bool:
    """Whether ``node`` is a last-axis normalization with constant scale (and bias) to divide by ``s``."""
    if (node.domain or "", node.op) not in _NORMS or int(ir.attr(node, "axis", -1)) != -1 or len(node.inputs) < 2:
        return False
    scale = ir.constant_array(node.inputs[1])
    if scale is None or scale.shape != (k,):
        return False
    return not (len(node.inputs) > 2 and node.inputs[2].name and ir.constant_array(node.inputs[2]) is None)


def _matmul_fold(graph: Graph, x: Tensor, k: int, weight_readers: dict[str, int]) -> tuple[Node, Node | None] | None:
    """``(MatMul, bias Add or None)`` producing ``x`` whose weight columns can absorb ``1 / s``."""
    node, add = ir.producer(x), None
    if node is not None and node.op == "Add" and not node.domain:
        bias = next((t for t in node.inputs if ir.constant_array(t) is not None), None)
        other = next((t for t in node.inputs if t is not bias), None)
        if bias is None or other is None or ir.constant_array(bias).shape != (k,) or len(other.outputs) != 1:  # type: ignore[union-attr]
            return None
        if ir.is_graph_output(graph, other):
            return None
        if weight_readers.get(bias.name, 0) != 1:
            return None
        node, add = ir.producer(other), node
    if node is None or node.op != "MatMul" or node.domain:
        return None
    w = ir.constant_array(node.inputs[1])
    if w is None or w.ndim != 2 or w.shape[1] != k or weight_readers.get(node.inputs[1].name, 0) != 1:
        return None
    return node, add


def fold_kind(graph: Graph, x: Tensor, readers: Sequence[Node], k: int, weight_readers: dict[str, int]) -> str:
    """How ``1 / s`` reaches ``x``'s readers: ``"norm"``, ``"matmul"`` or ``"mul"`` (see module docstring)."""
    chosen = {id(n) for n in readers}
    alone = all(id(n) in chosen for n in x.outputs) and not ir.is_graph_output(graph, x) and not ir.is_graph_input(graph, x)
    producer = ir.producer(x)
    if alone and producer is not None and _norm_fold(producer, k):
        return "norm"
    if alone and _matmul_fold(graph, x, k, weight_readers) is not None:
        return "matmul"
    return "mul"


def _scaled_const(namer: ir.NameGenerator, old: Tensor, factor: np.ndarray, weight_readers: dict[str, int]) -> Tensor:
    """A new constant ``old · factor`` (same dtype), registered with one reader."""
    values = ir.constant_array(old)
    assert values is not None
    new = ir.make_constant(namer.new(f"{old.name}/awq"), (values.astype(np.float64) * factor).astype(values.dtype))
    weight_readers[new.name] = 1
    return new


def apply_scales(
    graph: Graph, x: Tensor, readers: Sequence[Node], s: np.ndarray, namer: ir.NameGenerator, weight_readers: dict[str, int]
) -> tuple[str, Node | None]:
    """Make ``readers`` compute ``(x / s) @ (s ⊙ W)``: weights scaled, ``1 / s`` folded or a Mul inserted.

    Every replaced weight constant gets a new name, registered in ``weight_readers`` (one reader).

    Returns:
        How ``1 / s`` was applied (``fold_kind``) and, for ``"matmul"``, the producer MatMul whose
        weight columns were divided by ``s``.
    """
    k = len(s)
    kind = fold_kind(graph, x, readers, k, weight_readers)
    inv = 1.0 / s
    folded_into = None
    if kind == "norm":
        norm = ir.producer(x)
        assert norm is not None
        for i in (1, 2) if len(norm.inputs) > 2 and norm.inputs[2].name else (1,):
            norm.inputs[i] = _scaled_const(namer, norm.inputs[i], inv, weight_readers)
    elif kind == "matmul":
        found = _matmul_fold(graph, x, k, weight_readers)
        assert found is not None
        folded_into, add = found
        folded_into.inputs[1] = _scaled_const(namer, folded_into.inputs[1], inv[None, :], weight_readers)
        if add is not None:
            i = next(i for i, t in enumerate(add.inputs) if ir.constant_array(t) is not None)
            add.inputs[i] = _scaled_const(namer, add.inputs[i], inv, weight_readers)
    else:
        _insert_mul(graph, x, readers, inv, namer)
    for node in readers:
        trans_b = node.op == "Gemm" and bool(ir.attr(node, "transB", 0))
        node.inputs[1] = _scaled_const(namer, node.inputs[1], s[None, :] if trans_b else s[:, None], weight_readers)
    return kind, folded_into


def _insert_mul(graph: Graph, x: Tensor, readers: Sequence[Node], inv: np.ndarray, namer: ir.NameGenerator) -> None:
    """``x / s`` as ``Mul(x, 1/s)`` placed before the first reader (keeps the node order topological)."""
    weight = ir.constant_array(readers[0].inputs[1])
    dtype = np.dtype(x.dtype) if x.dtype is not None else weight.dtype if weight is not None else np.dtype(np.float32)
    factor = ir.make_constant(namer.new(f"{x.name}/awq_inv_scale"), inv.astype(dtype))
    scaled = ir.make_variable(namer.new(f"{x.name}/awq_scaled"), dtype=x.dtype, shape=x.shape)
    mul = ir.make_node("Mul", [x, factor], [scaled], name=namer.new(f"{x.name}/awq_mul"))
    chosen = {id(n) for n in readers}
    for node in readers:
        node.inputs[0] = scaled
    first = next(i for i, n in enumerate(graph.nodes) if id(n) in chosen)
    graph.nodes.insert(first, mul)
