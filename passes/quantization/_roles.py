"""Roles: how a quantizer describes a node, as data.

Quantizers (one per op type, see :mod:`._quantizers`) only *describe* a node: which inputs are
activations, weights or biases and how its outputs relate to its inputs. ``annotate-quantization``
turns those descriptions into a :class:`onnxq.plan.QuantPlan`; ``insert-qdq`` materializes it.
Constraints between tensors are data:

- ``Shared(k)``: the output uses input ``k``'s scale and zero point (ops that only move data:
  Transpose, Reshape, MaxPool, Concat, ...) — onnxruntime then runs them on int8 directly.
- ``Fixed(lo, hi)``: the output range is known from the op's maths (Softmax, Sigmoid: [0, 1]).
- ``Bias(input, weight)``: int32 with ``scale = s_input · s_weight`` (per channel when the weight
  is per channel), zero point 0.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Act", "Weight", "Bias", "Shared", "Fixed", "OptionalAct", "Role", "NodeQuant"]


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
