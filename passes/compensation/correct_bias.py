"""``correct-bias``: subtract each quantized layer's expected output error from its bias.

Rounding a weight to its grid, ``W_q = W + ΔW``, shifts the layer's output by ``ΔW · x``. Over the
data this error has a non-zero mean per output channel, ``E[ΔW x] = ΔW · E[x]``, which later layers
do not average away (Nagel et al. 2019, §4.2; worst for per-tensor grids, where small channels
round to a few levels). Subtracting it from the bias removes the mean and leaves only the
zero-mean part::

    b'[o] = b[o] - E[(W_q x - W x)[o]]

``W_q`` is computed exactly as ``insert-qdq`` will store the weight (same qparams, same float32
rounding: :mod:`._grid`), so the pass runs after the plan is final and before ``insert-qdq``: after
``annotate-quantization`` and ``tune-latency`` (a node tuning returns to float would otherwise
keep a correction for an error it no longer has) and after ``adaround`` (which changes ``W_q``;
its own learned weights sit on the grid, ``ΔW = 0``, so they are counted as ``on_grid`` and left).

Two ways to get ``E[ΔW x]``:

- empirical (default): on an in-memory copy of the float model, each quantized layer gets a twin
  computing ``ΔW · x`` on the same input (same op, same attributes, no bias) and a ReduceMean over
  all but the channel axis; onnxruntime runs it sample by sample (``samples``) and the means are
  averaged. Exact, padding included.
- ``data_free=true``: ``E[x]`` from the BatchNormalization statistics ``record-batchnorm-stats``
  kept: the input's producer outputs ``N(β, γ²)`` per channel, so through a ReLU/Clip ``E[x]`` is the
  clipped-normal mean (:func:`clipped_normal_mean`; mean-preserving pools and Flatten may follow),
  and ``E[ΔW x] = Σ_f ΔW[o, f] · E[x_c(f)]``, ignoring padding. Layers whose input is not such a
  chain are left with the reason. Without any statistics the pass says so and changes nothing.

A Conv or Gemm without a bias gets one (and the plan an int32 bias entry with ``s_b = s_x · s_w``, as
annotate would have made); a MatMul's bias is the Add after it, and a MatMul without one is left
with its reason. Layers inside control-flow bodies are left too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from onnxq import ir
from onnxq.config import PassConfig
from onnxq.context import ChannelGaussian, Need
from onnxq.errors import ConfigError
from onnxq.ir import Model, Node
from onnxq.pass_base import Pass, PassContext, PassResult, register_pass
from onnxq.plan import WeightQuant

from ._grid import weight_grid
from ._layers import LINEAR_OPS, Linear
from ._planned import bias_problem, plan_new_bias, planned_layers
from ._stream import stream_tensors

__all__ = ["CorrectBias", "CorrectBiasConfig", "clipped_normal_mean", "measured_errors"]

#: Ops between a BN-normalized layer and the next layer that keep the channel mean (data-free variant).
_MEAN_PRESERVING = ("GlobalAveragePool", "AveragePool", "Flatten", "Identity")


@dataclass(frozen=True)
class CorrectBiasConfig(PassConfig):
    """Options: ``data_free`` (BN statistics instead of data) and the calibration sample cap."""

    data_free: bool = False
    samples: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 1:
            raise ConfigError(f"correct-bias: samples must be >= 1, got {self.samples}")


def clipped_normal_mean(mean: np.ndarray, std: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``E[clip(z, lo, hi)]`` for ``z ~ N(mean, std²)`` per channel (``lo``/``hi`` may be ∓inf).

    With ``a = (lo - μ)/σ``, ``b = (hi - μ)/σ``, Φ/φ the standard normal cdf/pdf:
    ``lo·Φ(a) + hi·(1 - Φ(b)) + μ·(Φ(b) - Φ(a)) + σ·(φ(a) - φ(b))``; ReLU is ``lo = 0, hi = ∞``.
    """
    mu, sigma = np.asarray(mean, np.float64), np.maximum(np.asarray(std, np.float64), 1e-12)
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    cdf = np.vectorize(lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0))) if math.isfinite(z) else float(z > 0))
    pdf = np.vectorize(lambda z: math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) if math.isfinite(z) else 0.0)
    low = lo * cdf(a) if math.isfinite(lo) else 0.0
    high = hi * (1.0 - cdf(b)) if math.isfinite(hi) else 0.0
    return np.asarray(low + high + mu * (cdf(b) - cdf(a)) + sigma * (pdf(a) - pdf(b)), np.float64)


def _activation_bounds(node: Node) -> tuple[float, float] | None:
    if node.op == "Relu":
        return 0.0, math.inf
    if node.op != "Clip":
        return None
    bounds = []
    for i in (1, 2):
        v = ir.constant_array(node.inputs[i]) if len(node.inputs) > i and node.inputs[i].name else None
        if len(node.inputs) > i and node.inputs[i].name and v is None:
            return None
        bounds.append(float(v.reshape(-1)[0]) if v is not None else (-math.inf if i == 1 else math.inf))
    return bounds[0], bounds[1]


def _expected_input(layer: Linear, stats: Mapping[str, ChannelGaussian]) -> np.ndarray | str:
    """``E[x]`` per input channel of ``layer`` from the BN statistics of the layer feeding it."""
    chain: list[Node] = []
    t = layer.node.inputs[0]
    while True:
        p = ir.producer(t)
        if p is None:
            return "its input is not computed by a layer with BatchNormalization statistics"
        if p.name in stats and p.op in LINEAR_OPS:
            break
        if p.op not in _MEAN_PRESERVING and _activation_bounds(p) is None:
            return f"{p.op} between the input's BatchNormalization statistics and the layer"
        chain.insert(0, p)
        t = p.inputs[0]
    g = stats[p.name]
    acts = [n for n in chain if _activation_bounds(n) is not None]
    if len(acts) > 1 or (acts and chain[0] is not acts[0]):
        return "the activation is not directly after the normalized layer"
    mean = clipped_normal_mean(g.mean, g.std, *_activation_bounds(acts[0])) if acts else g.mean  # type: ignore[misc]
    if mean.size != layer.in_channels:
        return f"statistics have {mean.size} channels, the layer reads {layer.in_channels}"
    return mean


@register_pass("correct-bias")
class CorrectBias(Pass[CorrectBiasConfig]):
    """Bias correction: subtract E[(W_q - W) x] of each quantized Conv/Gemm/MatMul from its bias (after planning, before insert-qdq)."""

    changes_structure = False
    reads = ("plan",)
    writes = ("plan",)

    def needs(self) -> tuple[Need, ...]:
        return ("plan",) if self.config.data_free else ("plan", "calibration_data")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        plan = ctx.plan
        if plan is None:
            ctx.note("correct-bias skipped: no quantization plan")
            return PassResult(model, False, {"corrected": 0, "skipped": "no quantization plan"})
        if self.config.data_free and ctx.batchnorm_stats is None:
            ctx.note("correct-bias data_free=true skipped: no BatchNormalization statistics (run record-batchnorm-stats before cleanup)")
            return PassResult(model, False, {"corrected": 0, "skipped": "no BatchNormalization statistics"})
        layers, refused = planned_layers(model, plan)
        todo, on_grid = [], 0
        for layer, wq in layers:
            delta = weight_grid(layer.weight, wq).fake_quantize(layer.weight).astype(np.float64) - layer.weight
            why = bias_problem(layer, plan)
            if why:
                refused[layer.name] = (layer.op, why)
            elif not np.any(delta):
                on_grid += 1
            else:
                todo.append((layer, wq, delta))
        errors = self._errors(model, todo, ctx, refused)
        namer = ir.names(model)
        added = 0
        for layer, wq, _ in todo:
            e = errors.get(layer.name)
            if e is None:
                continue
            added += int(layer.bias is None)
            layer.bias = (layer.bias if layer.bias is not None else np.zeros(layer.out_channels)) - e
            layer.commit(namer, "corrected", weight=False)
            plan_new_bias(plan, layer, wq)
        for name, (op, reason) in refused.items():
            ctx.skip(name, op, f"bias not corrected: {reason}", kept="unchanged")
        shifts = [float(np.abs(e).mean()) for e in errors.values()]
        stats: dict[str, float] = {"corrected": len(errors), "added_biases": added, "on_grid": on_grid, "refused": len(refused)}
        if shifts:
            stats["mean_abs_shift"] = float(np.mean(shifts))
        return PassResult(model, bool(errors), stats)

    def _errors(
        self, model: Model, todo: list[tuple[Linear, WeightQuant, np.ndarray]], ctx: PassContext, refused: dict[str, tuple[str, str]]
    ) -> dict[str, np.ndarray]:
        """``E[ΔW x]`` per layer to correct (measured, or from BN statistics); refusals go to ``refused``."""
        if not todo:
            return {}
        if not self.config.data_free:
            assert ctx.calibration_data is not None
            return measured_errors(model, [(layer, delta) for layer, _, delta in todo], ctx.calibration_data, self.config.samples)
        out = {}
        assert ctx.batchnorm_stats is not None
        for layer, _, delta in todo:
            mean = _expected_input(layer, ctx.batchnorm_stats)
            if isinstance(mean, str):
                refused[layer.name] = (layer.op, f"data-free: {mean}")
                continue
            out[layer.name] = Linear(layer.node, delta, None, layer.out_axis, layer.groups).input_sums(mean)
        return out


def measured_errors(model: Model, layers: list[tuple[Linear, np.ndarray]], data: Iterable[Mapping[str, np.ndarray]], samples: int) -> dict[str, np.ndarray]:
    """``E[ΔW · x]`` per output channel of each layer, measured with onnxruntime (see the module docstring)."""
    twin = ir.clone(model)
    namer = ir.names(twin)
    node_of = {n.name: n for n in twin.graph.nodes}
    outputs: dict[str, str] = {}
    for layer, delta in layers:
        outputs[_add_twin(twin, node_of[layer.node.name], layer, delta, namer)] = layer.name
    sums: dict[str, np.ndarray] = {}
    count = 0
    for values in stream_tensors(twin, list(outputs), data, max_samples=samples, where="bias correction"):
        count += 1
        for tensor, name in outputs.items():
            sums[name] = sums.get(name, 0.0) + values[tensor].astype(np.float64)
    return {name: total / max(count, 1) for name, total in sums.items()}


def _add_twin(model: Model, node: Node, layer: Linear, delta: np.ndarray, namer: ir.NameGenerator) -> str:
    """Add ``mean over all but the channel axis of op(x, ΔW)`` next to ``node``; returns the mean's name."""
    base = f"{node.name}/bias_correction"
    attrs = {k: v for k, v in node.attrs.items() if k not in ("alpha", "beta")}
    err = ir.make_variable(namer.new(f"{base}/error"), dtype=np.float32)
    w = ir.make_constant(namer.new(f"{base}/delta_W"), delta.astype(np.float32))
    nodes = [ir.make_node(node.op, [node.inputs[0], w], [err], name=namer.new(f"{base}/twin"), attrs=attrs)]
    if node.op == "MatMul":  # any rank: channels are the last axis
        flat = ir.make_variable(namer.new(f"{base}/rows"), dtype=np.float32)
        shape = ir.make_constant(namer.new(f"{base}/rows_shape"), np.array([-1, layer.out_channels], np.int64))
        nodes.append(ir.make_node("Reshape", [err, shape], [flat], name=namer.new(f"{base}/reshape")))
        err, axes = flat, [0]
    else:
        axes = [0, 2, 3] if node.op == "Conv" else [0]
    mean = ir.make_variable(namer.new(f"{base}/mean"), dtype=np.float32)
    if model.opset >= 18:
        axes_const = ir.make_constant(namer.new(f"{base}/axes"), np.array(axes, np.int64))
        nodes.append(ir.make_node("ReduceMean", [err, axes_const], [mean], name=namer.new(f"{base}/mean"), attrs={"keepdims": 0}))
    else:
        nodes.append(ir.make_node("ReduceMean", [err], [mean], name=namer.new(f"{base}/mean"), attrs={"axes": axes, "keepdims": 0}))
    model.graph.nodes.extend(nodes)
    return mean.name
