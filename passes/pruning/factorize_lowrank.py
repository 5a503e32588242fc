"""``factorize-lowrank``: replace a dense weight by the product of two thin ones (truncated SVD).

For a weight ``W`` seen as ``K × N`` (input features × outputs) with SVD ``W = U Σ Vᵀ``, keeping the
``r`` largest singular values gives the best rank-``r`` approximation (Eckart–Young)
``W ≈ A · B`` with ``A = U_r Σ_r^½`` (K × r) and ``B = Σ_r^½ V_rᵀ`` (r × N). One layer becomes two:

- MatMul ``x·W`` → ``MatMul(MatMul(x, A), B)``;
- Gemm ``alpha·x·W + beta·C`` → ``Gemm(Gemm(x, A, transA), B, C, alpha, beta)``;
- 1×1 Conv ``W[N, K, 1, 1]`` → Conv ``Aᵀ[r, K, 1, 1]`` (strides/pads/dilations kept) then Conv
  ``Bᵀ[N, r, 1, 1]`` with the bias.

The bias stays on the second op. The multiply-adds per output row drop from ``K·N`` to ``r·(K+N)``,
so a layer is factorized only when ``r·(K+N) < K·N``. The rank comes from ``rank`` (capped at
``min(K, N)``), ``energy`` (smallest ``r`` with ``Σ_{i<r} σᵢ² ≥ energy · Σ σᵢ²``) or ``flop_ratio``
(largest ``r`` with ``r·(K+N) ≤ flop_ratio · K·N``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from onnxq import ir
from onnxq.errors import ConfigError
from onnxq.inspect import node_flops
from onnxq.ir import Model, Node
from onnxq.pass_base import PassContext, PassResult, register_pass

from ._weights import (
    LayerPass,
    LayerSelectionConfig,
    WeightLayer,
    jsonable,
    record_skips,
    require_exactly_one,
    restore_shapes,
    shape_snapshot,
)

__all__ = ["FactorizeLowRankConfig", "FactorizeLowRank", "choose_rank"]


@dataclass(frozen=True)
class FactorizeLowRankConfig(LayerSelectionConfig):
    """Options of ``factorize-lowrank`` (give exactly one of rank, energy, flop_ratio)."""

    rank: int | None = None
    energy: float | None = None
    flop_ratio: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require_exactly_one("factorize-lowrank", self, ("rank", "energy", "flop_ratio"))
        if self.rank is not None and self.rank < 1:
            raise ConfigError(f"factorize-lowrank: rank must be >= 1, got {self.rank}")
        if self.energy is not None and not (0 < self.energy <= 1):
            raise ConfigError(f"factorize-lowrank: energy must be in (0, 1], got {self.energy}")
        if self.flop_ratio is not None and not (0 < self.flop_ratio < 1):
            raise ConfigError(f"factorize-lowrank: flop_ratio must be in (0, 1), got {self.flop_ratio}")


def choose_rank(sigma: np.ndarray, k: int, n: int, cfg: FactorizeLowRankConfig) -> int:
    """The rank ``cfg`` asks for, given singular values ``sigma`` of a ``k × n`` weight (at least 1)."""
    full = min(k, n)
    if cfg.rank is not None:
        return min(cfg.rank, full)
    if cfg.energy is not None:
        energy = np.cumsum(sigma.astype(np.float64) ** 2)
        if energy[-1] <= 0:
            return 1
        return int(min(np.searchsorted(energy / energy[-1], cfg.energy - 1e-12) + 1, full))
    return max(1, min(full, int(math.floor(cfg.flop_ratio * k * n / (k + n)))))  # type: ignore[operator]


def _as_kn(layer: WeightLayer, w: np.ndarray) -> np.ndarray | str:
    """The weight as K × N (inputs × outputs), or why the layer is not factorized."""
    node = layer.node
    if layer.op == "MatMul":
        return w if w.ndim == 2 else "MatMul weight is not 2-D"
    if layer.op == "Gemm":
        return w.T if int(ir.attr(node, "transB", 0)) else w
    if layer.op == "Conv":
        if w.ndim != 4 or w.shape[2:] != (1, 1) or int(ir.attr(node, "group", 1)) != 1:
            return "only 1x1 Conv with group=1 is factorized"
        return w[:, :, 0, 0].T
    return f"{layer.op} is not factorized"


def _rewrite(graph: ir.Graph, layer: WeightLayer, a: np.ndarray, b: np.ndarray, namer: ir.NameGenerator) -> None:
    """Replace ``layer`` by two ops with weights ``a`` (K × r) and ``b`` (r × N)."""
    node: Node = layer.node
    base = node.name or layer.tensor.name
    mid = ir.make_variable(namer.new(f"{base}/lowrank"), dtype=node.outputs[0].dtype)
    dtype = ir.const_value(layer.tensor).dtype
    if layer.op == "Conv":
        first_w = a.T.reshape(a.shape[1], a.shape[0], 1, 1)
        second_w = b.T.reshape(b.shape[1], b.shape[0], 1, 1)
        first_attrs = {k: v for k, v in node.attrs.items()}
        node.attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
    elif layer.op == "Gemm":
        first_w, second_w = a, b
        first_attrs = {"transA": int(ir.attr(node, "transA", 0))}
        node.attrs = {"alpha": float(ir.attr(node, "alpha", 1.0)), "beta": float(ir.attr(node, "beta", 1.0)), "transA": 0, "transB": 0}
    else:
        first_w, second_w = a, b
        first_attrs = {}
    first_op = "Gemm" if layer.op == "Gemm" else layer.op
    w1 = ir.make_constant(namer.new(f"{layer.tensor.name}/lowrank_a"), first_w.astype(dtype))
    first = ir.make_node(first_op, [node.inputs[0], w1], [mid], name=namer.new(f"{base}/lowrank_a"), attrs=first_attrs)
    node.inputs[0] = mid
    node.inputs[1] = ir.make_constant(namer.new(f"{layer.tensor.name}/lowrank_b"), second_w.astype(dtype))
    graph.nodes.append(first)  # run() restores topological order once at the end


def _flops(node: Node, k: int, n: int, r: int | None = None) -> tuple[int | None, int | None]:
    """(FLOPs before, FLOPs after) of the layer when shapes are known."""
    before = node_flops(node)
    if before is None:
        return None, None
    rows = before // (2 * k * n) if k * n else 0
    return before, None if r is None else 2 * rows * r * (k + n)


@register_pass("factorize-lowrank")
class FactorizeLowRank(LayerPass[FactorizeLowRankConfig]):
    """Split Gemm / MatMul / 1x1 Conv weights into two thin factors by truncated SVD."""

    layer_ops = ("Conv", "Gemm", "MatMul")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        cfg = self.config
        before = shape_snapshot(model)
        ir.infer_shapes(model)  # for the FLOPs report
        layers, skipped = self.selected_layers(model)
        where = ir.node_graph_index(model.graph)
        namer = ir.names(model)
        report: dict[str, dict] = {}
        for layer in layers:
            reason = self._factorize(layer, where[id(layer.node)], cfg, namer, report)
            if reason:
                skipped[layer.name] = reason
        if report:
            ir.toposort(model.graph)
        else:
            restore_shapes(before)
        stats = {"factorized": len(report), "layers": report, "skipped": record_skips(model, ctx, skipped)}
        return PassResult(model, bool(report), jsonable(stats))

    @staticmethod
    def _factorize(layer: WeightLayer, graph: ir.Graph, cfg: FactorizeLowRankConfig, namer: ir.NameGenerator, report: dict) -> str | None:
        if layer.quantized:
            return "weight is quantized"
        if layer.op == "Gemm" and len(layer.node.inputs) > 1 and ir.is_constant(layer.node.inputs[0]):
            return "Gemm input A is a constant"
        kn = _as_kn(layer, np.asarray(ir.const_value(layer.tensor)))
        if isinstance(kn, str):
            return kn
        k, n = kn.shape
        u, sigma, vt = np.linalg.svd(kn.astype(np.float64), full_matrices=False)
        r = choose_rank(sigma, k, n, cfg)
        if r * (k + n) >= k * n:
            return f"rank {r} does not reduce FLOPs for a {k}x{n} weight (needs r < {k * n / (k + n):.1f})"
        root = np.sqrt(sigma[:r])
        a, b = u[:, :r] * root, root[:, None] * vt[:r]
        flops_before, flops_after = _flops(layer.node, k, n, r)
        energy = float((sigma[:r] ** 2).sum() / max((sigma**2).sum(), 1e-300))
        error = float(np.linalg.norm(kn - a @ b) / max(np.linalg.norm(kn), 1e-300))
        _rewrite(graph, layer, a, b, namer)
        report[layer.name] = {
            "op": layer.op,
            "shape": [k, n],
            "rank": r,
            "params_before": k * n,
            "params_after": r * (k + n),
            "flops_before": flops_before,
            "flops_after": flops_after,
            "energy_kept": energy,
            "relative_error": error,
        }
        return None
