"""A deployment target as data: :class:`TargetProfile` (what a conversion for it sets and how its output is
checked) and :class:`TargetRules` (what the linter holds its Q/DQ graph to), in one registry.

A profile never holds logic: the conversion maps ``settings`` onto the options the user did not set
(a value the user set, even the default, is kept: :class:`onnxq.api.ConversionOptions`), refuses a
user value outside ``allowed``, runs its tuner on ``tune_runtime``, and validates
the result with the validator named by ``runtime`` (:mod:`onnxq.targets.validate`); the linter
reads ``rules``. Adding a target is one more :func:`register_target` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, OnnxqError

__all__ = ["TargetProfile", "TargetRules", "TargetError", "TARGETS", "register_target", "get_target", "target_names"]


class TargetError(OnnxqError):
    """The converted model fails its target's checks under ``strict``: ops the target cannot run, a
    failed validation on the target's runtime, or lint errors. The message lists them."""


@dataclass(frozen=True)
class TargetRules:
    """What a target's runtime accepts in a Q/DQ graph (read by :mod:`onnxq.lint`).

    Attributes:
        int8_ops: op types the target runs on 8-bit data when their inputs are dequantized.
        fused_activations: activations the target fuses into the preceding weighted op (a Q/DQ pair
            between them blocks the fusion).
        support: how to find the ops it cannot run at all: ``"onnx"`` (any standard-domain op; custom
            domains not), ``"onnxruntime"`` (the domains onnxruntime registers), ``"openvino"``
            (asked of OpenVINO), ``"denylist"`` / ``"allowlist"`` (the ops below).
        unsupported_ops / supported_ops: the documented lists for ``denylist`` / ``allowlist``.
        activation_dtypes / weight_dtypes: 8/16-bit types its Q/DQ layers take.
        activation_zero_point_zero / weight_zero_point_zero: zero points must be 0.
        per_channel_uniform_zero_point: per-channel weight zero points must all be equal.
        per_channel_ops: ops whose weights may be per-channel (None: any weighted op).
        op_weight_dtypes: per op type, the only types its weight (second) input may have.
        max_opset / max_ir: newest default-domain opset and IR version its parser reads (None: the
            runtime here decides, by loading the model).
        int32_bias: biases may be int32 DequantizeLinear inputs (TensorRT's DQ takes int8 only).
        output_q_fused: the target fuses a weighted op's output Q into the op (TensorRT does not: it
            recommends no Q/DQ on weighted-op outputs, so one there read only by float ops is waste).
        sources: where each rule comes from.
    """

    int8_ops: frozenset[str]
    fused_activations: frozenset[str] = frozenset({"Relu", "Clip"})
    support: str = "onnx"
    unsupported_ops: frozenset[str] = frozenset()
    supported_ops: frozenset[str] = frozenset()
    activation_dtypes: frozenset[str] = frozenset({"uint8", "int8", "uint16", "int16"})
    weight_dtypes: frozenset[str] = frozenset({"int8", "uint8"})
    activation_zero_point_zero: bool = False
    weight_zero_point_zero: bool = False
    per_channel_uniform_zero_point: bool = False
    per_channel_ops: frozenset[str] | None = None
    op_weight_dtypes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    max_opset: int | None = None
    max_ir: int | None = None
    int32_bias: bool = True
    output_q_fused: bool = True
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class TargetProfile:
    """One deployment target (see the module docstring).

    Attributes:
        name / summary: the ``--target`` name and one line about it.
        settings: conversion options the profile sets when the user did not set them; every key is
            one of :data:`onnxq.api.options.PROFILE_OPTIONS` (``format``, activation/weight dtypes
            and symmetry, ``per_channel``, ``reduce_range``, ``op_types`` — which ops get Q/DQ —,
            ``int32_bias``). A user value that differs is kept and reported as an override.
        allowed: options whose value the target's rules fix: any other value, the user's included, is refused.
        runtime: the validator (``onnxruntime``, ``onnxruntime-mobile``, ``openvino``) where the
            target's runtime runs on this machine; None: validated by rules and reference numerics.
        tune_runtime / tune_latency: where the tuner evaluates (and whether it times) candidates.
        saturation_probe: the runtime whose 8-bit saturation on this CPU decides ``reduce_range``
            when it is left automatic (None: the profile's ``reduce_range`` setting is final).
        expand_hardswish: write HardSwish as ``x · HardSigmoid(x)`` (onnxruntime's CPU provider has no
            HardSwish kernel; TensorRT, OpenVINO and QNN run HardSwish itself, QNN has no HardSigmoid).
        float_activations: activations the runtime runs in float, fused into the convolution before
            them: a Conv output only they read gets no Q/DQ pair (``drop-qdq-before-float-ops``;
            empty: every quantized Conv keeps its output pair, as onnxruntime's QLinearConv needs).
        opset: the opset the static pipeline raises models to for this target.
        artifacts: files the validation writes beside the model, by suffix (``.ort``, ...).
        rules: what the linter checks (:class:`TargetRules`).
        notes: sentences the report carries about the profile's choices.
    """

    name: str
    summary: str
    settings: Mapping[str, Any]
    rules: TargetRules
    allowed: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    runtime: str | None = None
    tune_runtime: str = "onnxruntime"
    tune_latency: bool = True
    saturation_probe: str | None = None
    expand_hardswish: bool = True
    float_activations: tuple[str, ...] = ()
    opset: int = 17
    artifacts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The profile as plain data (for reports and ``onnxq lint --json``)."""
        return {
            "name": self.name,
            "summary": self.summary,
            "settings": {k: list(v) if isinstance(v, (tuple, frozenset)) else v for k, v in self.settings.items()},
            "runtime": self.runtime,
            "tune_runtime": self.tune_runtime,
            "tune_latency": self.tune_latency,
        }


#: name → profile (filled by :mod:`onnxq.targets.profiles`).
TARGETS: dict[str, TargetProfile] = {}


def register_target(profile: TargetProfile) -> TargetProfile:
    """Add ``profile`` to the registry (a duplicate name is refused)."""
    if profile.name in TARGETS:
        raise ConfigError(f"target '{profile.name}' is already registered")
    TARGETS[profile.name] = profile
    return profile


def target_names() -> tuple[str, ...]:
    """Registered target names, in registration order."""
    return tuple(TARGETS)


def get_target(name: str) -> TargetProfile:
    """The profile named ``name``.

    Raises:
        ConfigError: an unknown target (the message lists the valid ones).
    """
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown target '{name}'; valid: {', '.join(TARGETS)}") from None
