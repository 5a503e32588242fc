"""A histogram with a fixed power-of-two bin layout that grows without losing counts.

Layout: bins have width ``w = 2**k`` (``k`` an integer, possibly negative) and absolute integer indices;
bin ``i`` covers ``[i*w, (i+1)*w)``, i.e. edges are integer multiples of ``w``. A value goes to bin
``floor(x * 2**-k)``; multiplying by a power of two is exact in binary floating point (an underflow to
``-0.0`` of a tiny negative value is corrected to bin -1), so binning is exact and reproducible. The
counts array covers exactly the bins from ``floor(lo/w)`` to ``floor(hi/w)``, where ``lo``/``hi`` are
the smallest and largest values counted so far.

``k`` is canonical: the smallest integer with

* ``floor(hi/w) - floor(lo/w) + 1 <= cap`` (``cap = 2 * bins``, so a histogram spanning more than a few
  bins holds between about ``bins`` and ``cap`` of them), and
* ``k >= max(-126, e - 40)`` where ``2**(e-1) <= max(|lo|, |hi|) < 2**e``: keeps ``2**-k`` a normal float32
  and bin indices below ``2**40`` (a constant tensor gets one narrow bin instead of an absurd index).

Both conditions only tighten when ``[lo, hi]`` widens, so ``k`` never decreases. Growing to ``k + d``
merges aligned groups of ``2**d`` bins (``i -> i >> d``, an arithmetic shift = floor division), which
preserves every count exactly. The layout depends only on ``(lo, hi)`` of everything seen, so any two
histograms merge exactly (both coarsen to the ``k`` of the union) and merging histograms of disjoint
shards gives exactly the histogram of one pass over all the data, bin for bin.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from onnxq.calibration.ranges import Histogram

__all__ = ["GrowableHistogram", "entropy_threshold", "fold_abs", "mse_range", "percentile_range", "required_k"]

logger = logging.getLogger(__name__)

_K_MIN = -126  # 2**126 is the largest power of two whose inverse is still a normal float32
_INDEX_BITS = 40  # |bin index| < 2**40: exact in float32 products and int64 arithmetic
_CHUNK = 1 << 16  # elements per vectorized chunk: intermediates stay in the CPU cache


def _index(x: float, k: int) -> int:
    """Absolute bin index ``floor(x / 2**k)`` of one value, exact (see :func:`_bin_counts` on underflow)."""
    scaled = math.ldexp(x, -k)
    return -1 if scaled == 0.0 and x < 0.0 else math.floor(scaled)


def _fits(lo: float, hi: float, k: int, cap: int) -> bool:
    """True if the values in ``[lo, hi]`` occupy at most ``cap`` bins of width ``2**k``."""
    return _index(hi, k) - _index(lo, k) + 1 <= cap


def required_k(lo: float, hi: float, cap: int) -> int:
    """The canonical width exponent for values in ``[lo, hi]`` (see the module docstring)."""
    absmax = max(abs(lo), abs(hi))
    k_floor = _K_MIN if absmax == 0.0 else max(_K_MIN, math.frexp(absmax)[1] - _INDEX_BITS)
    span = hi - lo
    k = k_floor if span <= 0.0 else max(k_floor, math.floor(math.log2(span / cap)))
    while not _fits(lo, hi, k, cap):
        k += 1
    while k > k_floor and _fits(lo, hi, k - 1, cap):
        k -= 1
    return k


def _coarsen(counts: np.ndarray, start: int, d: int) -> tuple[np.ndarray, int]:
    """Merge aligned groups of ``2**d`` bins: bin ``i`` goes to ``i >> d``. Returns (counts, new start)."""
    if d == 0:
        return counts, start
    target = (np.arange(start, start + counts.size, dtype=np.int64) >> d) - (start >> d)
    out = np.zeros(int(target[-1]) + 1, dtype=np.int64)
    np.add.at(out, target, counts)
    return out, start >> d


def _bin_counts(values: np.ndarray, k: int, start: int, nbins: int) -> np.ndarray:
    """Counts of ``values`` in bins ``start .. start+nbins-1`` of width ``2**k`` (all must fall inside).

    Processes fixed-size chunks so the float and index intermediates stay in cache: about 3x faster
    than one pass over a large tensor. ``np.add.at`` on int64 indices beats ``np.bincount`` here
    (no min/max pre-scan of the indices).
    """
    dtype = values.dtype
    scale = dtype.type(math.ldexp(1.0, -k))
    counts = np.zeros(nbins, dtype=np.int64)
    m = min(_CHUNK, values.size)
    fbuf = np.empty(m, dtype=dtype)
    # int32 indices convert from float ~10% faster; only usable when every bin index fits
    small = max(abs(start), abs(start + nbins)) < 2**31
    ibuf = np.empty(m, dtype=np.int32 if small else np.intp)
    for begin in range(0, values.size, _CHUNK):
        block = values[begin : begin + _CHUNK]
        y, idx = fbuf[: block.size], ibuf[: block.size]
        np.multiply(block, scale, out=y)
        np.floor(y, out=y)
        idx[...] = y  # exact: y holds integers of magnitude below 2**40 (2**31 for int32)
        if k >= 2:
            # x * 2**-k can underflow to -0.0 only when w = 2**k >= 4 (|x| >= the smallest subnormal);
            # floor(-0.0) would give bin 0 instead of -1 for such a tiny negative x
            idx -= (block < 0) & (y == 0)
        idx -= start
        np.add.at(counts, idx, 1)
    return counts


class GrowableHistogram:
    """Exact, mergeable histogram with the canonical power-of-two layout of the module docstring.

    Args:
        bins: Target number of bins; the histogram holds at most ``2 * bins``.
    """

    def __init__(self, bins: int = 2048) -> None:
        self.bins = bins
        self.cap = 2 * bins
        self.k: int | None = None
        self.start = 0
        self.counts = np.zeros(0, dtype=np.int64)
        self.lo = math.inf
        self.hi = -math.inf

    @property
    def is_empty(self) -> bool:
        """True before any value was counted."""
        return self.k is None

    @property
    def width(self) -> float:
        """Bin width ``2**k``."""
        assert self.k is not None
        return math.ldexp(1.0, self.k)

    @property
    def origin(self) -> float:
        """Left edge of the first bin, ``start * 2**k``."""
        assert self.k is not None
        return math.ldexp(float(self.start), self.k)

    @property
    def nbytes(self) -> int:
        """Memory held by the counts."""
        return int(self.counts.nbytes)

    def copy(self) -> GrowableHistogram:
        """An independent copy."""
        out = GrowableHistogram(self.bins)
        out.k, out.start, out.counts, out.lo, out.hi = self.k, self.start, self.counts.copy(), self.lo, self.hi
        return out

    def _relayout(self, lo: float, hi: float) -> None:
        """Widen the covered value range to include ``[lo, hi]``, coarsening (exactly) if needed."""
        lo, hi = min(lo, self.lo), max(hi, self.hi)
        k = required_k(lo, hi, self.cap)
        if self.k is None:
            counts, start = np.zeros(0, dtype=np.int64), _index(lo, k)
        else:
            assert k >= self.k, "canonical k never decreases"
            counts, start = _coarsen(self.counts, self.start, k - self.k)
        first, last = _index(lo, k), _index(hi, k)
        out = np.zeros(last - first + 1, dtype=np.int64)
        out[start - first : start - first + counts.size] = counts
        self.k, self.start, self.counts, self.lo, self.hi = k, first, out, lo, hi

    def add(self, values: np.ndarray, lo: float | None = None, hi: float | None = None) -> None:
        """Count finite ``values`` (1-D float32/float64); ``lo``/``hi`` are their min/max if known."""
        if values.size == 0:
            return
        lo = float(values.min()) if lo is None else lo
        hi = float(values.max()) if hi is None else hi
        self._relayout(lo, hi)
        assert self.k is not None
        self.counts += _bin_counts(values, self.k, self.start, self.counts.size)

    def merge(self, other: GrowableHistogram) -> None:
        """Add the counts of ``other`` exactly (both are brought to the canonical layout of the union)."""
        if other.k is None:
            return
        self._relayout(other.lo, other.hi)
        assert self.k is not None
        counts, start = _coarsen(other.counts, other.start, self.k - other.k)
        self.counts[start - self.start : start - self.start + counts.size] += counts

    def to_histogram(self) -> Histogram | None:
        """The public, immutable :class:`Histogram` (None when empty)."""
        if self.k is None:
            return None
        return Histogram(self.counts.copy(), self.width, self.origin)


def fold_abs(counts: np.ndarray, start: int, k: int, cap: int) -> tuple[np.ndarray, int]:
    """Histogram of ``|x|`` from a signed one: bins ``[j*w', (j+1)*w')`` from 0, at most ``cap`` of them.

    Signed bin ``i < 0`` covers ``[i*w, (i+1)*w)`` so ``|x|`` lies in bin ``-i-1`` (its open/closed ends
    swap, which only matters for values exactly on an edge). If the largest ``|x|`` bin index exceeds
    ``cap - 1`` the result is coarsened by aligned powers of two, exactly as :func:`_coarsen`.

    Returns:
        ``(abs_counts, k_abs)``; bin width is ``2**k_abs``.
    """
    index = np.arange(start, start + counts.size, dtype=np.int64)
    folded = np.where(index >= 0, index, -index - 1)
    top = int(folded.max())
    d = 0
    while (top >> d) + 1 > cap:
        d += 1
    out = np.zeros((top >> d) + 1, dtype=np.int64)
    np.add.at(out, folded >> d, counts)
    return out, k + d


# --------------------------------------------------------------------------------------------------
# Range searches over a histogram (pure functions of counts and layout)
# --------------------------------------------------------------------------------------------------


def percentile_range(
    counts: np.ndarray, origin: float, width: float, percentile: float, lo: float, hi: float
) -> tuple[float, float]:
    """Two-sided percentile range of a histogram, linearly interpolated inside the bin.

    With ``N`` values and cumulative counts ``C``, the value at fraction ``q`` lies in the first bin
    ``j`` with ``C[j] >= q*N``, at ``origin + (j + (q*N - C[j-1]) / counts[j]) * width`` (values are
    taken as uniform within a bin). ``min`` is the value at ``1 - p/100``, ``max`` the one at ``p/100``;
    both are clamped to the data's ``[lo, hi]``, and ``min = 0`` for non-negative data (``lo >= 0``) so
    e.g. ReLU outputs keep an exact zero at the grid's end.
    """
    cdf = np.cumsum(counts)
    total = float(cdf[-1])
    targets = np.array([(1.0 - percentile / 100.0) * total, percentile / 100.0 * total])
    j = np.minimum(np.searchsorted(cdf, targets, side="left"), counts.size - 1)
    before = np.where(j > 0, cdf[j - 1], 0)
    in_bin = counts[j]
    frac = np.divide(targets - before, in_bin, out=np.zeros(2), where=in_bin > 0)
    values = origin + (j + np.clip(frac, 0.0, 1.0)) * width
    rmin = 0.0 if lo >= 0.0 else min(max(float(values[0]), lo), hi)
    rmax = min(max(float(values[1]), lo), hi)
    return rmin, max(rmin, rmax)


def _xlogx(values: np.ndarray) -> np.ndarray:
    """``x * log(x)`` with ``0 * log(0) = 0``."""
    values = np.asarray(values, dtype=np.float64)
    return values * np.log(np.where(values > 0, values, 1.0))


def entropy_threshold(abs_counts: np.ndarray, width: float, num_quantized_bins: int) -> float:
    """TensorRT's KL-divergence threshold over a histogram of ``|x|`` (bins ``[j*width, (j+1)*width)``).

    For every candidate ``i`` in ``num_quantized_bins .. n`` (all of them, vectorized):

    * reference ``P = h[:i]`` with the clipped mass ``o_i = sum(h[i:])`` added to the last bin;
    * ``Q``: ``h[:i]`` (without the outliers, as TensorRT) merged into ``num_quantized_bins`` groups of
      ``m = i // num_quantized_bins`` bins (the last group takes the remainder), each group's sum
      ``G_g`` spread evenly over the ``nz_g`` bins where ``P`` is non-zero (zero bins stay zero);
    * ``KL(P/N || Q/(N - o_i)) = (sum P log P - sum_g P_g log(G_g / nz_g)) / N + log((N - o_i) / N)``,
      where ``P_g`` is ``P``'s mass in group ``g``. Prefix sums give each term in O(1) per group, so the
      search costs ``O(n * num_quantized_bins)``.

    Unlike TensorRT no epsilon smoothing is applied: a candidate where ``Q`` is 0 but ``P`` is not (the
    outliers land in an empty last group) has infinite divergence and is never chosen; nor is one
    clipping more than 1% of the values (:func:`_clips_too_much`: at a spike, KL barely notices the
    clipped mass); the last candidate (no clipping) is always allowed. As in NVIDIA's pytorch-quantization, the first bin's
    count is replaced by the second's (exact zeros, e.g. half of a ReLU output, would otherwise dominate
    whichever group holds bin 0 and push the threshold down to ``2 * num_quantized_bins`` bins), and
    ties go to the largest threshold (less clipping).

    Returns:
        The threshold ``i * width`` (an upper bin edge). With ``n <= num_quantized_bins`` there is
        nothing to gain from clipping and the upper edge of the last non-empty bin is returned.
    """
    h = np.asarray(abs_counts, dtype=np.float64)
    nonzero = np.flatnonzero(h)
    if nonzero.size == 0:
        return 0.0
    if h.size <= num_quantized_bins:
        return float((nonzero[-1] + 1) * width)
    h = h.copy()
    h[0] = h[1]  # the exact zeros of ReLU-like data would swamp the first group (pytorch-quantization)
    candidates, kl = kl_divergences(h, num_quantized_bins)
    kl = np.where(_clips_too_much(h, candidates), np.inf, kl)
    last_best = kl.size - 1 - int(np.argmin(kl[::-1]))
    return float(candidates[last_best] * width)


#: Largest fraction of the values an entropy threshold may clip (see :func:`_clips_too_much`).
ENTROPY_MAX_CLIPPED = 0.01


def _clips_too_much(h: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidates clipping more than :data:`ENTROPY_MAX_CLIPPED` of the values.

    KL folds the clipped mass into ``P``'s last bin, so a threshold at a spike (a constant channel
    next to varying ones, the smallest of values away from 0, one of two clusters) changes ``P``'s
    shape little however much it clips: the divergence is then small or 0 (``P`` and ``Q`` the same
    spike) and such a threshold won, clipping 44% to 99% of the values (fuzz regressions
    ``test_entropy_*``). The method is meant to cut sparse outliers (TensorRT's thresholds clip
    ~1e-4 of Gaussian or Laplace data), which this bound leaves alone."""
    cum = np.concatenate([[0.0], np.cumsum(h)])
    return cum[-1] - cum[candidates] > ENTROPY_MAX_CLIPPED * cum[-1]


def kl_divergences(h: np.ndarray, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """``(candidates, KL)`` of :func:`entropy_threshold` for every candidate bin count ``nq .. len(h)``."""
    n = h.size
    cum = np.concatenate([[0.0], np.cumsum(h)])
    cum_nz = np.concatenate([[0], np.cumsum(h > 0)])
    cum_plogp = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    total = cum[-1]
    i = np.arange(nq, n + 1)
    if total == 0:
        return i, np.full(i.size, np.inf)
    outliers = total - cum[i]
    sum_plogp = cum_plogp[i - 1] + _xlogx(h[i - 1] + outliers)  # P's last bin holds the outliers
    m = i // nq
    starts = m[:, None] * np.arange(nq)[None, :]
    ends = starts + m[:, None]
    ends[:, -1] = i
    group = cum[ends] - cum[starts]  # G_g, from h only
    nz = (cum_nz[ends] - cum_nz[starts]).astype(np.float64)
    nz[:, -1] += (h[i - 1] == 0) & (outliers > 0)  # P's last bin may be non-zero only thanks to o_i
    p_group = group.copy()
    p_group[:, -1] += outliers
    finite = ((group > 0) | (p_group == 0)).all(axis=1)
    ratio = np.where(group > 0, group / np.maximum(nz, 1.0), 1.0)
    cross = np.sum(p_group * np.log(ratio), axis=1)
    kept = total - outliers
    with np.errstate(divide="ignore"):
        kl = (sum_plogp - cross) / total + np.log(kept / total)
    return i, np.where(finite & (kept > 0), kl, np.inf)


def _tail_errors(centres: np.ndarray, counts: np.ndarray, bounds: np.ndarray, below: bool) -> np.ndarray:
    """Squared clipping error ``sum_j c_j * (x_j - b)**2`` over the bins beyond each bound ``b``."""
    gap = (bounds[:, None] - centres[None, :]) if below else (centres[None, :] - bounds[:, None])
    gap = np.maximum(gap, 0.0)
    return (gap * gap) @ counts


def _clipped_counts(centres: np.ndarray, counts: np.ndarray, bounds: np.ndarray, below: bool) -> np.ndarray:
    """Number of values whose bin centre lies beyond each bound (below it, or above it)."""
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    if below:
        return cum[np.searchsorted(centres, bounds, side="left")]
    return cum[-1] - cum[np.searchsorted(centres, bounds, side="right")]


def mse_range(
    counts: np.ndarray,
    origin: float,
    width: float,
    lo: float,
    hi: float,
    levels: int,
    symmetric: bool,
    num_candidates: int = 128,
) -> tuple[float, float]:
    """Clip range minimizing the expected squared quantization error of a histogram.

    For a candidate range ``[a, b]`` (always ``a <= 0 <= b``: the grid contains zero, see
    :mod:`onnxq.calibration.qparams`) with step ``s = (b - a) / levels``, taking each bin's values at its
    centre ``x_j``::

        E(a, b) = sum_{a <= x_j <= b} c_j * s**2 / 12        (uniform rounding error inside)
                + sum_{x_j < a} c_j * (a - x_j)**2 + sum_{x_j > b} c_j * (x_j - b)**2   (clipping)

    Candidates: symmetric ``[-t, t]`` for ``t = A*k/K`` (``A = max(|lo|, |hi|)``, ``k = 1..K``);
    asymmetric: every pair ``a = lo*k/K`` (or 0 when ``lo >= 0``) and ``b = hi*k/K`` (or 0 when
    ``hi <= 0``), searched jointly: the clipping terms of the two ends are independent, so the
    ``K x K`` error table is two ``K x n`` matrix products plus a broadcast. Ties go to the wider range.

    Returns:
        ``(min, max)``: the chosen range clamped to the data (``min = 0`` for non-negative data).
    """
    c = np.asarray(counts, dtype=np.float64)
    centres = origin + (np.arange(c.size) + 0.5) * width
    total = c.sum()
    factors = np.arange(1, num_candidates + 1) / num_candidates
    if symmetric:
        absmax = max(abs(lo), abs(hi))
        t = absmax * factors
        lows, highs = -t[:, None], t[:, None]  # paired: shape (K, 1)
        err_low = _tail_errors(centres, c, -t, below=True)[:, None]
        err_high = _tail_errors(centres, c, t, below=False)[:, None]
        inside = total - _clipped_counts(centres, c, -t, True)[:, None] - _clipped_counts(centres, c, t, False)[:, None]
    else:
        a = lo * factors if lo < 0.0 else np.zeros(1)
        b = hi * factors if hi > 0.0 else np.zeros(1)
        lows, highs = a[:, None], b[None, :]
        err_low = _tail_errors(centres, c, a, below=True)[:, None]
        err_high = _tail_errors(centres, c, b, below=False)[None, :]
        inside = total - _clipped_counts(centres, c, a, True)[:, None] - _clipped_counts(centres, c, b, False)[None, :]
    step = (highs - lows) / levels
    error = err_low + err_high + np.maximum(inside, 0.0) * step * step / 12.0
    spread = np.broadcast_to(highs - lows, error.shape)
    best = error.min()
    tied = error <= best + 1e-12 * abs(best)
    choice = np.unravel_index(np.argmax(np.where(tied, spread, -np.inf)), error.shape)
    rmin = float(np.broadcast_to(lows, error.shape)[choice])
    rmax = float(np.broadcast_to(highs, error.shape)[choice])
    rmin = 0.0 if lo >= 0.0 else min(max(rmin, lo), hi)
    rmax = min(max(rmax, lo), hi)
    return rmin, max(rmin, rmax)
