"""The quantization plan and its config: what static quantization will do, as data.

This is the contract between the static-quantization passes: ``annotate-quantization`` writes a
:class:`QuantPlan` (which activations get a QuantizeLinear/DequantizeLinear pair and with which
share group, which constants are stored quantized, and a :class:`Decision` per node),
``tune-latency`` replaces it with a faster or more accurate one, and ``insert-qdq`` materializes
it. It lives in the framework (beside :class:`~onnxq.calibration.ranges.RangeSet`) because the
pass context carries it between passes and the conversion report reads it; the per-op quantizers
that *describe* nodes stay in the pass library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import PassConfig
from .errors import ConfigError

__all__ = [
    "QuantizationConfig", "AccuracyGuardConfig", "ActivationDtype", "TensorQuant", "WeightQuant", "Decision", "QuantPlan", "TuningStep", "TuningRecord",
    "FrontierPoint", "MixedPrecisionRecord",
]

ActivationDtype = Literal["uint8", "int8", "uint16", "int16"]


@dataclass(frozen=True)
class QuantizationConfig(PassConfig):
    """Options of static quantization (shared by ``annotate-quantization`` and ``insert-qdq``).

    Attributes:
        activation_dtype: uint8 (default: fastest on onnxruntime x86 with u8s8 kernels), int8, or
            int16/uint16 (opset 21).
        activation_symmetric: symmetric activation ranges (zero point at the grid's middle).
        weight_dtype / weight_symmetric: int8 symmetric by default.
        per_channel: per-output-channel weight scales.
        reduce_range: 7-bit weights. None (default) decides by measurement: on when onnxruntime's
            8-bit GEMM on this CPU saturates for the activation × weight types (x86 without VNNI,
            see :func:`onnxq.runtime.kernels.int8_products_saturate`), off otherwise.
        reduce_range_nodes: 7-bit weights for these nodes (regexes, full match) whatever
            ``reduce_range`` says; the ``choose-weight-range`` pass fills it with the nodes whose
            8-bit products saturate on this CPU when ``reduce_range`` is automatic. A plan built
            from a config whose ``reduce_range`` is still None (annotate resolves it first) has
            8-bit weights except on these nodes.
        op_types: quantize only these op types (empty: every op with a quantizer).
        exclude_op_types / exclude_nodes: keep these float (node names are regexes, full match).
        include_nodes: quantize only nodes matching these regexes (empty: all).
        keep_first / keep_last: keep the first/last N compute nodes (Conv/MatMul/Gemm) float.
        quantize_activation_matmul: also quantize MatMul of two activations (attention scores).
        concat_range_ratio: a Concat whose input ranges differ by more than this stays float.
        power_of_two_scales: fixed-point scales, every scale rounded up to ``2^-k`` (integer-only
            NPUs and DSPs requantize by shifting; see :mod:`onnxq.calibration.qparams`, rule 7).
        int32_bias: store Conv/Gemm biases as int32 with scale ``s_x · s_w`` (onnxruntime, OpenVINO,
            QNN); False keeps them float (TensorRT's Q/DQ layers are 8-bit only).
    """

    activation_dtype: ActivationDtype = "uint8"
    activation_symmetric: bool = False
    weight_dtype: Literal["int8", "uint8"] = "int8"
    weight_symmetric: bool = True
    per_channel: bool = True
    reduce_range: bool | None = None
    reduce_range_nodes: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    include_nodes: tuple[str, ...] = ()
    keep_first: int = 0
    keep_last: int = 0
    quantize_activation_matmul: bool = False
    concat_range_ratio: float = 10.0
    power_of_two_scales: bool = False
    int32_bias: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for pattern in self.exclude_nodes + self.include_nodes + self.reduce_range_nodes:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"invalid node-name regex '{pattern}': {e}") from None
        if self.keep_first < 0 or self.keep_last < 0:
            raise ConfigError("keep_first / keep_last must be >= 0")
        if self.concat_range_ratio <= 1:
            raise ConfigError(f"concat_range_ratio must be > 1, got {self.concat_range_ratio}")


@dataclass(frozen=True)
class AccuracyGuardConfig(PassConfig):
    """The accuracy guard's targets and budget (``tune-latency``; ``onnxq convert`` has the same flags).

    Attributes:
        min_agreement: top-1 agreement with float required on class-score outputs.
        min_cosine: cosine with float required on other outputs.
        eval_samples: calibration samples the guard evaluates on (fewer for large inputs).
        max_accuracy_trials: cap on candidate plans the guard evaluates (a count, not a time, so
            its decisions do not depend on the machine).
        accuracy_metric: guard specs ``METRIC[>=T|<=T][@OUTPUT]`` replacing the default guard of
            the outputs they name (all outputs without ``@``); empty: each output's default, chosen
            from its shape and producers (see :mod:`onnxq.metrics.guard`). min_agreement is the bar
            of every agreement metric (top1, sequence_agreement, topk, threshold), min_cosine of
            the cosines.
    """

    min_agreement: float = 0.98
    min_cosine: float = 0.97
    eval_samples: int = 8
    max_accuracy_trials: int = 60
    accuracy_metric: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.accuracy_metric, str):  # one spec given as a string: accuracy_metric="top1"
            object.__setattr__(self, "accuracy_metric", (self.accuracy_metric,))
        super().__post_init__()
        for name in ("min_agreement", "min_cosine"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        for name in ("eval_samples", "max_accuracy_trials"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        from .metrics import check_guard  # checked now: a bad spec fails before any work is done

        for spec in self.accuracy_metric:
            check_guard(spec)


@dataclass
class TensorQuant:
    """An activation tensor to quantize with a QuantizeLinear/DequantizeLinear pair."""

    name: str
    dtype: str
    symmetric: bool
    #: tensors sharing this tensor's scale/zero point (names, including itself) are one group
    group: str = ""
    fixed: tuple[float, float] | None = None
    #: interval outside which every reader saturates (e.g. [-3, inf) when only HardSwish reads
    #: it): the quantization range can be narrowed to it at no cost
    clamp: tuple[float, float] | None = None


@dataclass
class WeightQuant:
    """A constant input of one node to store quantized (weight or bias)."""

    node: str
    index: int
    tensor: str
    kind: Literal["weight", "bias"]
    dtype: str
    symmetric: bool
    axis: int | None
    reduce_range: bool = False
    #: for biases: (activation tensor, weight input index) whose scales multiply
    derived_from: tuple[str, int] | None = None


@dataclass
class Decision:
    """Why a node is (not) quantized, for the report."""

    node: str
    op: str
    quantized: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "quantized": self.quantized, "reason": self.reason}


@dataclass
class QuantPlan:
    """Everything the QDQ pass needs, keyed by tensor and node names."""

    activations: dict[str, TensorQuant] = field(default_factory=dict)
    weights: list[WeightQuant] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)
    #: share groups: group id → member tensor names
    groups: dict[str, list[str]] = field(default_factory=dict)
    #: round every scale up to a power of two (fixed-point targets)
    power_of_two: bool = False

    @property
    def quantized_nodes(self) -> list[str]:
        return [d.node for d in self.decisions.values() if d.quantized]

    def float_nodes(self) -> list[Decision]:
        return [d for d in self.decisions.values() if not d.quantized]

    def summary(self) -> dict[str, Any]:
        return {
            "quantized_nodes": len(self.quantized_nodes),
            "float_nodes": len(self.float_nodes()),
            "activations": len(self.activations),
            "weights": sum(1 for w in self.weights if w.kind == "weight"),
            "biases": sum(1 for w in self.weights if w.kind == "bias"),
        }


@dataclass
class TuningStep:
    """One measured step of the latency/accuracy tuner (fields that do not apply stay None).

    Attributes:
        step: what was tried ("full plan", "keep depthwise Conv float", "accuracy check", "final").
        nodes: how many nodes the step moved to float.
        float_ms / int8_ms: medians of the float model and of the plan at this step.
        with_ms / without_ms: medians with and without the step's change (latency trials).
        speedup: float_ms / int8_ms of the final plan.
        accepted: whether the change was kept.
        accuracy: the guard's metrics against float after the step: the worst value of each
            guard metric over the outputs it guards (``agreement`` and ``cosine`` always present).
        meets_targets: whether those metrics meet the accuracy targets.
        guards: per output, the metric that guarded it, its threshold and value (see
            :meth:`onnxq.metrics.Guard.record`).
    """

    step: str
    nodes: int | None = None
    float_ms: float | None = None
    int8_ms: float | None = None
    with_ms: float | None = None
    without_ms: float | None = None
    speedup: float | None = None
    accepted: bool | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    meets_targets: bool | None = None
    guards: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step}
        for name in ("nodes", "float_ms", "int8_ms", "with_ms", "without_ms", "speedup", "accepted"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.accuracy)
        if self.meets_targets is not None:
            out["meets_targets"] = self.meets_targets
        if self.guards:
            out["guards"] = self.guards
        return out


@dataclass
class TuningRecord:
    """What the tuner did: its thread count and steps, or the report whose decisions it replayed.

    ``guards`` are the per-output guard records of the last plan the tuner measured (the final one
    when int8 was kept): which metric guarded each output, its bar and its value.
    """

    threads: int = 1
    steps: list[TuningStep] = field(default_factory=list)
    replayed: str | None = None
    replayed_nodes: int = 0
    guards: list[dict[str, Any]] = field(default_factory=list)
    #: what ``mixed-precision`` chose and saw (None for ``tune-latency``)
    mixed: MixedPrecisionRecord | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.replayed is not None:
            return {"replayed": self.replayed, "nodes": self.replayed_nodes, "steps": []}
        out: dict[str, Any] = {"threads": self.threads, "steps": [s.as_dict() for s in self.steps]}
        if self.guards:
            out["guards"] = self.guards
        return out


@dataclass(frozen=True)
class FrontierPoint:
    """One precision assignment ``mixed-precision`` measured.

    Attributes:
        label: how the search reached it ("all lowest", "top 3 of 12 units fp32", ...).
        value: the target metric's value against float (the first target's key; see ``key``).
        key: which reading ``value`` is (``cosine``, ``agreement``, a spec).
        meets_accuracy: whether every accuracy target holds.
        int8_nodes / dynamic_nodes: nodes quantized statically (8-bit activations) / dynamically.
        int16_nodes / fp16_nodes: nodes with 16-bit activations / computing in float16.
        latency_ms / float_ms / speedup: interleaved medians of this plan and of float in the same
            timing round, and their ratio (None when the point was not timed).
    """

    label: str
    value: float | None
    key: str
    meets_accuracy: bool
    int8_nodes: int
    dynamic_nodes: int
    latency_ms: float | None = None
    float_ms: float | None = None
    speedup: float | None = None
    int16_nodes: int = 0
    fp16_nodes: int = 0

    def as_dict(self) -> dict[str, Any]:
        keys = ("label", "latency_ms", "float_ms", "speedup", "key", "value", "meets_accuracy", "int8_nodes", "dynamic_nodes", "int16_nodes", "fp16_nodes")
        return {k: getattr(self, k) for k in keys}


@dataclass
class MixedPrecisionRecord:
    """What ``mixed-precision`` did: the targets, whether they were met, the precision of every
    unit's nodes, the evaluations it spent and every point it measured (the frontier it saw).

    Attributes:
        targets: the accuracy targets as given (guard specs, ``agreement>=T``).
        max_latency_ms / min_speedup: the latency constraints (None: not given).
        met: every target and constraint holds for the chosen plan.
        unmet: a plain sentence saying what was not met and what was written instead ("" when met).
        precisions: node → ``int8`` (static), ``dynamic-int8``, ``int16`` (16-bit activations),
            ``fp16`` or ``fp32``, for every unit's node: what the model has.
        assignment: unit (its first node) → the precision the search gave it: the decisions
            ``--replay`` re-applies without measuring (a unit's nodes can differ from it in
            ``precisions``: a dynamic unit's fused Relu is fp32).
        evaluations: accuracy evaluations by phase (``sensitivity``, ``search``) and ``timed`` plans.
        frontier: every measured point, in the order measured.
        chosen: the label of the chosen point.
        runtime: where the candidates were evaluated and timed.
        replayed: the report whose assignment was re-applied (None: searched).
    """

    targets: list[str] = field(default_factory=list)
    max_latency_ms: float | None = None
    min_speedup: float | None = None
    met: bool = True
    unmet: str = ""
    precisions: dict[str, str] = field(default_factory=dict)
    evaluations: dict[str, int] = field(default_factory=dict)
    frontier: list[FrontierPoint] = field(default_factory=list)
    chosen: str = ""
    assignment: dict[str, str] = field(default_factory=dict)
    runtime: str = "onnxruntime"
    replayed: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "replayed": self.replayed,
            "targets": list(self.targets),
            "max_latency_ms": self.max_latency_ms,
            "min_speedup": self.min_speedup,
            "met": self.met,
            "unmet": self.unmet,
            "chosen": self.chosen,
            "evaluations": dict(self.evaluations),
            "precisions": dict(self.precisions),
            "assignment": dict(self.assignment),
            "frontier": [p.as_dict() for p in self.frontier],
        }
