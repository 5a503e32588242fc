"""GPTQ and AWQ for ``quantize-weights-blockwise``: calibration statistics in, quantized weights out.

:func:`calibrate_weights` runs before the pass emits anything:

1. **Which weights** (:func:`_eligible`): MatMul / Gemm targets of the main graph whose input is a
   float activation. Others keep round-to-nearest, with the reason in the stats (``fallback``): a node
   inside an If/Loop body (its input is not streamed), a weight shared by nodes reading different
   inputs (GPTQ: one weight, one Hessian), for AWQ also a shared weight or a Gemm with ``transA=1``;
   for GPTQ also a layer whose calibration data has fewer rows than its ``K`` inputs (known once the
   statistics are in: with a singular ``H`` the compensation overfits the few rows seen).
2. **Statistics** (:mod:`._weight_stats`): the eligible nodes' input tensors, in groups that fit
   ``max_memory_mb``; each group's statistics are used and dropped before the next group's are
   collected (one onnxruntime pass over the data per group).
3. **GPTQ** (:mod:`._gptq`): every weight is quantized from its Hessian at once; the pass later emits
   those codes and scales instead of rounding to nearest. Inputs are the float model's by default;
   with ``sequential`` (the paper's order) the inputs come in waves (:func:`_waves`: each wave depends
   only on layers of earlier waves) and each wave's statistics are collected with the earlier layers
   already quantized (their weights swapped for float constants of the dequantized values, then
   restored), at one pass over the data per wave.
4. **AWQ** (:mod:`._awq`): per input tensor, ``α`` is searched for the group of weights reading it;
   the float graph is rewritten to ``(X / s) · (s ⊙ W)`` (weights scaled, ``1 / s`` folded into the
   producer or a Mul) and the targets' weights are scaled in step; the pass then quantizes the scaled
   weights as usual (round to nearest, or the MSE clip search).

The stats report per-layer times and ``output_error_ratio``: for GPTQ ``Σ tr(ΔᵀHΔ)`` over
round-to-nearest's (calibration data), for AWQ the sampled rows' loss over plain rounding's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from onnxq import ir
from onnxq.errors import CalibrationError
from onnxq.ir import Graph, Model, Node, Tensor
from onnxq.progress import track

from ._awq import alpha_grid, apply_scales, final_loss, search_alpha
from ._blockwise import BlockGrid, BlockQuant, quantize_blockwise
from ._gptq import gptq_quantize
from ._weight_stats import InputStats, collect_input_stats, input_groups

__all__ = ["RoundingOptions", "WeightTarget", "Calibrated", "block_grid", "calibrate_weights"]


class RoundingOptions(Protocol):
    """The options of ``quantize-weights-blockwise`` this module reads (its config satisfies it)."""

    @property
    def algorithm(self) -> str: ...
    @property
    def bits(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def symmetric(self) -> bool: ...
    @property
    def scale_search(self) -> str: ...
    @property
    def search_min_ratio(self) -> float: ...
    @property
    def search_steps(self) -> int: ...
    @property
    def samples(self) -> int: ...
    @property
    def max_memory_mb(self) -> float | None: ...
    @property
    def damp(self) -> float: ...
    @property
    def act_order(self) -> bool: ...
    @property
    def sequential(self) -> bool: ...
    @property
    def awq_grid(self) -> int: ...
    @property
    def awq_rows(self) -> int: ...
    @property
    def seed(self) -> int: ...


class WeightTarget(Protocol):
    """A node the pass will rewrite: its logical ``w[K, N]`` and weight constant (AWQ updates both)."""

    graph: Graph
    node: Node
    weight: Tensor
    w: np.ndarray


@dataclass
class Calibrated:
    """What the pass needs from calibration: GPTQ's quantized weights by ``id(node)``, and stats."""

    quant: dict[int, BlockQuant] = field(default_factory=dict)
    fallback: dict[str, str] = field(default_factory=dict)
    layers: int = 0
    data_seconds: float = 0.0
    algorithm_seconds: float = 0.0
    error: float = 0.0
    error_baseline: float = 0.0
    groups: int = 0
    folds: dict[str, int] = field(default_factory=dict)
    alphas: list[float] = field(default_factory=list)
    importance: dict[int, np.ndarray | None] = field(default_factory=dict)

    def as_dict(self, algorithm: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "algorithm": algorithm,
            "calibrated_layers": self.layers,
            "statistics_groups": self.groups,
            "statistics_seconds": round(self.data_seconds, 3),
            "algorithm_seconds": round(self.algorithm_seconds, 3),
            "seconds_per_layer": round(self.algorithm_seconds / self.layers, 4) if self.layers else 0.0,
            "fallback": dict(self.fallback),
        }
        if self.error_baseline > 0:
            out["output_error_ratio"] = self.error / self.error_baseline
        if algorithm == "awq":
            out["awq_folds"] = dict(self.folds)
            out["awq_alpha_mean"] = float(np.mean(self.alphas)) if self.alphas else 0.0
        return out


def _label(node: Node) -> str:
    return node.name or node.outputs[0].name


def _input_of(node: Node) -> tuple[Tensor, bool]:
    """The activation a MatMul / Gemm multiplies by its weight, and whether it is ``[K, M]`` (Gemm transA)."""
    return node.inputs[0], node.op == "Gemm" and bool(ir.attr(node, "transA", 0))


def _weight_readers(model: Model) -> dict[str, int]:
    """Constant name → number of node inputs reading it (all graphs)."""
    counts: dict[str, int] = {}
    for node in ir.iter_nodes(model.graph):
        for t in node.inputs:
            if t.name and ir.is_constant(t):
                counts[t.name] = counts.get(t.name, 0) + 1
    return counts


def _eligible(
    model: Model, targets: Sequence[WeightTarget], algorithm: str, readers: Mapping[str, int]
) -> tuple[dict[str, list[WeightTarget]], dict[str, str]]:
    """Eligible targets grouped by input tensor name (graph order), and the others' reasons."""
    main = {id(n) for n in model.graph.nodes}
    inputs_of_weight: dict[str, set[str]] = {}
    for t in targets:
        if t.node.op != "Gather":
            inputs_of_weight.setdefault(t.weight.name, set()).add(t.node.inputs[0].name)
    groups: dict[str, list[WeightTarget]] = {}
    fallback: dict[str, str] = {}
    for t in targets:
        if t.node.op == "Gather":
            continue
        x, transposed = _input_of(t.node)
        reason = None
        if id(t.node) not in main:
            reason = "inside a subgraph (its input is not streamed); rounded to nearest"
        elif ir.is_constant(x) or (x.dtype is not None and np.dtype(x.dtype).kind != "f"):  # unknown: the weight's, float
            reason = f"input {x.name} is not a float activation; rounded to nearest"
        elif len(inputs_of_weight[t.weight.name]) > 1:
            reason = f"weight {t.weight.name} is read by nodes with different inputs; rounded to nearest"
        elif algorithm == "awq" and (transposed or readers.get(t.weight.name, 0) != 1):
            reason = "Gemm with transA=1 (AWQ scales input channels along the last axis)" if transposed else f"weight {t.weight.name} is shared"
            reason += "; rounded to nearest"
        if reason is not None:
            fallback[_label(t.node)] = reason
        else:
            groups.setdefault(x.name, []).append(t)
    return groups, fallback


def calibrate_weights(
    model: Model, targets: Sequence[WeightTarget], data: Iterable[Mapping[str, np.ndarray]], opts: RoundingOptions, *, progress: bool = False
) -> Calibrated:
    """GPTQ results / AWQ rewrites for ``targets`` from the calibration ``data`` (module docstring).

    Raises:
        CalibrationError: no samples, or a tensor cannot be read or is not finite.
    """
    out = Calibrated()
    readers = _weight_readers(model)
    groups, out.fallback = _eligible(model, targets, opts.algorithm, readers)
    if not groups:
        return out
    first = next(iter(data), None)
    if first is None:
        raise CalibrationError(f"{model.source}: quantize-weights-blockwise algorithm '{opts.algorithm}': no calibration samples")
    gptq = opts.algorithm == "gptq"
    rows = 0 if gptq else opts.awq_rows
    dims = {name: (ts[0].w.shape[0], _input_of(ts[0].node)[1]) for name, ts in groups.items()}
    namer = ir.names(model)
    by_node = {id(t.node): t for t in targets}
    sequential = gptq and opts.sequential
    waves = _waves(model, groups) if sequential else [list(groups)]
    for wave in track(waves, "gptq layers", enabled=progress and len(waves) > 1):
        plan = input_groups(model, {n: dims[n][0] for n in wave}, first, gram=gptq, rows=rows, max_memory_mb=opts.max_memory_mb)
        out.groups += len(plan)
        for names in track(plan, f"{opts.algorithm} statistics", enabled=progress and len(plan) > 1):
            start = time.perf_counter()
            swapped = _fake_quantize([(by_node[i], q) for i, q in out.quant.items()], namer) if sequential else []
            try:
                stats = collect_input_stats(model, {n: dims[n] for n in names}, data, samples=opts.samples, gram=gptq, rows=rows, seed=opts.seed)
            finally:
                for node, original in swapped:
                    node.inputs[1] = original
            out.data_seconds += time.perf_counter() - start
            for name in track(names, opts.algorithm, enabled=progress and not sequential):
                start = time.perf_counter()
                if gptq:
                    _gptq_group(groups[name], stats[name], opts, out)
                else:
                    _awq_group(groups[name], stats[name], opts, out, namer, readers, by_node)
                out.algorithm_seconds += time.perf_counter() - start
            del stats  # before the next group's statistics: one group's state in memory at a time
    return out


def _waves(model: Model, groups: Mapping[str, Sequence[WeightTarget]]) -> list[list[str]]:
    """The inputs in waves: each wave's inputs depend (through the main graph) only on targets of earlier waves.

    A tensor's dependencies are the target nodes on any path to it (propagated in the graph's topological
    order). Typically a wave is Q/K/V's shared input, then the attention output's, then each FFN MatMul's.
    """
    target_ids = {id(t.node) for ts in groups.values() for t in ts}
    deps: dict[str, frozenset[int]] = {}
    for node in model.graph.nodes:
        acc = frozenset().union(*(deps.get(t.name, frozenset()) for t in node.inputs if t.name))
        if id(node) in target_ids:
            acc = acc | {id(node)}
        for t in node.outputs:
            deps[t.name] = acc
    done: set[int] = set()
    remaining = list(groups)
    waves = []
    while remaining:
        wave = [n for n in remaining if deps.get(n, frozenset()) <= done] or remaining[:1]
        waves.append(wave)
        remaining = [n for n in remaining if n not in wave]
        done.update(id(t.node) for n in wave for t in groups[n])
    return waves


def _fake_quantize(done: Sequence[tuple[WeightTarget, BlockQuant]], namer: ir.NameGenerator) -> list[tuple[Node, Tensor]]:
    """Point every quantized ``done`` target at a float constant holding its dequantized weight (sequential
    GPTQ: later layers see the error of earlier ones); returns ``(node, original weight)`` to restore.

    The stored layout is the logical ``W[K, N]`` transposed back when the node stores ``[N, K]`` (Gemm
    ``transB=1``); a Gemm with ``alpha != 1`` keeps its float weight here (its ``w`` carries ``alpha``).
    """
    swapped = []
    for t, quant in done:
        original = t.node.inputs[1]
        values = ir.constant_array(original)
        if values is None or (t.node.op == "Gemm" and float(ir.attr(t.node, "alpha", 1.0)) != 1.0):
            continue
        transposed = t.node.op == "Gemm" and bool(ir.attr(t.node, "transB", 0))
        deq = quant.dequantize().T if transposed else quant.dequantize()
        if deq.shape != values.shape:
            continue
        t.node.inputs[1] = ir.make_constant(namer.new(f"{original.name}/gptq_dequantized"), deq.astype(values.dtype))
        swapped.append((t.node, original))
    return swapped


def _gptq_group(ts: Sequence[WeightTarget], st: InputStats, opts: RoundingOptions, out: Calibrated) -> None:
    """GPTQ for every weight reading one input (the Hessian is computed once for all of them)."""
    h = st.hessian
    done: dict[str, tuple[np.ndarray, BlockQuant]] = {}
    for t in ts:
        if st.count < st.k:
            # Fewer rows than inputs: H is singular and GPTQ moves the rounding error into directions the
            # calibration data never showed (measured: worse than rounding to nearest on held-out data).
            out.fallback[_label(t.node)] = (
                f"only {st.count} calibration rows for K={st.k} inputs (GPTQ's Hessian would be singular; give more samples); rounded to nearest"
            )
            continue
        again = done.get(t.weight.name)
        if again is not None and np.array_equal(again[0], t.w):
            out.quant[id(t.node)] = again[1]  # the same weight read twice by nodes of the same input
            continue
        dtype = ir.constant_array(t.weight).dtype  # type: ignore[union-attr]
        try:
            r = gptq_quantize(t.w, h, block_grid(opts, dtype), damp=opts.damp, act_order=opts.act_order)
        except np.linalg.LinAlgError as e:
            out.fallback[_label(t.node)] = f"GPTQ's Cholesky factorization failed ({e}); rounded to nearest"
            continue
        out.quant[id(t.node)] = r.quant
        done[t.weight.name] = (t.w, r.quant)
        out.layers += 1
        out.error += r.error
        out.error_baseline += r.error_rtn


def block_grid(opts: RoundingOptions, scale_dtype: np.dtype | type | None, search: bool | None = None) -> BlockGrid:
    """The block grid ``opts`` ask for (its clip search unless ``search`` says otherwise)."""
    search = opts.scale_search == "mse" if search is None else search
    return BlockGrid(opts.block_size, opts.bits, opts.symmetric, search, opts.search_min_ratio, opts.search_steps, scale_dtype)


def _quantizer(grid: BlockGrid, importance: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray]:
    return lambda w: quantize_blockwise(w, grid, importance=importance).dequantize()


class _Choice(NamedTuple):
    """AWQ's pick for one group: ``s`` (None: unscaled), the clip search's row weights (None: equal),
    the group's loss with them and the loss of the plain pass (``rtn``) on the same rows."""

    alpha: float
    s: np.ndarray | None
    importance: np.ndarray | None
    loss: float
    plain: float


def _awq_choice(ts: Sequence[WeightTarget], st: InputStats, opts: RoundingOptions, dtype: np.dtype) -> _Choice:
    """The best candidate for one group; a loss not below ``plain`` means: leave it to the plain pass.

    Without clipping the candidates are ``s(α*)`` and plain rounding. With the MSE clip search they
    are: plain (the clip search alone, what ``rtn`` does), the clip search weighted by ``E[x_k²]``,
    and ``s(α*)`` with the clip search weighted by ``E[(x_k / s_k)²]``; ties keep the earlier.
    """
    weights = [t.w for t in ts]
    grid = [float(a) for a in alpha_grid(opts.awq_grid)]
    choice = search_alpha(st.rows, st.mean_abs, weights, _quantizer(block_grid(opts, dtype, search=False)), grid)
    s = choice.scales if choice.alpha > 0 else None
    if opts.scale_search != "mse":
        return _Choice(choice.alpha, s, None, choice.loss, choice.loss_plain)
    ones, clipped = np.ones(st.k), block_grid(opts, dtype)
    plain = final_loss(st.rows, weights, ones, _quantizer(clipped))
    d = st.mean_sq
    candidates = [_Choice(0.0, None, d, final_loss(st.rows, weights, ones, _quantizer(clipped, d)), plain)]
    if s is not None:
        scaled = d / np.square(s)
        candidates.append(_Choice(choice.alpha, s, scaled, final_loss(st.rows, weights, s, _quantizer(clipped, scaled)), plain))
    return min(candidates, key=lambda c: c.loss)


def _awq_group(
    ts: Sequence[WeightTarget], st: InputStats, opts: RoundingOptions, out: Calibrated, namer: ir.NameGenerator, readers: dict[str, int],
    by_node: Mapping[int, WeightTarget],
) -> None:
    """Search ``s`` for the weights reading one input; rewrite the graph and quantize when it pays."""
    dtype = ir.constant_array(ts[0].weight).dtype  # type: ignore[union-attr]
    alpha, s, importance, loss, plain = _awq_choice(ts, st, opts, dtype)
    out.layers += len(ts)
    out.error_baseline += plain
    out.error += min(loss, plain)
    out.alphas.append(alpha if loss < plain else 0.0)
    if loss >= plain:
        return  # the plain pass's rounding is as good
    if s is not None:
        kind, folded_into = apply_scales(ts[0].graph, ts[0].node.inputs[0], [t.node for t in ts], s, namer, readers)
        out.folds[kind] = out.folds.get(kind, 0) + 1
        for t in ts:
            t.w = np.ascontiguousarray(t.w * s[:, None].astype(np.float32))
            t.weight = t.node.inputs[1]
        producer = by_node.get(id(folded_into)) if folded_into is not None else None
        if producer is not None:  # a MatMul target whose weight columns absorbed 1 / s
            producer.w = np.ascontiguousarray(producer.w / s[None, :].astype(np.float32))
            producer.weight = producer.node.inputs[1]
            if id(producer.node) in out.quant:
                p_dtype = ir.constant_array(producer.weight).dtype  # type: ignore[union-attr]
                out.quant[id(producer.node)] = quantize_blockwise(producer.w, block_grid(opts, p_dtype), importance=out.importance.get(id(producer.node)))
    for t in ts:
        out.quant[id(t.node)] = quantize_blockwise(t.w, block_grid(opts, dtype), importance=importance)
        out.importance[id(t.node)] = importance
