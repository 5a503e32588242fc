"""Block-wise weight quantization maths shared by the weight-only passes (pure numpy, no graph).

A weight ``W[K, N]`` is cut along its reduction axis ``K`` into blocks of ``block_size`` values;
each block ``b`` (of output column ``n``) gets its own scale ``s`` and zero point ``z``::

    q = clip(round_half_even(w / s) + z, qmin, qmax)        w' = (q - z) * s

Grids (``bits`` = 4 or 8):

- asymmetric (unsigned, ``[0, 2^bits - 1]``): the block range is widened to contain 0
  (``lo = min(w, 0)``, ``hi = max(w, 0)``, so zero padding and exact zeros stay exact),
  ``s = (hi - lo) / (2^bits - 1)``, ``z = clip(round(-lo / s))``.
- symmetric (signed, ``[-2^(bits-1), 2^(bits-1) - 1]``, ``z = 0``): ``s = max|w| / (2^(bits-1) - 1)``,
  so ``±max|w|`` are both representable and the most negative level is unused by round-to-nearest
  (the clip-ratio search below can move ``s`` down to use it).

Every value inside the grid's range is reconstructed within ``s / 2``. An all-zero block gets
``s = 1`` (never a division by zero; it reconstructs exactly).

**Clip search** (``scale_search="mse"``): round-to-nearest spends levels on the block's outliers.
For each block we also try the range shrunk by ratios ``r`` in ``[r_min, 1)`` (``lo * r``,
``hi * r``; values outside are clipped) and keep the candidate with the smallest squared
reconstruction error of that block. ``r = 1`` (plain RTN) is always a candidate and wins ties, so the
search is never worse than RTN, block by block. It is vectorized over blocks and candidates, in
chunks bounded by :data:`CHUNK_ELEMENTS` to cap memory on embedding-sized tables. With calibration
data the error can be weighted per row of ``K`` (``importance``, e.g. ``E[x_k²]``: the diagonal of
the layer's output error ``Σ_k E[x_k²] Δ_k²``), so clipping spares the rows that meet large inputs.

**Packing**: sub-byte codes are packed low-first: byte ``j`` of a 4-bit row holds code ``2j`` in
bits 0-3 and code ``2j+1`` in bits 4-7 (onnxruntime's MatMulNBits / GatherBlockQuantized order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BlockGrid",
    "BlockQuant",
    "CHUNK_ELEMENTS",
    "qrange",
    "to_blocks",
    "from_blocks",
    "block_qparams",
    "representable_scale",
    "quantize_blocks",
    "dequantize_blocks",
    "quantize_blockwise",
    "pack_codes",
    "unpack_codes",
    "search_ratios",
]

#: Upper bound on ``blocks * block_size * candidates`` float32 values held at once by the search.
CHUNK_ELEMENTS = 1 << 22


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """The integer grid: ``[-2^(b-1), 2^(b-1) - 1]`` when symmetric (signed), ``[0, 2^b - 1]`` otherwise."""
    if bits not in (2, 4, 8):
        raise ValueError(f"bits must be 2, 4 or 8, got {bits}")
    if symmetric:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def to_blocks(w: np.ndarray, block_size: int) -> np.ndarray:
    """``W[K, N]`` → ``blocks[N, n_blocks, block_size]`` (K zero-padded to a multiple of the block)."""
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight, got shape {w.shape}")
    k, n = w.shape
    n_blocks = -(-k // block_size)
    padded = np.zeros((n_blocks * block_size, n), dtype=np.float32)
    padded[:k] = w
    return np.ascontiguousarray(padded.T.reshape(n, n_blocks, block_size))


def from_blocks(blocks: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`to_blocks`: ``[N, n_blocks, block_size]`` → ``[K, N]`` (padding dropped)."""
    n = blocks.shape[0]
    return np.ascontiguousarray(blocks.reshape(n, -1)[:, :k].T)


def representable_scale(scale: np.ndarray, dtype: np.dtype | type | None) -> np.ndarray:
    """Round scales up to the next value ``dtype`` can store (float32 result).

    Rounding up (never down) keeps the block's range inside the grid, so the ``s / 2`` error bound
    still holds with the stored scale; zero / underflowing scales become the smallest positive value.
    """
    scale = np.asarray(scale, dtype=np.float32)
    if dtype is None or np.dtype(dtype) == np.float32:
        return scale
    dt = np.dtype(dtype)
    info = np.finfo(dt)
    stored = np.clip(scale, float(info.smallest_subnormal), float(info.max)).astype(dt)
    low = (stored.astype(np.float32) < scale) & (stored < info.max)
    stored = np.array(stored, dtype=dt)
    stored[low] = np.nextafter(stored[low], np.array(np.inf, dt))
    return np.minimum(stored.astype(np.float32), np.float32(info.max))


def block_qparams(
    blocks: np.ndarray, bits: int, symmetric: bool, ratio: np.ndarray | float = 1.0, scale_dtype: np.dtype | type | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of each block (see the module docstring for the grids).

    Args:
        blocks: ``[..., block_size]`` float values.
        bits: 4 or 8 (2 is accepted for completeness).
        symmetric: signed grid without zero point.
        ratio: shrink factor(s) of the block range, broadcast against ``blocks[..., 0]``.
        scale_dtype: the type the scales will be stored in (e.g. float16 for a float16 model); the
            zero points are computed from the stored scale.

    Returns:
        ``(scale, zero_point)``: float32 scales and int32 zero points of shape ``blocks.shape[:-1]``.
    """
    qmin, qmax = qrange(bits, symmetric)
    ratio = np.asarray(ratio, dtype=np.float32)
    if symmetric:
        amax = np.abs(blocks).max(axis=-1) * ratio
        raw = amax / np.float32(qmax)
    else:
        lo = np.minimum(blocks.min(axis=-1), 0) * ratio
        hi = np.maximum(blocks.max(axis=-1), 0) * ratio
        raw = (hi - lo) / np.float32(qmax - qmin)
    degenerate = ~(raw > np.finfo(np.float32).tiny)
    scale = representable_scale(np.where(degenerate, np.float32(1), raw), scale_dtype)
    if symmetric:
        zp = np.zeros(scale.shape, dtype=np.int32)
    else:
        zp = np.clip(np.rint(qmin - lo / scale), qmin, qmax).astype(np.int32)
        zp = np.where(degenerate, qmin, zp).astype(np.int32)
    return scale.astype(np.float32), zp


def quantize_blocks(blocks: np.ndarray, scale: np.ndarray, zp: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """Integer codes ``clip(round(w / s) + z)`` as int32, shape of ``blocks``."""
    qmin, qmax = qrange(bits, symmetric)
    q = np.rint(blocks / scale[..., None])
    q += zp[..., None].astype(q.dtype)  # float32: codes and zero points are small integers (exact); an int32 + float32 sum would be float64
    return np.clip(q, qmin, qmax, out=q).astype(np.int32)


def dequantize_blocks(q: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    """``(q - z) * s`` as float32."""
    return ((q - zp[..., None]).astype(np.float32) * scale[..., None]).astype(np.float32, copy=False)


def _block_errors(
    blocks: np.ndarray, bits: int, symmetric: bool, ratios: np.ndarray, scale_dtype: np.dtype | type | None, importance: np.ndarray | None = None
) -> np.ndarray:
    """Squared reconstruction error (weighted by ``importance`` when given, same shape as ``blocks``)
    of every block for every ratio: ``[len(ratios), *blocks.shape[:-1]]``."""
    r = ratios.reshape((-1,) + (1,) * (blocks.ndim - 1))
    scale, zp = block_qparams(blocks[None], bits, symmetric, r, scale_dtype)
    q = quantize_blocks(blocks[None], scale, zp, bits, symmetric)
    err = dequantize_blocks(q, scale, zp) - blocks[None]
    if importance is not None:
        return np.einsum("...i,...i,...i->...", err, err, importance[None])
    return np.einsum("...i,...i->...", err, err)


def search_ratios(
    blocks: np.ndarray,
    bits: int,
    symmetric: bool,
    *,
    min_ratio: float = 0.7,
    steps: int = 20,
    scale_dtype: np.dtype | type | None = None,
    importance: np.ndarray | None = None,
) -> np.ndarray:
    """Per-block clip ratio minimizing squared reconstruction error (1.0 = RTN, which wins ties).

    Args:
        blocks: ``[B, block_size]`` (any leading shape is flattened and restored).
        bits / symmetric: the grid.
        min_ratio: smallest ratio tried.
        steps: number of ratios in ``[min_ratio, 1]`` (1.0 included, tried first).
        scale_dtype: storage type of the scales (see :func:`block_qparams`).
        importance: weights of each value's squared error, broadcastable to ``blocks`` (None: equal).

    Returns:
        float32 ratios of shape ``blocks.shape[:-1]``.
    """
    if not 0 < min_ratio <= 1:
        raise ValueError(f"min_ratio must be in (0, 1], got {min_ratio}")
    ratios = np.concatenate([[1.0], np.linspace(1.0, min_ratio, max(steps, 1))[1:]]).astype(np.float32)
    lead = blocks.shape[:-1]
    flat = blocks.reshape(-1, blocks.shape[-1]).astype(np.float32, copy=False)
    weights = None if importance is None else np.broadcast_to(np.asarray(importance, np.float32), blocks.shape).reshape(flat.shape)
    best = np.ones(flat.shape[0], dtype=np.float32)
    per_chunk = max(1, CHUNK_ELEMENTS // (flat.shape[1] * len(ratios)))
    for start in range(0, flat.shape[0], per_chunk):
        chunk = flat[start : start + per_chunk]
        part = None if weights is None else weights[start : start + per_chunk]
        errors = _block_errors(chunk, bits, symmetric, ratios, scale_dtype, part)  # [R, chunk]
        best[start : start + per_chunk] = ratios[np.argmin(errors, axis=0)]  # argmin keeps the first (RTN) on ties
    return best.reshape(lead)


@dataclass(frozen=True)
class BlockGrid:
    """How a weight is cut and rounded, as every block quantizer here takes it (round to nearest,
    GPTQ, AWQ's candidates).

    Attributes:
        block_size / bits / symmetric: the block grid (see the module docstring).
        search: run the per-block MSE clip-ratio search (:func:`search_ratios`) ...
        min_ratio / steps: ... over this ratio grid.
        scale_dtype: storage type of the scales (float32 default; float16 for float16 models).
    """

    block_size: int
    bits: int
    symmetric: bool
    search: bool = False
    min_ratio: float = 0.7
    steps: int = 20
    scale_dtype: np.dtype | type | None = None

    def qparams(self, blocks: np.ndarray, ratio: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """:func:`block_qparams` on this grid."""
        return block_qparams(blocks, self.bits, self.symmetric, ratio, self.scale_dtype)

    def ratios(self, blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
        """:func:`search_ratios` on this grid."""
        return search_ratios(blocks, self.bits, self.symmetric, min_ratio=self.min_ratio, steps=self.steps, scale_dtype=self.scale_dtype,
                             importance=importance)


@dataclass(frozen=True)
class BlockQuant:
    """A block-quantized ``W[K, N]``.

    Attributes:
        codes: int32 codes ``[N, n_blocks, block_size]`` on the grid of ``bits`` / ``symmetric``
            (padding rows beyond ``k`` are zero weights, coded as the zero point).
        scale: float32 ``[N, n_blocks]``.
        zero_point: int32 ``[N, n_blocks]`` (all zero when symmetric).
        k: the unpadded reduction size.
        mse_rtn / mse: mean squared reconstruction error over the real (unpadded) weights with plain
            round-to-nearest and with the chosen scales (equal without a search).
    """

    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    k: int
    bits: int
    symmetric: bool
    block_size: int
    mse_rtn: float
    mse: float

    def dequantize(self) -> np.ndarray:
        """The reconstructed ``W'[K, N]`` (float32)."""
        return from_blocks(dequantize_blocks(self.codes, self.scale, self.zero_point), self.k)


def quantize_blockwise(w: np.ndarray, grid: BlockGrid, *, importance: np.ndarray | None = None) -> BlockQuant:
    """Quantize ``W[K, N]`` per block of ``grid.block_size`` along ``K`` (see the module docstring).

    Args:
        w: the weight, reduction axis first.
        grid: the block grid and clip search.
        importance: ``[K]`` weights of each row's squared error in the search (e.g. ``E[x_k²]``).

    Returns:
        The codes, scales and zero points with the RTN and final mean squared errors.
    """
    k = w.shape[0]
    w32 = np.asarray(w, dtype=np.float32)
    blocks = to_blocks(w32, grid.block_size)
    scale, zp = grid.qparams(blocks)
    codes = quantize_blocks(blocks, scale, zp, grid.bits, grid.symmetric)
    err_rtn = float(np.square(from_blocks(dequantize_blocks(codes, scale, zp), k) - w32).mean()) if w32.size else 0.0
    err = err_rtn
    if grid.search and w32.size:
        rows = None if importance is None else to_blocks(np.asarray(importance, np.float32).reshape(-1, 1), grid.block_size)  # [1, n_blocks, B]
        scale, zp = grid.qparams(blocks, grid.ratios(blocks, rows))
        codes = quantize_blocks(blocks, scale, zp, grid.bits, grid.symmetric)
        err = float(np.square(from_blocks(dequantize_blocks(codes, scale, zp), k) - w32).mean())
    return BlockQuant(codes, scale, zp, k, grid.bits, grid.symmetric, grid.block_size, err_rtn, err)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned codes (``0 <= c < 2^bits``) along the last axis into uint8, low bits first.

    The last axis is zero-padded to a whole number of bytes (``8 // bits`` codes per byte).
    """
    if bits == 8:
        return np.asarray(codes).astype(np.uint8)
    per = 8 // bits
    c = np.asarray(codes).astype(np.uint8)
    pad = (-c.shape[-1]) % per
    if pad:
        c = np.concatenate([c, np.zeros(c.shape[:-1] + (pad,), np.uint8)], axis=-1)
    c = c.reshape(c.shape[:-1] + (-1, per))
    out = np.zeros(c.shape[:-1], np.uint8)
    for i in range(per):
        out |= (c[..., i] & ((1 << bits) - 1)) << (bits * i)
    return out


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: the first ``count`` codes of the last axis (uint8)."""
    if bits == 8:
        return np.asarray(packed, np.uint8)[..., :count]
    per = 8 // bits
    p = np.asarray(packed, np.uint8)
    parts = [(p >> (bits * i)) & ((1 << bits) - 1) for i in range(per)]
    return np.stack(parts, axis=-1).reshape(p.shape[:-1] + (-1,))[..., :count]
