"""GPTQ (Frantar et al. 2022): block-wise weight rounding that compensates each error on the rows still to come.

For ``Y = X @ W`` with ``W[K, N]`` and the layer's input rows ``x`` (calibration data), the output
error of a quantized ``W'`` is a quadratic form in ``Δ = W' - W``::

    E || x Δ ||² = tr(Δᵀ H Δ) / 2          H = 2 · E[x xᵀ]   (K x K, the same for every column n)

GPTQ quantizes ``W`` one reduction row ``k`` at a time (every output column at once) and, after
rounding row ``k``, moves its error onto the rows not yet quantized so that the quadratic form
stays minimal (the Optimal Brain Surgeon update restricted to the remaining rows)::

    e      = (w_k - q_k) / U[k, k]
    w_j   -= U[k, j] · e        for every j > k            (U: upper Cholesky factor of H⁻¹)

``H⁻¹ = Uᵀ U`` is factored once (after dampening ``H += λ I``, ``λ = damp · mean(diag H)``,
raised tenfold until the factorization succeeds), which makes the row-by-row updates exact for
the shrinking sub-problems. Updates are applied lazily: inside a batch of rows only the batch is
updated at once; the rows after it get one matrix product per batch (``W[i2:] -= U[i1:i2, i2:]ᵀ E``).

Blocks (groups) match :mod:`._blockwise` exactly: block ``b`` is rows ``[b·B, (b+1)·B)`` of ``K``,
with one scale / zero point per block and output column, on the same grids (``block_qparams``,
optionally the per-block MSE clip search). A block's scales are computed when its first row is
about to be quantized, from the *current* (error-updated) values of all its rows; every row of the
block is then rounded on that grid. Codes, scales and zero points come back as a
:class:`~._blockwise.BlockQuant` in the standard layout, so MatMulNBits / blocked DequantizeLinear
are emitted as for round-to-nearest.

**act-order** (``act_order=True``) processes rows by decreasing ``diag(H)`` (the inputs with the most
energy first, while there are many rows left to absorb their error). Blocks stay the contiguous
``K`` ranges of the standard layout (no ``g_idx``): a block's grid is fixed when the first of its
rows comes up in the permuted order, from the current values of all its rows (those rows beyond the
lazy batch get the batch's pending updates applied first). The codes are un-permuted at the end.

Dead inputs (``H[k, k] = 0``: the channel is always zero on the data) need no special case: the
dampening makes ``H`` positive definite and their rows get no coupling to the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._blockwise import BlockGrid, BlockQuant, dequantize_blocks, from_blocks, quantize_blocks, quantize_blockwise

__all__ = ["GPTQResult", "gptq_quantize", "inverse_cholesky", "output_error"]

#: Rows per lazy batch (rounded up to a multiple of the block size so a block never straddles two).
LAZY_ROWS = 128


@dataclass(frozen=True)
class GPTQResult:
    """A GPTQ-quantized weight and its proxy output errors ``tr(Δᵀ H Δ)`` (undamped ``H``).

    Attributes:
        quant: the codes / scales / zero points (``mse_rtn`` and ``mse`` are weight-space errors of
            round-to-nearest and of GPTQ: GPTQ trades a larger weight error for a smaller output one).
        error_rtn / error: ``tr(Δᵀ H Δ)`` of round-to-nearest (with the same clip search) and of GPTQ.
        damp: the ``λ`` finally used.
    """

    quant: BlockQuant
    error_rtn: float
    error: float
    damp: float


def output_error(delta: np.ndarray, hessian: np.ndarray) -> float:
    """``tr(Δᵀ H Δ)`` for ``Δ[K, N]``: twice the summed squared output error per input row."""
    d = np.asarray(delta, np.float64)
    return float(np.einsum("kn,kn->", hessian @ d, d))


def _inv_lower(lower: np.ndarray) -> np.ndarray:
    """``L⁻¹`` of a lower-triangular ``L`` by blocks, ``[[A, 0], [B, C]]⁻¹ = [[A⁻¹, 0], [-C⁻¹ B A⁻¹, C⁻¹]]``
    (matrix products instead of a general LU solve: numpy has no triangular solver)."""
    n = lower.shape[0]
    if n <= 128:
        return np.linalg.inv(lower)
    m = n // 2
    a_inv, c_inv = _inv_lower(lower[:m, :m]), _inv_lower(lower[m:, m:])
    out = np.zeros_like(lower)
    out[:m, :m], out[m:, m:] = a_inv, c_inv
    out[m:, :m] = -c_inv @ (lower[m:, :m] @ a_inv)
    return out


def inverse_cholesky(hessian: np.ndarray, damp: float) -> tuple[np.ndarray, float]:
    """Upper ``U`` with ``Uᵀ U = (H + λ I)⁻¹``, ``λ = damp · mean(diag H)`` (x10 until positive definite).

    With ``J`` the order reversal and ``J (H + λI) J = L Lᵀ`` (one Cholesky factorization),
    ``(H + λI)⁻¹ = (J L⁻ᵀ J)(J L⁻¹ J)``, so ``U = J L⁻¹ J`` (upper triangular).

    Returns:
        ``(U, λ)``.

    Raises:
        np.linalg.LinAlgError: no factorization after six tenfold increases of ``λ``.
    """
    h = np.asarray(hessian, np.float64)
    mean_diag = float(np.mean(np.diag(h))) if h.size else 0.0
    lam = damp * mean_diag if mean_diag > 0 else 1.0
    flipped = h[::-1, ::-1]
    for _ in range(7):
        damped = flipped.copy()
        damped[np.diag_indices_from(damped)] += lam
        try:
            lower = np.linalg.cholesky(damped)
        except np.linalg.LinAlgError:
            lam *= 10
            continue
        return np.ascontiguousarray(_inv_lower(lower)[::-1, ::-1]), lam
    raise np.linalg.LinAlgError(f"H + λI is not positive definite even with λ = {lam / 10:g}")


@dataclass
class _Grids:
    """Per-block grids filled as blocks come up: ``scale``/``zp`` ``[N, n_blocks]``."""

    grid: BlockGrid
    scale: np.ndarray
    zp: np.ndarray
    ready: np.ndarray

    def fit(self, block: int, rows: np.ndarray, importance: np.ndarray) -> None:
        """The grid of ``block`` from its current rows ``[rows, N]`` (zero padding would not change it);
        the clip search weights each row's squared error by ``importance`` (``diag H`` of its rows)."""
        blocks = np.ascontiguousarray(rows.T, dtype=np.float32)  # [N, rows]
        ratio = self.grid.ratios(blocks, importance[None, :]) if self.grid.search else 1.0
        self.scale[:, block], self.zp[:, block] = self.grid.qparams(blocks, ratio)
        self.ready[block] = True

    def round(self, block: int, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes (int32) and dequantized values (float64) of one row ``[N]`` on ``block``'s grid."""
        s, z = self.scale[:, block], self.zp[:, block]
        q = quantize_blocks(row.astype(np.float32)[:, None], s, z, self.grid.bits, self.grid.symmetric)[:, 0]
        return q, (q - z).astype(np.float64) * s.astype(np.float64)


def _block_rows(w: np.ndarray, u: np.ndarray, w1: np.ndarray, err1: np.ndarray, i1: int, done: int, positions: np.ndarray) -> np.ndarray:
    """Current values of rows at ``positions`` (processing order, none quantized yet): in-batch rows
    from the batch copy ``w1``, later rows with the batch's first ``done`` pending updates applied."""
    out = np.empty((len(positions), w.shape[1]))
    i2 = i1 + len(w1)
    inside = positions < i2
    out[inside] = w1[positions[inside] - i1]
    later = positions[~inside]
    if len(later):
        out[~inside] = w[later] - u[i1 : i1 + done, later].T @ err1[:done]
    return out


def gptq_quantize(w: np.ndarray, hessian: np.ndarray, grid: BlockGrid, *, damp: float = 0.01, act_order: bool = False) -> GPTQResult:
    """Quantize ``W[K, N]`` block-wise along ``K`` with GPTQ's error compensation (module docstring).

    Args:
        w: the weight, reduction axis first.
        hessian: ``H = 2 E[x xᵀ]`` of the layer's input rows, ``[K, K]``.
        grid: the block grid and clip search, as :func:`~._blockwise.quantize_blockwise` takes it.
        damp: relative dampening ``λ / mean(diag H)``.
        act_order: process rows by decreasing ``diag(H)``.

    Returns:
        The quantized weight (standard layout) and its proxy output errors against round-to-nearest.
    """
    k, n = w.shape
    h = np.asarray(hessian, np.float64)
    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(k)
    u, lam = inverse_cholesky(h[np.ix_(perm, perm)], damp)
    diag = np.diag(h)[perm]
    position = np.empty(k, np.int64)
    position[perm] = np.arange(k)
    block_size = grid.block_size
    n_blocks = -(-k // block_size)
    grids = _Grids(grid, np.ones((n, n_blocks), np.float32), np.zeros((n, n_blocks), np.int32), np.zeros(n_blocks, bool))
    work = np.asarray(w, np.float64)[perm].copy()  # current weights, processing order
    codes = np.zeros((k, n), np.int32)
    lazy = -(-LAZY_ROWS // block_size) * block_size
    for i1 in range(0, k, lazy):
        i2 = min(i1 + lazy, k)
        w1, err1, u1 = work[i1:i2].copy(), np.zeros((i2 - i1, n)), u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            block = int(perm[i1 + i]) // block_size
            if not grids.ready[block]:
                members = position[block * block_size : min((block + 1) * block_size, k)]
                grids.fit(block, _block_rows(work, u, w1, err1, i1, i, members), diag[members])
            codes[i1 + i], deq = grids.round(block, w1[i])
            err1[i] = (w1[i] - deq) / u1[i, i]
            w1[i:] -= np.outer(u1[i, i:], err1[i])
        work[i2:] -= u[i1:i2, i2:].T @ err1
    return _result(w, h, codes[position], grids, lam)


def _result(w: np.ndarray, h: np.ndarray, codes: np.ndarray, grids: _Grids, lam: float) -> GPTQResult:
    """Package ``codes[K, N]`` (original order) like :func:`~._blockwise.quantize_blockwise` does."""
    k, n = codes.shape
    grid, block_size, n_blocks = grids.grid, grids.grid.block_size, grids.scale.shape[1]
    padded = np.empty((n_blocks * block_size, n), np.int32)
    padded[:k] = codes
    padded[k:] = grids.zp[:, -1]  # padding rows are zero weights: the zero point
    blocks = np.ascontiguousarray(padded.T.reshape(n, n_blocks, block_size))
    w32 = np.asarray(w, np.float32)
    delta = from_blocks(dequantize_blocks(blocks, grids.scale, grids.zp), k).astype(np.float64) - w32
    rtn = quantize_blockwise(w32, grid)
    quant = BlockQuant(blocks, grids.scale, grids.zp, k, grid.bits, grid.symmetric, block_size, rtn.mse, float(np.square(delta).mean()))
    error_rtn = output_error(rtn.dequantize().astype(np.float64) - w32, h)
    return GPTQResult(quant, error_rtn, output_error(delta, h), lam)
