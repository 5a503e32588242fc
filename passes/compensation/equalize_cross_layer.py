"""``equalize-cross-layer``: rescale channels between consecutive layers so per-tensor weight grids fit them all.

Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization
and Bias Correction", §4.1). For two linear layers with only positively homogeneous ops between
them (``f(x / s) = f(x) / s`` for ``s > 0``: nothing, Relu, LeakyRelu, PRelu, Clip(0, ∞), max and
average pooling, Flatten after a global pool)::

    y = W2 · f(W1 x + b1) + b2  =  (W2 S) · f(S⁻¹ W1 x + S⁻¹ b1) + b2        S = diag(s), s > 0

so output channel ``i`` of the first layer is divided by ``s_i`` and input channel ``i`` of the
second multiplied by ``s_i`` without changing the float function. With ``r1_i`` the range
(``max |W|``) of output channel ``i`` of ``W1`` and ``r2_i`` that of input channel ``i`` of ``W2``::

    s_i = (1 / r2_i) · sqrt(r1_i · r2_i)

makes both ranges ``sqrt(r1_i · r2_i)``: channels with tiny weights (a depthwise filter whose BN
scale was small) no longer waste a per-tensor grid sized for the largest one. Pairs: Conv→Conv
(depthwise→pointwise and Conv→depthwise included: a depthwise layer's input channel ``i`` is its
filter ``i``), Conv→Gemm through GlobalAveragePool/Flatten, Gemm/MatMul→Gemm/MatMul. A layer in
two pairs (conv → depthwise → pointwise) is equalized with both neighbours in turn, repeated until
no ``s`` moves by more than ``tolerance`` (at most ``iterations`` sweeps).

High-bias absorption (§4.1.1): equalization scales biases too, and a large positive pre-activation
``h_i`` ahead of a ReLU widens the next layer's input range for nothing. When ``h_i ≥ c_i`` almost
always, ``relu(h_i) = relu(h_i - c_i) + c_i``, and the constant ``c_i`` moves into the next bias::

    b1' = b1 - c        b2' = b2 + W2 · c      with  c = max(0, β - 3γ)

``β, γ`` are the channel's mean and standard deviation: the folded BatchNormalization's
(``ctx.batchnorm_stats``, from ``record-batchnorm-stats``). Given calibration data, ``c`` is also
capped by the same rule on the measured mean/std and by the observed minimum (and that alone is
used without BN statistics), so the identity holds on every calibration sample even where running
statistics do not describe the data. Only for a ReLU
between the layers and a pointwise second layer (1x1 Conv without padding, Gemm, MatMul): through
a padded kxk convolution ``W2 · c`` is wrong at the borders. Absorption is exact on data where
``h ≥ c``; equalization alone is exact in float (tests: max |Δy| ≤ 1e-4 · max |y|).

ReLU6 (Clip with an upper bound) breaks homogeneity (``min(x/s, 6) ≠ min(x, 6)/s``): such pairs are
skipped with that reason, as are layers whose output has other readers. Runs on the float model
after ``cleanup`` (which folds BatchNormalization) and before ``calibrate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from onnxq import ir
from onnxq.config import PassConfig
from onnxq.context import ChannelGaussian
from onnxq.errors import ConfigError
from onnxq.ir import Graph, Model, Node
from onnxq.pass_base import Pass, PassContext, PassResult, register_pass

from ._layers import LINEAR_OPS, Linear, linear_of
from ._stream import main_graph_nodes, stream_tensors

__all__ = ["EqualizeCrossLayer", "EqualizeCrossLayerConfig", "equalization_scales", "find_pairs", "Pair"]

#: Ops that commute with a positive per-channel scale and keep channels where they are.
_HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Identity")
#: Activations that do not (a pair through them is reported, not equalized).
_NOT_HOMOGENEOUS = ("HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu", "Softplus", "Gelu", "Mish")


@dataclass(frozen=True)
class EqualizeCrossLayerConfig(PassConfig):
    """Options: sweep cap and tolerance, high-bias absorption, and its sample cap (when no BN statistics)."""

    iterations: int = 100
    tolerance: float = 1e-3
    absorb_high_bias: bool = True
    sigmas: float = 3.0
    samples: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations < 1 or self.tolerance <= 0 or self.sigmas < 0 or self.samples < 1:
            raise ConfigError("equalize-cross-layer: iterations >= 1, tolerance > 0, sigmas >= 0 and samples >= 1 required")


@dataclass
class Pair:
    """Two linear layers with only homogeneous ops (``between``) from the first's output to the second's input."""

    first: Linear
    between: list[Node]
    second: Linear

    @property
    def through_relu(self) -> bool:
        """Exactly one ReLU-like op between (what high-bias absorption needs)."""
        return len(self.between) == 1 and (self.between[0].op == "Relu" or _clip_bounds(self.between[0]) == (0.0, None))


def equalization_scales(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """``s_i = (1 / r2_i) · sqrt(r1_i · r2_i)`` (1 where either range is 0: nothing to balance)."""
    ok = (r1 > 0) & (r2 > 0)
    s = np.ones_like(r1, dtype=np.float64)
    s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
    return s


def _clip_bounds(node: Node) -> tuple[float | None, float | None] | None:
    """``(min, max)`` of a Clip with constant bounds (None for an absent bound); None when computed."""
    if node.op != "Clip":
        return None
    if len(node.inputs) == 1 and ("min" in node.attrs or "max" in node.attrs):  # opset < 11 attributes
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
        return (float(lo) if lo is not None else None, float(hi) if hi is not None else None)
    bounds: list[float | None] = []
    for i in (1, 2):
        t = node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None
        value = ir.constant_array(t) if t is not None else None
        if t is not None and value is None:
            return None
        bounds.append(float(value.reshape(-1)[0]) if value is not None else None)
    lo, hi = bounds
    return (lo if lo is None or np.isfinite(lo) else None, hi if hi is None or np.isfinite(hi) else None)


def _through(node: Node) -> str | None:
    """Why ``node`` breaks the chain between two layers (None: it commutes with positive scales)."""
    if node.op in _HOMOGENEOUS:
        return None
    if node.op == "Clip":
        bounds = _clip_bounds(node)
        if bounds is None:
            return "Clip with bounds computed at run time (run cleanup first)"
        lo, hi = bounds
        if hi is not None:
            return f"Clip with upper bound {hi:g} (ReLU6-like) is not positively homogeneous: min(x/s, {hi:g}) != min(x, {hi:g})/s"
        if lo not in (None, 0.0):
            return f"Clip with lower bound {lo:g} is not positively homogeneous"
        return None
    if node.op == "Flatten":
        src = ir.producer(node.inputs[0])
        if int(node.attrs.get("axis", 1)) == 1 and src is not None and src.op in ("GlobalAveragePool", "GlobalMaxPool"):
            return None
        return "Flatten that is not after a global pool (channels would spread over features)"
    return f"{node.op} is not positively homogeneous" if node.op in _NOT_HOMOGENEOUS else ""


def _pair_ending_at(graph: Graph, node: Node, members: set[int]) -> Pair | str | None:
    """The pair whose second layer is ``node``: None when no linear layer feeds it through channel-wise
    ops; a reason when one does but the pair cannot be equalized (a ReLU6 or HardSwish between, a
    tensor with other readers)."""
    second = linear_of(graph, node)
    if isinstance(second, str):
        return None
    between: list[Node] = []
    problem = ""
    reader, t = node, node.inputs[0]
    while True:
        producer = ir.producer(t)
        if producer is None or id(producer) not in members:
            return None
        if not problem and ir.only_consumer(graph, t) is not reader:
            problem = f"'{t.name}' has other readers"
        producer = _matmul_under_bias(graph, producer) or producer
        if producer.op in LINEAR_OPS:
            break
        why = _through(producer)
        if why == "":
            return None  # not a channel-wise op: no pair here
        problem = problem or (why or "")
        between.insert(0, producer)
        reader, t = producer, producer.inputs[0]
    if problem:
        return f"{problem} (between {producer.name} and {node.name})"
    first = linear_of(graph, producer)
    if isinstance(first, str):
        return f"{producer.name}: {first}"
    if first.out_channels != second.in_channels:
        return f"{producer.name} has {first.out_channels} output channels, {node.name} reads {second.in_channels}"
    return Pair(first, between, second)


def _matmul_under_bias(graph: Graph, node: Node) -> Node | None:
    """The MatMul whose bias ``node`` adds (``MatMul → Add(constant)``, as ``nn.Linear`` exports), if it is one."""
    if node.op != "Add":
        return None
    for t in node.inputs:
        mm = ir.producer(t)
        if mm is not None and mm.op == "MatMul":
            layer = linear_of(graph, mm)
            return mm if isinstance(layer, Linear) and layer.bias_add is node else None
    return None


def find_pairs(model: Model) -> tuple[list[Pair], dict[str, tuple[str, str]]]:
    """Every equalizable pair of the model (one Linear object per layer, shared by its pairs), and
    ``{node: (op, reason)}`` for second layers whose pair is refused."""
    pairs: list[Pair] = []
    refused: dict[str, tuple[str, str]] = {}
    layers: dict[int, Linear] = {}
    for graph in ir.iter_graphs(model.graph):
        members = {id(n) for n in graph.nodes}
        for node in list(graph.nodes):
            if node.op not in LINEAR_OPS:
                continue
            found = _pair_ending_at(graph, node, members)
            if isinstance(found, str):
                refused[node.name] = (node.op, found)
            elif found is not None:
                # one working copy per layer: a layer in two pairs sees both rescalings
                first = layers.setdefault(id(found.first.node), found.first)
                second = layers.setdefault(id(found.second.node), found.second)
                pairs.append(Pair(first, found.between, second))
    return pairs, refused


@register_pass("equalize-cross-layer")
class EqualizeCrossLayer(Pass[EqualizeCrossLayerConfig]):
    """Cross-layer equalization (+ high-bias absorption) of Conv/Gemm/MatMul pairs; exact in float, run before calibrate."""

    changes_structure = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        pairs, refused = find_pairs(model)
        for name, (op, reason) in refused.items():
            ctx.skip(name, op, f"not equalized: {reason}", kept="unchanged")
        if not pairs:
            return PassResult(model, False, {"pairs": 0, "sweeps": 0, "absorbed_channels": 0, "refused": len(refused)})
        totals: dict[str, np.ndarray] = {}
        sweeps = self._equalize(pairs, totals)
        changed = any(np.any(np.abs(np.log(s)) > 1e-6) for s in totals.values())
        stats_in = ctx.batchnorm_stats
        if stats_in is not None:
            ctx.batchnorm_stats = {**stats_in, **_rescaled(stats_in, totals)}
        namer = ir.names(model)
        layers = {id(p.first.node): p.first for p in pairs} | {id(p.second.node): p.second for p in pairs}
        if changed:
            for layer in layers.values():
                layer.commit(namer, "cle")
        absorbed = self._absorb(model, pairs, ctx, namer) if self.config.absorb_high_bias else 0
        stats: dict[str, float] = {"pairs": len(pairs), "sweeps": sweeps, "absorbed_channels": absorbed, "refused": len(refused)}
        if totals:
            stats["max_scale"] = float(max(np.max(np.maximum(s, 1 / s)) for s in totals.values()))
        return PassResult(model, changed or absorbed > 0, stats)

    def _equalize(self, pairs: list[Pair], totals: dict[str, np.ndarray]) -> int:
        """Sweep the pairs until no scale moves by more than the tolerance; returns the sweeps made."""
        for sweep in range(1, self.config.iterations + 1):
            moved = 0.0
            for p in pairs:
                s = equalization_scales(p.first.out_ranges(), p.second.in_ranges())
                p.first.scale_outputs(s)
                p.second.scale_inputs(s)
                totals[p.first.name] = totals.get(p.first.name, np.ones_like(s)) * s
                moved = max(moved, float(np.max(np.abs(s - 1.0))))
            if moved < self.config.tolerance:
                return sweep
        return self.config.iterations

    def _absorb(self, model: Model, pairs: list[Pair], ctx: PassContext, namer: ir.NameGenerator) -> int:
        """High-bias absorption over the pairs it applies to (see the module docstring); returns channels moved."""
        candidates = [p for p in pairs if p.through_relu and p.second.is_pointwise and not (p.first.can_hold_bias() or p.second.can_hold_bias())]
        for p in pairs:
            if p not in candidates and p.through_relu:
                why = "high bias not absorbed: the layer after the ReLU is not pointwise, or cannot hold a bias"
                ctx.skip(p.second.name, p.second.op, why, kept="unchanged")
        offsets = self._offsets(model, candidates, ctx)
        moved = 0
        for p in candidates:
            c = offsets.get(p.first.name)
            if c is None or not np.any(c > 0):
                continue
            p.first.bias = (p.first.bias if p.first.bias is not None else np.zeros(p.first.out_channels)) - c
            base = p.second.bias if p.second.bias is not None else np.zeros(p.second.out_channels)
            p.second.bias = base + p.second.input_sums(c)
            p.first.commit(namer, "hba", weight=False)
            p.second.commit(namer, "hba", weight=False)
            if ctx.batchnorm_stats is not None and p.first.name in ctx.batchnorm_stats:
                g = ctx.batchnorm_stats[p.first.name]
                ctx.batchnorm_stats[p.first.name] = ChannelGaussian(g.mean - c, g.std)
            moved += int(np.count_nonzero(c > 0))
        return moved

    def _offsets(self, model: Model, pairs: list[Pair], ctx: PassContext) -> dict[str, np.ndarray]:
        """``c`` per first layer: ``max(0, β - kγ)`` from BN statistics, capped by ``min h`` over the
        calibration data when there is some (running statistics may not describe this data)."""
        bn = ctx.batchnorm_stats or {}
        out: dict[str, np.ndarray] = {}
        for p in pairs:
            g = bn.get(p.first.name)
            if g is not None and g.mean.size == p.first.out_channels:
                out[p.first.name] = np.maximum(0.0, g.mean - self.config.sigmas * g.std)
        if ctx.calibration_data is not None:
            main = main_graph_nodes(model)
            layers = [p.first for p in pairs if id(p.first.node) in main]
            for name, low in _observed_offsets(model, layers, ctx.calibration_data, self.config.samples, self.config.sigmas).items():
                out[name] = np.minimum(out[name], low) if name in out else low
        missing = [p for p in pairs if p.first.name not in out]
        if missing:
            ctx.note(f"equalize-cross-layer: high bias of {len(missing)} layer(s) not absorbed: no BatchNormalization statistics and no calibration data")
        return out


def _rescaled(stats: Mapping[str, ChannelGaussian], totals: Mapping[str, np.ndarray]) -> dict[str, ChannelGaussian]:
    """BN statistics of rescaled layers: output channel ``i`` divided by ``s_i`` divides its mean and std."""
    return {name: ChannelGaussian(stats[name].mean / s, stats[name].std / s) for name, s in totals.items() if name in stats and stats[name].mean.size == s.size}


def _observed_offsets(model: Model, layers: list[Linear], data: Iterable[Mapping[str, np.ndarray]], samples: int, sigmas: float) -> dict[str, np.ndarray]:
    """``max(0, min(μ - kσ, min h))`` per output channel of each layer over the calibration samples.

    The 3σ rule as with BN statistics, on the measured mean/std, and never above the observed
    minimum: a squeeze-excite layer sees one value per sample, whose minimum over a few samples
    alone would be an optimistic bound.
    """
    if not layers:
        return {}
    names = {layer.node.outputs[0].name: layer for layer in layers}
    acc: dict[str, list[np.ndarray]] = {}
    for values in stream_tensors(model, list(names), data, max_samples=samples, where="high-bias absorption"):
        for tensor, layer in names.items():
            v = values[tensor]
            axis = 1 if layer.op == "Conv" else v.ndim - 1
            rows = np.moveaxis(v, axis, 0).reshape(v.shape[axis], -1).astype(np.float64)
            s = [rows.sum(axis=1), (rows * rows).sum(axis=1), rows.min(axis=1), np.full(rows.shape[0], rows.shape[1], np.float64)]
            old = acc.get(layer.name)
            acc[layer.name] = s if old is None else [old[0] + s[0], old[1] + s[1], np.minimum(old[2], s[2]), old[3] + s[3]]
    out = {}
    for name, (total, squares, low, count) in acc.items():
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
        out[name] = np.maximum(0.0, np.minimum(mean - sigmas * std, low))
    return out
