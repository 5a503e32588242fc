"""Where a quantized activation's scale and zero point are, in QDQ and in QOperator models.

An integer activation carries no parameters of its own: the node that wrote it says them. For each
producer op, the positions of its *output* scale and zero point:

==============================================================  =============  ============
producer                                                        output scale   output zp
==============================================================  =============  ============
QuantizeLinear                                                  input 1        input 2
QLinearConv, QLinearMatMul, QLinearAdd, QLinearMul (contrib)    input 6        input 7
QGemm (contrib; only with ``y_scale``)                          input 7        input 8
QLinearGlobalAveragePool, QLinearAveragePool, QLinearSigmoid,   input 3        input 4
QLinearLeakyRelu, QLinearSoftmax
QLinearConcat                                                   input 0        input 1
data movement on integers (MaxPool, Reshape, Transpose, ...)    those of its integer input 0
==============================================================  =============  ============

Parameters must be constant (a ``DynamicQuantizeLinear`` computes them per run: such tensors are
not layer-comparable and are left out). ``dequantize`` is ONNX's ``(q - z) · s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from ..calibration.qparams import QUANT_DTYPES
from ..calibration.qparams import dequantize as _dequantize
from ..calibration.qparams import quantize as _quantize
from ..ir import Node, Tensor

__all__ = ["QuantParams", "OUTPUT_QPARAMS", "MOVEMENT_OPS", "output_qparams"]

#: op → (index of the output scale, index of the output zero point) among its inputs.
OUTPUT_QPARAMS: dict[str, tuple[int, int]] = {
    "QuantizeLinear": (1, 2),
    "QLinearConv": (6, 7),
    "QLinearMatMul": (6, 7),
    "QLinearAdd": (6, 7),
    "QLinearMul": (6, 7),
    "QGemm": (7, 8),
    "QLinearGlobalAveragePool": (3, 4),
    "QLinearAveragePool": (3, 4),
    "QLinearSigmoid": (3, 4),
    "QLinearLeakyRelu": (3, 4),
    "QLinearSoftmax": (3, 4),
    "QLinearConcat": (0, 1),
}

#: Ops that move integers without arithmetic: their output has the parameters of their input 0.
MOVEMENT_OPS = frozenset(
    {"MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Resize", "Slice", "Gather", "Identity", "Split", "DepthToSpace", "SpaceToDepth"}
)


@dataclass(frozen=True)
class QuantParams:
    """Scale and zero point of one quantized activation (per tensor, or per channel along ``axis``)."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    @property
    def dtype(self) -> str:
        """The integer type (``uint8``, ``int8``, ``uint16``, ``int16``)."""
        return np.dtype(self.zero_point.dtype).name

    def bounds(self) -> tuple[float, float]:
        """The real range the grid represents, ``[s·(qmin - z), s·(qmax - z)]`` (widest over channels)."""
        qmin, qmax = QUANT_DTYPES[self.dtype]
        s = self.scale.astype(np.float64)
        z = self.zero_point.astype(np.float64)
        return float(np.min(s * (qmin - z))), float(np.max(s * (qmax - z)))

    def step(self) -> float:
        """The largest scale (one quantization step), for the saturation margin."""
        return float(np.max(self.scale))

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """ONNX QuantizeLinear of a float array with these parameters."""
        return _quantize(x, self.scale, self.zero_point, self.dtype, axis=self._axis(x.ndim))

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """ONNX DequantizeLinear: ``(q - z) · s`` as float32."""
        if self.scale.size == 1:  # the common case, without the broadcasting helpers' copies
            out = np.subtract(q, self.zero_point.reshape(()), dtype=np.float32)
            out *= np.float32(self.scale.reshape(()))
            return out
        return _dequantize(q, self.scale, self.zero_point, axis=self._axis(q.ndim))

    def _axis(self, ndim: int) -> int | None:
        if self.scale.size == 1:
            return None
        return self.axis if self.axis is not None else 1 % max(ndim, 1)

    def as_dict(self) -> dict[str, object]:
        lo, hi = self.bounds()
        scale = self.scale.reshape(-1)
        zp = self.zero_point.reshape(-1)
        return {
            "dtype": self.dtype,
            "scale": float(scale[0]) if scale.size == 1 else [float(v) for v in scale],
            "zero_point": int(zp[0]) if zp.size == 1 else [int(v) for v in zp],
            "range": [lo, hi],
        }


def _params(node: Node, scale_at: int, zp_at: int) -> QuantParams | None:
    if len(node.inputs) <= scale_at:
        return None
    scale = ir.constant_array(node.inputs[scale_at])
    if scale is None:
        return None
    zp_tensor = node.inputs[zp_at] if len(node.inputs) > zp_at and node.inputs[zp_at].name else None
    zp = ir.constant_array(zp_tensor) if zp_tensor is not None else np.zeros((), np.uint8)
    if zp is None or np.dtype(zp.dtype).name not in QUANT_DTYPES:
        return None
    axis = ir.attr(node, "axis") if node.op == "QuantizeLinear" and scale.size > 1 else None
    return QuantParams(np.asarray(scale, np.float32), np.asarray(zp), None if axis is None else int(axis))


def output_qparams(tensor: Tensor, known: dict[str, QuantParams]) -> QuantParams | None:
    """The parameters of the integer activation ``tensor`` from its producer (see the module table).

    ``known`` holds the parameters found so far (in topological order), which data-movement ops
    pass on from their input. None: not an integer activation with constant parameters.
    """
    node = ir.producer(tensor)
    if node is None:
        return None
    if node.op in OUTPUT_QPARAMS:
        if node.op == "QuantizeLinear" and ir.is_constant(node.inputs[0]):
            return None  # a weight, not an activation
        return _params(node, *OUTPUT_QPARAMS[node.op])
    if node.op in MOVEMENT_OPS and node.inputs and node.inputs[0].name in known:
        return known[node.inputs[0].name]
    return None
