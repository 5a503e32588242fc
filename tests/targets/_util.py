"""Shared by the target tests: one cached conversion per (target, options) of the cnn builder, and a
summary of a Q/DQ model's parameters (types, zero points, per-channel scales, biases) read off the proto.

Conversions are deterministic (tested in ``test_conversion.py``), so a result computed once serves
every test that only reads it; each caller gets its own parsed copy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from models import build

#: Calibration samples of the cached conversions (few: these tests check structure and numerics, not quality).
SAMPLES = 4


@functools.cache
def _converted(target: str | None, options: tuple[tuple[str, Any], ...]) -> tuple[bytes, dict[str, Any], dict[str, bytes]]:
    from onnxq.api import convert
    from onnxq.ir import to_proto

    result = convert(build("cnn"), f"synthetic:{SAMPLES}", dims={"N": 1}, target=target, samples=SAMPLES, eval_samples=SAMPLES, **dict(options))
    return to_proto(result.model).SerializeToString(), result.report.to_dict(), dict(result.artifacts)


def converted(target: str | None, **options: Any) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, bytes]]:
    """``convert(cnn, synthetic:4, target=target, **options)`` as (model, report dict, artifacts), cached per arguments."""
    blob, report, artifacts = _converted(target, tuple(sorted(options.items())))
    return onnx.load_from_string(blob), report, artifacts


def converted_bytes(target: str | None, **options: Any) -> bytes:
    return _converted(target, tuple(sorted(options.items())))[0]


@dataclass
class QDQSummary:
    """What a Q/DQ model's parameters are (read off the proto, independently of onnxq's own views)."""

    activation_dtypes: set[str] = field(default_factory=set)
    activation_zero_points: list[int] = field(default_factory=list)
    weight_dtypes: set[str] = field(default_factory=set)
    weight_zero_points: list[int] = field(default_factory=list)
    #: number of scales of each Conv weight's DequantizeLinear (1: per-tensor)
    conv_weight_scale_sizes: list[int] = field(default_factory=list)
    int32_bias_dqs: int = 0
    #: Conv / Gemm nodes with a bias input, and those whose bias is a float initializer (no DequantizeLinear)
    biased_nodes: int = 0
    float_biases: int = 0
    scales: list[np.ndarray] = field(default_factory=list)


def summarize(model: onnx.ModelProto) -> QDQSummary:
    """The :class:`QDQSummary` of ``model``."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = QDQSummary()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        out.scales.append(np.asarray(inits[node.input[1]]))
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        data = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None:
            if data.dtype == np.int32:
                out.int32_bias_dqs += 1
            else:
                out.weight_dtypes.add(str(data.dtype))
                out.weight_zero_points += [int(v) for v in np.ravel(zp if zp is not None else 0)]
        elif node.op_type == "QuantizeLinear":
            out.activation_dtypes.add(str(zp.dtype) if zp is not None else "uint8")
            out.activation_zero_points += [int(v) for v in np.ravel(zp if zp is not None else 0)]
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        w = producer.get(node.input[1])
        if node.op_type == "Conv" and w is not None and w.op_type == "DequantizeLinear":
            out.conv_weight_scale_sizes.append(int(np.size(inits[w.input[1]])))
        if len(node.input) > 2 and node.input[2]:
            out.biased_nodes += 1
            out.float_biases += int(node.input[2] in inits and inits[node.input[2]].dtype == np.float32)
    return out


def is_power_of_two(values: np.ndarray) -> bool:
    """Every value is exactly ``2^k`` (a float32 mantissa of exactly 0.5)."""
    mantissa, _ = np.frexp(np.asarray(values, np.float64).ravel())
    return bool(np.all(mantissa == 0.5))
