"""``adaround``: learn, layer by layer, whether each weight rounds up or down (AdaRound, Nagel et al. 2020).

Round-to-nearest minimizes each weight's own error, not the layer's output error: errors of
neighbouring weights can cancel on the data the layer sees, and choosing each weight's rounding to
make them cancel is a much better quantized layer for free. With the float model as teacher,
for each quantized Conv/Gemm/MatMul (weights per tensor or per channel, on the grid the plan and
``insert-qdq`` use, :mod:`._grid`)::

    minimize over the rounding   E || W x - W̃ x ||²      x: the layer's float inputs

The inputs come from onnxruntime runs of the float model with every layer's input exposed
(:mod:`._stream`), reduced on the fly to ``H = E[x xᵀ]`` (:mod:`._patches`), which makes the loss
exact and the data pass single. The optimization (soft rounding, annealed regularizer, numpy Adam,
bounded steps and seconds per layer) is :mod:`._rounding`; a layer whose learned rounding does not
beat round-to-nearest keeps round-to-nearest.

The result reaches the graph as float weights: ``W' = s · (q - z)``, exactly the grid points of
the learned integers ``q``. ``insert-qdq`` recomputes the scale from ``W'`` — unchanged, since the
extreme weights keep their nearest integers — and ``round(W'/s)`` gives back ``q`` (checked here;
``mismatched`` in the stats counts any integer that would not survive, expected 0).

Learning the rounding changes the mean output error, so by default (``correct_bias``) the layer's
bias then absorbs it: ``b -= (W' - W) · E[x]`` (the bias correction of ``correct-bias``, from the same
statistics; ``correct-bias`` after this pass finds these weights on the grid and leaves them).

Where it sits: after ``annotate-quantization`` and ``tune-latency`` (the plan must be final),
before ``correct-bias`` and ``insert-qdq``. AdaQuant-style scale learning is not done: the scale
stays the one ``insert-qdq`` derives from the weights' range.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from onnxq import ir
from onnxq.config import PassConfig
from onnxq.errors import ConfigError
from onnxq.ir import Model
from onnxq.pass_base import Pass, PassContext, PassResult, register_pass
from onnxq.plan import QuantPlan, WeightQuant
from onnxq.progress import track

from ._grid import on_grid, weight_grid
from ._layers import Linear
from ._patches import InputMoments, patches
from ._planned import bias_problem, plan_new_bias, planned_layers
from ._rounding import RoundingProblem, RoundingResult, learn_rounding
from ._stream import stream_tensors

__all__ = ["AdaRound", "AdaRoundConfig"]


@dataclass(frozen=True)
class AdaRoundConfig(PassConfig):
    """Options of ``adaround``.

    Attributes:
        samples: calibration samples read (one onnxruntime run each).
        positions: input positions (patches, or rows) kept per sample and layer, seeded.
        iterations: optimizer steps per layer.
        seconds_per_layer: time budget per layer: the steps stop there (the stats count the layers
            it cut short in ``budget_cut_layers``, and give the pass's ``seconds``).
        regularization: λ of the rounding regularizer (the reconstruction term starts at 1).
        learning_rate: Adam's step size on the rounding variables.
        correct_bias: fold the learned rounding's mean output error into the bias.
        seed: seeds the position sampling.
    """

    samples: int = 32
    positions: int = 512
    iterations: int = 500
    seconds_per_layer: float = 5.0
    regularization: float = 10.0
    learning_rate: float = 0.01
    correct_bias: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.samples, self.positions, self.iterations) < 1 or self.seconds_per_layer <= 0:
            raise ConfigError("adaround: samples, positions and iterations must be >= 1 and seconds_per_layer > 0")
        if self.regularization < 0 or self.learning_rate <= 0:
            raise ConfigError("adaround: regularization >= 0 and learning_rate > 0 required")


@register_pass("adaround")
class AdaRound(Pass[AdaRoundConfig]):
    """Learn each quantized Conv/Gemm/MatMul weight's rounding on calibration data (after planning, before insert-qdq)."""

    changes_structure = False
    reads = ("plan", "calibration_data")
    writes = ("plan",)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        plan = ctx.plan
        if plan is None or ctx.calibration_data is None:
            ctx.note("adaround skipped: it needs a quantization plan and calibration data")
            return PassResult(model, False, {"layers": 0, "skipped": "no plan or calibration data"})
        layers, refused = planned_layers(model, plan)
        for name, (op, reason) in refused.items():
            ctx.skip(name, op, f"rounding not learned: {reason}", kept="unchanged")
        if not layers:
            return PassResult(model, False, {"layers": 0, "improved": 0})
        start = time.perf_counter()
        moments = _input_moments(model, [layer for layer, _ in layers], ctx.calibration_data, self.config)
        namer = ir.names(model)
        totals = {"layers": len(layers), "improved": 0, "flipped": 0, "mismatched": 0, "bias_corrected": 0, "budget_cut_layers": 0}
        gains: list[float] = []
        for layer, wq in track(layers, "adaround", enabled=ctx.progress):
            q, result = self._layer(layer, wq, moments[layer.name])
            totals["budget_cut_layers"] += int(result.cut_short)
            if not result.improved:
                continue
            gains.append(result.rtn_error / result.error if result.error > 0 else float("inf"))
            totals["improved"] += 1
            totals["flipped"] += result.flipped
            mismatched, fixed_bias = self._write(layer, wq, q, moments[layer.name], namer, plan)
            totals["mismatched"] += mismatched
            totals["bias_corrected"] += int(fixed_bias)
        stats: dict[str, float | int] = {**totals, "seconds": round(time.perf_counter() - start, 2)}
        if gains:
            stats["median_error_ratio"] = float(np.median([1.0 / g for g in gains]))
        return PassResult(model, totals["improved"] > 0, stats)

    def _layer(self, layer: Linear, wq: WeightQuant, m: InputMoments) -> tuple[np.ndarray, RoundingResult]:
        """The chosen integers of ``layer`` in rows layout (round-to-nearest unless ``improved``), and the search's outcome."""
        grid = weight_grid(layer.weight, wq)
        rows = layer.rows()
        problem = RoundingProblem(
            w=rows,
            scale=_rows_param(layer, grid.scale.astype(np.float64)),
            zero_point=_rows_param(layer, grid.zero_point.astype(np.float64)),
            lo=grid.lo,
            hi=grid.hi,
            rtn=layer.rows_of(grid.integers(layer.weight).astype(np.float64)),
            hessian=m.hessian,
        )
        result = learn_rounding(problem, iterations=self.config.iterations, seconds=self.config.seconds_per_layer,
                                lam=self.config.regularization, lr=self.config.learning_rate)
        return result.q, result

    def _write(
        self, layer: Linear, wq: WeightQuant, q_rows: np.ndarray, m: InputMoments, namer: ir.NameGenerator, plan: QuantPlan
    ) -> tuple[int, bool]:
        """Write the learned grid points (and the bias absorbing their mean error); returns the integers
        insert-qdq would not reproduce (expected 0) and whether the bias was corrected."""
        grid = weight_grid(layer.weight, wq)
        original = layer.rows().copy()
        values, mismatched = on_grid(layer.from_rows(q_rows), grid, wq)
        layer.weight = values.astype(np.float64)
        fix_bias = self.config.correct_bias and bias_problem(layer, plan) is None
        if fix_bias:
            delta = layer.rows() - original
            shift = np.einsum("gof,gf->go", delta, m.mean).reshape(-1)
            layer.bias = (layer.bias if layer.bias is not None else np.zeros(layer.out_channels)) - shift
        layer.commit(namer, "adaround", bias=fix_bias)
        if fix_bias:
            plan_new_bias(plan, layer, wq)
        return mismatched, fix_bias


def _rows_param(layer: Linear, param: np.ndarray) -> np.ndarray:
    """A scale/zero point (a scalar, or broadcastable along the weight's output axis) in rows layout:
    ``[groups, O/groups, 1]``, one value per row."""
    if param.ndim == 0:
        return param
    return layer.rows_of(np.broadcast_to(param, layer.weight.shape))[..., :1]


def _input_moments(model: Model, layers: list[Linear], data: Iterable[Mapping[str, np.ndarray]], cfg: AdaRoundConfig) -> dict[str, InputMoments]:
    """``E[x xᵀ]`` and ``E[x]`` of every layer's input patches, in one streamed pass over the data."""
    rng = np.random.default_rng(cfg.seed)
    moments = {layer.name: InputMoments(layer) for layer in layers}
    names = [layer.node.inputs[0].name for layer in layers]
    for values in stream_tensors(model, names, data, max_samples=cfg.samples, where="adaround"):
        for layer in layers:
            moments[layer.name].update(patches(layer, values[layer.node.inputs[0].name], cfg.positions, rng))
    return moments
