"""Bundled models quantized once per test session (QDQ and QOperator), with their samples."""

from __future__ import annotations

import functools

import numpy as np
import onnx

from models import build
from onnxq import convert, ir
from tests.helpers import random_feeds

DIMS = {"N": 1, "batch": 1, "seq": 16}


@functools.cache
def float_model(name: str) -> onnx.ModelProto:
    return build(name)


@functools.cache
def samples(name: str, n: int = 4) -> list[dict[str, np.ndarray]]:
    return [random_feeds(float_model(name), seed=i, dims=DIMS) for i in range(n)]


@functools.cache
def quantized(name: str, fmt: str = "qdq") -> onnx.ModelProto:
    """``name`` converted to static int8 without tuning, with 7-bit weights: no u8·s8 product
    saturates on any CPU, so onnxruntime's fused and unfused int8 agree up to rounding whichever
    tensors a comparison exposes (with saturating 8-bit weights, exposing a tensor changes results)."""
    return ir.to_proto(convert(float_model(name), samples(name), tune=False, format=fmt, reduce_range=True).model)


def with_scale_times(model: onnx.ModelProto, initializer: str, factor: float) -> onnx.ModelProto:
    """A copy of ``model`` with one initializer (a weight's DequantizeLinear scale) multiplied by ``factor``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name == initializer:
            init.CopyFrom(onnx.numpy_helper.from_array((onnx.numpy_helper.to_array(init) * factor).astype(np.float32), init.name))
            return out
    raise KeyError(initializer)
