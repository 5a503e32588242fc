"""The quantization plan: which tensors are quantized and how, as data.

Quantizers (one per op type, see :mod:`._quantizers`) only *describe* a node: which inputs are
activations, weights or biases and how its outputs relate to its inputs. The annotation pass turns
those descriptions into a :class:`QuantPlan`; the QDQ pass materializes it. Constraints between
tensors are data:

- ``Shared(k)``: the output uses input ``k``'s scale and zero point (ops that only move data:
  Transpose, Reshape, MaxPool, Concat, ...) — onnxruntime then runs them on int8 directly.
- ``Fixed(lo, hi)``: the output range is known from the op's maths (Softmax, Sigmoid: [0, 1]).
- ``Bias(input, weight)``: int32 with ``scale = s_input · s_weight`` (per channel when the weight
  is per channel), zero point 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Act",
    "Weight",
    "Bias",
    "Shared",
    "Fixed",
    "OptionalAct",
    "Role",
    "NodeQuant",
    "TensorQuant",
    "WeightQuant",
    "QuantPlan",
    "Decision",
]


@dataclass(frozen=True)
class Act:
    """A run-time activation quantized with its own calibrated range."""


@dataclass(frozen=True)
class OptionalAct:
    """An output quantized only when a consumer wants it quantized.

    MatMul and Gemm have fused kernels with float outputs (MatMulIntegerToFloat, QGemm), so a
    projection feeding a float op needs no requantization.
    """


@dataclass(frozen=True)
class Shared:
    """An output sharing input ``index``'s quantization parameters."""

    index: int = 0


@dataclass(frozen=True)
class Fixed:
    """An output whose range is fixed by the op's maths, e.g. Softmax / Sigmoid in [0, 1]."""

    low: float
    high: float


@dataclass(frozen=True)
class Weight:
    """A constant weight, quantized per channel along ``axis`` (when per-channel is on)."""

    axis: int | None = 0


@dataclass(frozen=True)
class Bias:
    """An int32 bias derived from input ``input_index`` and weight ``weight_index``."""

    input_index: int = 0
    weight_index: int = 1


Role = Act | OptionalAct | Shared | Fixed | Weight | Bias


@dataclass(frozen=True)
class NodeQuant:
    """How one node would be quantized: roles of its inputs and outputs (by position)."""

    inputs: dict[int, Role]
    outputs: dict[int, Role]
    #: True for compute ops (Conv, MatMul, Gemm) that anchor int8 regions.
    anchor: bool = False


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
