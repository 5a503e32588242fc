"""``cluster-weights``: weight sharing by 1-D k-means; the file shrinks, the arithmetic stays float.

Each selected layer's weight ``W`` (``n`` entries) is clustered into at most ``k = 2**bits`` values
(a *codebook*) by deterministic k-means: centroids start at the ``(i + ½) / k`` quantiles (or evenly
spaced over ``[min, max]`` with ``init="linear"``), then Lloyd iterations alternate assignment — in 1-D
the nearest of sorted centroids is found by ``searchsorted`` on the midpoints — and update
(``bincount`` means; an empty cluster keeps its centroid) until nothing moves. A weight with at most
``k`` distinct values is stored losslessly.

The weight becomes ``Gather(codebook, Cast(indices, int32))``: ``indices`` is a uint8 initializer with
``W``'s shape (1 byte per weight instead of 4; ONNX Gather only takes int32/int64 indices, hence the
Cast, which onnxruntime folds when it loads the model) and ``codebook`` a float vector of ``k``
entries, so the Gather output is the full float weight.

When ``bits == 8`` and the centroids are (nearly) uniformly spaced — every gap between consecutive
centroids within ``uniform_tolerance`` × the mean gap — k-means found what uniform quantization
would, and the layer is written as the standard ``DequantizeLinear(q: uint8, scale, zero_point)``
instead, ``q = clip(round(w / scale) + zp, 0, 255)`` over ``[min(w, 0), max(w, 0)]`` (zero exactly
representable). Note: onnxruntime (>= 1.2x, optimization level EXTENDED and above) fuses a uint8
``DequantizeLinear → MatMul`` into ``MatMulNBits`` whose default ``accuracy_level`` 4 quantizes the
*activations* to int8 (relative error around 1e-2); the session option
``session.qdq_matmulnbits_accuracy_level = "0"`` keeps float arithmetic. Layers below ``min_params`` entries are skipped (the codebook would cost more than it
saves). The report gives bytes before/after and the reconstruction error per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from onnxq import ir
from onnxq.errors import ConfigError
from onnxq.ir import Model
from onnxq.pass_base import PassContext, PassResult, register_pass
from onnxq.passes.pruning._weights import LayerPass, LayerSelectionConfig, WeightLayer, jsonable, record_skips

__all__ = ["ClusterWeightsConfig", "ClusterWeights", "kmeans_1d", "is_uniform"]


@dataclass(frozen=True)
class ClusterWeightsConfig(LayerSelectionConfig):
    """Options of ``cluster-weights``."""

    bits: int = 4
    min_params: int = 1024
    iterations: int = 30
    init: Literal["quantile", "linear"] = "quantile"
    uniform_tolerance: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (2 <= self.bits <= 8):
            raise ConfigError(f"cluster-weights: bits must be in [2, 8], got {self.bits}")
        if self.min_params < 0 or self.iterations < 1:
            raise ConfigError(f"cluster-weights: min_params must be >= 0 and iterations >= 1, got {self.min_params}, {self.iterations}")
        if not (0 <= self.uniform_tolerance < 1):
            raise ConfigError(f"cluster-weights: uniform_tolerance must be in [0, 1), got {self.uniform_tolerance}")


def kmeans_1d(values: np.ndarray, k: int, *, iterations: int = 30, init: str = "quantile") -> tuple[np.ndarray, np.ndarray]:
    """Deterministic 1-D k-means: ``(codebook sorted ascending, index of each value)``.

    The codebook has at most ``k`` entries (fewer when ``values`` has fewer distinct values).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    distinct = np.unique(x)
    if distinct.size <= k:
        return distinct, np.searchsorted(distinct, x)
    if init == "quantile":
        centroids = np.unique(np.quantile(x, (np.arange(k) + 0.5) / k))
    else:
        centroids = np.linspace(x.min(), x.max(), k)
    for _ in range(iterations):
        index = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, x)
        sums = np.bincount(index, weights=x, minlength=centroids.size)
        counts = np.bincount(index, minlength=centroids.size)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.array_equal(updated, centroids):
            break
        centroids = updated  # 1-D Lloyd keeps the order: each centroid is the mean of an interval
    index = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, x)
    return centroids, index


def is_uniform(codebook: np.ndarray, tolerance: float) -> bool:
    """True when consecutive centroids are evenly spaced within ``tolerance`` × the mean gap."""
    gaps = np.diff(np.asarray(codebook, dtype=np.float64))
    if gaps.size < 1 or gaps.mean() <= 0:
        return False
    return bool(np.max(np.abs(gaps - gaps.mean())) <= tolerance * gaps.mean())


def _uint8_affine(w: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    scale = np.float32((hi - lo) / 255.0 if hi > lo else 1.0)
    zp = np.uint8(np.clip(np.round(-lo / scale), 0, 255))
    q = np.clip(np.round(w.astype(np.float64) / scale) + int(zp), 0, 255).astype(np.uint8)
    return q, scale, zp


@register_pass("cluster-weights")
class ClusterWeights(LayerPass[ClusterWeightsConfig]):
    """Share weights: k-means codebook + uint8 indices expanded by Gather (or DequantizeLinear at 8 bits)."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        cfg = self.config
        layers, skipped = self.selected_layers(model)
        where = ir.node_graph_index(model.graph)
        namer = ir.names(model)
        report: dict[str, dict] = {}
        for layer in layers:
            if layer.quantized:
                skipped[layer.name] = "weight is already quantized"
            elif layer.size < cfg.min_params:
                skipped[layer.name] = f"{layer.size} weights < min_params={cfg.min_params}"
            else:
                report[layer.name] = self._cluster(layer, where[id(layer.node)], cfg, namer)
        if report:
            ir.toposort(model.graph)
        before = sum(r["bytes_before"] for r in report.values())
        after = sum(r["bytes_after"] for r in report.values())
        stats = {
            "bits": cfg.bits,
            "clustered": len(report),
            "bytes_before": before,
            "bytes_after": after,
            "layers": report,
            "skipped": record_skips(model, ctx, skipped),
        }
        return PassResult(model, bool(report), jsonable(stats))

    @staticmethod
    def _cluster(layer: WeightLayer, graph: ir.Graph, cfg: ClusterWeightsConfig, namer: ir.NameGenerator) -> dict:
        w = np.asarray(ir.const_value(layer.tensor))
        codebook, index = kmeans_1d(w, 2**cfg.bits, iterations=cfg.iterations, init=cfg.init)
        name = layer.tensor.name
        out = ir.make_variable(namer.new(f"{name}/decoded"), dtype=w.dtype, shape=list(w.shape))
        if cfg.bits == 8 and w.dtype == np.float32 and codebook.size == 256 and is_uniform(codebook, cfg.uniform_tolerance):
            q, scale, zp = _uint8_affine(w)
            recon = (q.astype(np.float64) - int(zp)) * float(scale)
            consts = [
                ir.make_constant(namer.new(f"{name}/quantized"), q),
                ir.make_constant(namer.new(f"{name}/scale"), np.array(scale, dtype=w.dtype)),
                ir.make_constant(namer.new(f"{name}/zero_point"), np.array(zp, dtype=np.uint8)),
            ]
            nodes = [ir.make_node("DequantizeLinear", consts, [out], name=namer.new(f"{name}/dequantize"))]
            mode, stored = "dequantize", q.nbytes + w.dtype.itemsize + 1
        else:
            recon = codebook[index].reshape(w.shape)
            indices = ir.make_constant(namer.new(f"{name}/indices"), index.astype(np.uint8).reshape(w.shape))
            table = ir.make_constant(namer.new(f"{name}/codebook"), codebook.astype(w.dtype))
            as_int = ir.make_variable(namer.new(f"{name}/indices_int32"), dtype=np.int32, shape=list(w.shape))
            nodes = [
                ir.make_node("Cast", [indices], [as_int], name=namer.new(f"{name}/indices_cast"), attrs={"to": ir.onnx_dtype(np.int32)}),
                ir.make_node("Gather", [table, as_int], [out], name=namer.new(f"{name}/gather"), attrs={"axis": 0}),
            ]
            mode, stored = "gather", index.size + codebook.size * w.dtype.itemsize
        for reader in ir.consumers(layer.tensor):
            for i, t in enumerate(reader.inputs):
                if t is layer.tensor:
                    reader.inputs[i] = out
        graph.nodes.extend(nodes)  # run() restores topological order once at the end
        err = w.astype(np.float64) - recon
        norm = float(np.linalg.norm(w.astype(np.float64)))
        return {
            "op": layer.op,
            "params": int(w.size),
            "mode": mode,
            "clusters": int(codebook.size),
            "bytes_before": int(w.nbytes),
            "bytes_after": int(stored),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "relative_error": float(np.linalg.norm(err) / norm) if norm > 0 else 0.0,
            "max_abs_error": float(np.max(np.abs(err))) if err.size else 0.0,
        }
