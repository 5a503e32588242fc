"""``smooth-activations``: move activation outliers into weights before int8 MatMuls (SmoothQuant).

Transformer activations have a few channels with values 10-100x larger than the rest; one
per-tensor activation scale then wastes most of its levels on them. For ``Y = X · W`` and any
positive per-input-channel vector ``s``,  ``Y = (X / s) · (s ⊙ W)`` (rows of ``W`` scaled), so the
outliers can move into the weights, which are quantized per output channel and tolerate it.
With ``a_j = max |X_j|`` (calibration data) and ``w_j = max |W_j|`` over every consumer:

    s_j = a_j^α / w_j^(1-α)            (α = 0.5 by default, clipped to [1e-2, 1e2] for stability)

The division by ``s`` is folded into the producer, exactly: here the producer is a
LayerNormalization, whose ``scale`` and ``bias`` are divided by ``s``. Readers of the normalized
tensor that are not smoothed MatMuls (the residual Add in BERT-style blocks) get ``Mul(·, s)`` to
see the original values. Needs calibration samples; without them the pass does nothing and says so.

``alpha_grid`` (e.g. ``[0.3, 0.4, 0.5, 0.6, 0.7, 0.8]``) searches ``α`` per LayerNorm group instead:
the one whose smoothed int8 MatMuls reproduce the float products best on rows of the LayerNorm's
output sampled from the calibration data (:mod:`._smooth_search`); ``alpha`` is then unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxq import ir
from onnxq.calibration.collector import collect_ranges
from onnxq.errors import ConfigError
from onnxq.ir import Graph, Model, Node
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass

from ._smooth_search import SearchBudget, best_alpha, sample_rows

__all__ = ["SmoothActivations", "SmoothActivationsConfig", "smoothing_scales"]


@dataclass(frozen=True)
class SmoothActivationsConfig(PassConfig):
    """Options: migration strength ``alpha`` in [0, 1] (or ``alpha_grid`` to search per group: candidate
    alphas, ``search_rows`` rows of each LayerNorm output to judge them on, and ``search_seconds``
    of wall clock for all the searches, after which the remaining groups take ``alpha``) and the
    sample cap."""

    alpha: float = 0.5
    samples: int = 32
    alpha_grid: tuple[float, ...] = ()
    search_rows: int = 1024
    search_seconds: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not all(0.0 <= a <= 1.0 for a in (self.alpha, *self.alpha_grid)):
            raise ConfigError(f"smooth-activations: alpha and alpha_grid values must be in [0, 1], got {self.alpha} and {list(self.alpha_grid)}")
        if self.search_rows < 1:
            raise ConfigError(f"smooth-activations: search_rows must be >= 1, got {self.search_rows}")
        if self.search_seconds is not None and not self.search_seconds > 0:
            raise ConfigError(f"smooth-activations: search_seconds must be > 0, got {self.search_seconds}")


def smoothing_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """``s_j = a_j^α / w_j^(1-α)``, guarded against zeros and clipped to [1e-2, 1e2]."""
    a = np.maximum(act_absmax.astype(np.float64), 1e-5)
    w = np.maximum(weight_absmax.astype(np.float64), 1e-5)
    return np.clip(a**alpha / w ** (1 - alpha), 1e-2, 1e2)


def _candidates(graph: Graph) -> list[tuple[Node, list[Node], list[Node]]]:
    """(LayerNormalization, MatMuls with constant 2-D weights reading it, other readers)."""
    found = []
    for ln in graph.nodes:
        if ln.op != "LayerNormalization" or (ln.domain or "") or int(ln.attrs.get("axis", -1)) != -1:
            continue
        gamma = ir.constant_array(ln.inputs[1]) if len(ln.inputs) > 1 else None
        if gamma is None or gamma.ndim != 1:
            continue
        if len(ln.inputs) > 2 and ln.inputs[2].name and ir.constant_array(ln.inputs[2]) is None:
            continue
        out = ln.outputs[0]
        if ir.is_graph_output(graph, out):
            continue
        mms, others = [], []
        for reader in out.outputs:
            w = ir.constant_array(reader.inputs[1]) if reader.op == "MatMul" and reader.inputs[0] is out else None
            if w is not None and w.ndim == 2 and w.shape[0] == gamma.size:
                mms.append(reader)
            else:
                others.append(reader)
        if mms:
            found.append((ln, mms, others))
    return found


@register_pass("smooth-activations")
class SmoothActivations(Pass[SmoothActivationsConfig]):
    """Fold per-channel activation outlier scales from LayerNorm outputs into the MatMul weights."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        data = ctx.calibration_data
        if data is None:
            ctx.note("smooth-activations skipped: no calibration data")
            return PassResult(model, False, {"skipped": "no calibration data"})
        targets = [(g, c) for g in ir.iter_graphs(model.graph) for c in _candidates(g)]
        if not targets:
            return PassResult(model, False, {"smoothed": 0})
        names = [ln.outputs[0].name for _, (ln, _, _) in targets]
        ranges, _ = collect_ranges(model, data, tensors=names, method="minmax", per_channel_axis=-1, max_samples=self.config.samples)
        rows = sample_rows(model, names, data, self.config.samples, self.config.search_rows) if self.config.alpha_grid else {}
        namer = ir.names(model)
        budget = SearchBudget(self.config.search_seconds)
        smoothed = 0
        alphas: dict[str, float] = {}
        for graph, (ln, mms, others) in targets:
            r = ranges.get(ln.outputs[0].name)
            if r is None or r.channel_min is None:
                continue
            lo, hi = np.asarray(r.channel_min, np.float64), np.asarray(r.channel_max, np.float64)
            act = np.maximum(np.abs(lo), np.abs(hi))
            weights = [np.asarray(ir.const_value(mm.inputs[1]), np.float64) for mm in mms]
            w_absmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
            alpha = self.config.alpha
            if ln.outputs[0].name in rows:
                scales_for = lambda a, act=act, w_absmax=w_absmax: smoothing_scales(act, w_absmax, a)  # noqa: E731
                alpha, _ = best_alpha(rows[ln.outputs[0].name], lo, hi, weights, self.config.alpha_grid, scales_for, budget=budget, fallback=self.config.alpha)
                alphas[ln.name] = alpha
            s = smoothing_scales(act, w_absmax, alpha)
            self._apply(graph, ln, mms, others, weights, s, namer)
            smoothed += len(mms)
        stats: dict[str, object] = {"smoothed": smoothed, "layernorms": len(targets)}
        if alphas:
            stats["alphas"] = alphas
        if self.config.alpha_grid:
            stats.update(budget.as_stats())
        return PassResult(model, smoothed > 0, stats)

    @staticmethod
    def _apply(graph: Graph, ln: Node, mms: list[Node], others: list[Node], weights: list[np.ndarray], s: np.ndarray, namer: ir.NameGenerator) -> None:
        gamma = np.asarray(ir.const_value(ln.inputs[1]), np.float64)
        ln.inputs[1] = ir.make_constant(namer.new(f"{ln.name}/scale_smoothed"), (gamma / s).astype(np.float32))
        if len(ln.inputs) > 2 and ln.inputs[2].name:
            beta = np.asarray(ir.const_value(ln.inputs[2]), np.float64)
            ln.inputs[2] = ir.make_constant(namer.new(f"{ln.name}/bias_smoothed"), (beta / s).astype(np.float32))
        for mm, w in zip(mms, weights):
            mm.inputs[1] = ir.make_constant(namer.new(f"{mm.name}/W_smoothed"), (w * s[:, None]).astype(np.float32))
        if others:
            out = ln.outputs[0]
            restored = ir.make_variable(namer.new(f"{out.name}/unsmoothed"), dtype=out.dtype, shape=out.shape)
            mul = ir.make_node(
                "Mul", [out, ir.make_constant(namer.new(f"{ln.name}/smooth_scale"), s.astype(np.float32))], [restored], name=namer.new(f"{ln.name}/unsmooth")
            )
            graph.nodes.append(mul)
            for reader in others:
                for i, t in enumerate(reader.inputs):
                    if t is out:
                        reader.inputs[i] = restored
            for g in [graph]:
                for i, o in enumerate(g.outputs):
                    if o is out:
                        g.outputs[i] = restored
