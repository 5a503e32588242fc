"""Scale / zero-point computation and the QuantizeLinear / DequantizeLinear reference maths.

Affine quantization maps a real value ``r`` to an integer ``q`` and back::

    q  = saturate(round_half_even(r / s) + z)        (ONNX QuantizeLinear)
    r' = (q - z) * s                                  (ONNX DequantizeLinear)

Given a calibrated range ``[rmin, rmax]`` the parameters follow onnxruntime's
``quant_utils.compute_scale_zp`` so that models quantized by onnxq and by onnxruntime agree:

1. The range is widened to contain 0 (``rmin' = min(rmin, 0)``, ``rmax' = max(rmax, 0)``): zero (padding,
   ReLU outputs, masked values) must be exactly representable, i.e. ``r = 0`` maps to ``q = z`` exactly.
2. Symmetric: ``rmin' = -A``, ``rmax' = A`` with ``A = max(|rmin'|, |rmax'|)``. Signed types use the
   restricted grid ``[-127, 127]`` / ``[-32767, 32767]`` so the grid is symmetric, and the zero point is
   ``round_half_even((qmin + qmax) / 2)``: 0 for int8/int16, 128 for uint8, 32768 for uint16. It does not
   depend on the scale, so every channel of a per-channel tensor gets the same zero point (which
   QLinearConv on the CPU requires).
3. ``s = (rmax' - rmin') / (qmax - qmin)``, computed in float64 and stored as float32.
4. Asymmetric: ``z = round_half_even(qmin - rmin' / s)`` (float64 ``s``), clipped to ``[qmin, qmax]``.
5. Degenerate range (``s`` below the smallest normal float32, e.g. an all-zero tensor): ``s = 1`` so that
   nothing ever divides by zero; ``z = 0`` (asymmetric, as onnxruntime) or the symmetric midpoint of
   rule 2 (onnxruntime uses 0 there; we keep rule 2's per-channel invariant instead).
6. ``reduce_range`` (7-bit weights for CPUs whose u8*s8 dot product can saturate) uses onnxruntime's
   reduced grids, which take precedence over the symmetric ones: uint8 ``[0, 127]``, int8 ``[-64, 64]``,
   uint16 ``[0, 32767]``, int16 ``[-16384, 16384]``.
7. ``power_of_two`` (fixed-point scales, for integer-only NPUs and DSPs): after step 3 the scale is
   rounded *up* to ``2^-k`` (``s' = 2^ceil(log2 s)``), then step 4 computes the zero point with
   ``s'``. Rounding up keeps the whole range on the grid (nothing new clips) at the price of at most
   one bit of resolution; rounding down would clip up to half the range. With power-of-two input,
   weight and output scales, every requantization multiplier ``s_x·s_w / s_y`` is a power of two:
   a bit shift on hardware without a multiplier for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from onnxq.errors import CalibrationError, ConfigError

__all__ = [
    "QUANT_DTYPES",
    "QuantGrid",
    "compute_qparams",
    "compute_qparams_array",
    "dequantize",
    "quant_grid",
    "quantize",
    "power_of_two_ceil",
]

logger = logging.getLogger(__name__)

#: Supported integer target types and their full ranges.
QUANT_DTYPES: dict[str, tuple[int, int]] = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "uint16": (0, 65535),
    "int16": (-32768, 32767),
}

_SYMMETRIC_RANGES: dict[str, tuple[int, int]] = {"int8": (-127, 127), "int16": (-32767, 32767)}
_REDUCED_RANGES: dict[str, tuple[int, int]] = {
    "uint8": (0, 127),
    "int8": (-64, 64),
    "uint16": (0, 32767),
    "int16": (-16384, 16384),
}
_MIN_SCALE = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class QuantGrid:
    """The integer grid ``[qmin, qmax]`` used for one dtype / symmetric / reduce_range choice."""

    dtype: str
    qmin: int
    qmax: int

    @property
    def levels(self) -> int:
        """Number of steps between the grid ends, ``qmax - qmin`` (the divisor of the scale)."""
        return self.qmax - self.qmin


def quant_grid(dtype: str, symmetric: bool = False, reduce_range: bool = False) -> QuantGrid:
    """Return the integer grid onnxruntime uses for ``dtype`` (see rules 2 and 6 of the module doc).

    Raises:
        ConfigError: ``dtype`` is not one of :data:`QUANT_DTYPES`.
    """
    if dtype not in QUANT_DTYPES:
        raise ConfigError(f"unsupported quantization dtype {dtype!r}; valid: {', '.join(QUANT_DTYPES)}")
    if reduce_range:
        qmin, qmax = _REDUCED_RANGES[dtype]
    elif symmetric and dtype in _SYMMETRIC_RANGES:
        qmin, qmax = _SYMMETRIC_RANGES[dtype]
    else:
        qmin, qmax = QUANT_DTYPES[dtype]
    return QuantGrid(dtype, qmin, qmax)


def power_of_two_ceil(scale: np.ndarray | float) -> np.ndarray:
    """The smallest power of two ``>= scale`` (float64; rule 7 of the module docstring)."""
    s = np.asarray(scale, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(s > 0, np.exp2(np.ceil(np.log2(np.where(s > 0, s, 1.0)))), s)


def compute_qparams_array(
    rmin: np.ndarray | float,
    rmax: np.ndarray | float,
    dtype: str,
    symmetric: bool,
    reduce_range: bool = False,
    power_of_two: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized scale / zero point for arrays of ranges (e.g. one per output channel of a weight).

    Args:
        rmin: Range minima (any shape, broadcast against ``rmax``).
        rmax: Range maxima.
        dtype: Target integer type, one of :data:`QUANT_DTYPES`.
        symmetric: Symmetrize the range around 0 (rule 2 of the module docstring).
        reduce_range: Use the 7-bit (15-bit for 16-bit types) grid of rule 6.
        power_of_two: Round scales up to powers of two (rule 7).

    Returns:
        ``(scale, zero_point)``: float32 scales and zero points of ``dtype``, both of the broadcast shape.

    Raises:
        CalibrationError: a bound is NaN/Inf or ``rmin > rmax``.
        ConfigError: unknown ``dtype``.
    """
    grid = quant_grid(dtype, symmetric, reduce_range)
    lo, hi = np.broadcast_arrays(np.asarray(rmin, dtype=np.float64), np.asarray(rmax, dtype=np.float64))
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise CalibrationError(f"cannot compute quantization parameters of a non-finite range [{rmin}, {rmax}]")
    if (lo > hi).any():
        raise CalibrationError(f"cannot compute quantization parameters: rmin > rmax in [{rmin}, {rmax}]")
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)
    if symmetric:
        absmax = np.maximum(-lo, hi)
        lo, hi = -absmax, absmax
    scale = (hi - lo) / float(grid.levels)
    degenerate = scale < _MIN_SCALE
    if power_of_two:
        scale = np.where(degenerate, scale, power_of_two_ceil(scale))
    safe_scale = np.where(degenerate, 1.0, scale)
    if symmetric:
        zero_point = np.full(scale.shape, np.round((grid.qmin + grid.qmax) / 2.0))
    else:
        zero_point = np.where(degenerate, 0.0, np.round(grid.qmin - lo / safe_scale))
    zero_point = np.clip(zero_point, grid.qmin, grid.qmax).astype(np.dtype(dtype))
    return safe_scale.astype(np.float32), zero_point


def compute_qparams(
    rmin: float, rmax: float, dtype: str, symmetric: bool, reduce_range: bool = False, power_of_two: bool = False
) -> tuple[np.float32, int]:
    """Scale and zero point of one range; see :func:`compute_qparams_array` and the module docstring.

    Returns:
        ``(scale, zero_point)`` as ``np.float32`` and a Python ``int``.
    """
    scale, zero_point = compute_qparams_array(rmin, rmax, dtype, symmetric, reduce_range, power_of_two)
    return np.float32(scale.reshape(())), int(zero_point.reshape(()))


def _broadcast_param(param: np.ndarray, ndim: int, axis: int | None, name: str) -> np.ndarray:
    """Reshape a per-axis 1-D parameter so it broadcasts along ``axis`` of an ``ndim``-D tensor."""
    if param.ndim == 0 or axis is None:
        if param.ndim != 0:
            raise ConfigError(f"{name} has shape {param.shape}; a per-axis {name} needs axis=")
        return param
    if param.ndim != 1:
        raise ConfigError(f"{name} must be a scalar or 1-D along axis {axis}, found shape {param.shape}")
    if not -ndim <= axis < ndim:
        raise ConfigError(f"axis {axis} is out of range for a {ndim}-D tensor")
    shape = [1] * ndim
    shape[axis] = param.shape[0]
    return param.reshape(shape)


def quantize(
    x: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    dtype: str,
    axis: int | None = None,
) -> np.ndarray:
    """ONNX QuantizeLinear: ``saturate(round_half_even(x / scale) + zero_point)`` in float32.

    ``scale``/``zero_point`` are scalars, or 1-D along ``axis`` (per-channel). The division is done in
    float32 like the ONNX reference and onnxruntime. NaN inputs are undefined in ONNX; here they map to
    ``zero_point`` so the output is deterministic.
    """
    qmin, qmax = QUANT_DTYPES.get(dtype, (None, None))
    if qmin is None:
        raise ConfigError(f"unsupported quantization dtype {dtype!r}; valid: {', '.join(QUANT_DTYPES)}")
    xf = np.asarray(x, dtype=np.float32)
    s = _broadcast_param(np.asarray(scale, dtype=np.float32), xf.ndim, axis, "scale")
    z = _broadcast_param(np.asarray(zero_point).astype(np.float32), xf.ndim, axis, "zero_point")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.rint(xf / s) + z
    q = np.clip(np.where(np.isnan(q), z, q), qmin, qmax)
    return q.astype(np.dtype(dtype))


def dequantize(
    q: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    axis: int | None = None,
) -> np.ndarray:
    """ONNX DequantizeLinear: ``(q - zero_point) * scale`` with the difference exact in int32, as float32."""
    qi = np.asarray(q).astype(np.int32)
    s = _broadcast_param(np.asarray(scale, dtype=np.float32), qi.ndim, axis, "scale")
    z = _broadcast_param(np.asarray(zero_point).astype(np.int32), qi.ndim, axis, "zero_point")
    return (qi - z).astype(np.float32) * s
