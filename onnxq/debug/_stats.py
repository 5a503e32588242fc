"""Streaming per-tensor statistics: running sums and small fixed-size summaries, never the samples.

For one compared tensor, each sample folds in the float twin ``r``, QUANT's value ``c``
(accumulated error) and the cut model's value ``l`` (local error, :mod:`._local`); ``c`` and ``l``
come as the integer tensors and are dequantized ``(q - z) · s`` slice by slice:

- ``Σ r·c``, ``Σ r²``, ``Σ c²``, ``Σ (r-c)²``, ``max |r-c|``, ``Σ (r-l)²``, ``max |r-l|`` → SQNR and
  cosine with :func:`onnxq.metrics.sqnr_of` / :func:`onnxq.metrics.cosine_of` (the conventions
  ``onnxq eval`` uses), local SQNR;
- the observed float range ``[min r, max r]`` and the *saturation rate*: the share of float values
  more than half a step outside the range the scale and zero point represent (those are clipped, not
  rounded);
- with a readers' view ``(a, b)`` (:mod:`._match`), errors and saturation are measured on
  ``clip(r, a, b)``: what the readers can tell apart; the observed range and histogram stay raw;
- a histogram of the float values for the report (a systematic subsample of at most
  :data:`HIST_SAMPLE` values per sample; the bins are laid over the represented range and the first
  sample's values, widened 5%, with values beyond counted in the end bins);
- an error map of the first sample: ``|r - c|`` on the 2-D slice of the channel with the largest
  mean error, max-pooled down to at most :data:`MAP_SIDE` × :data:`MAP_SIDE`.

Each sample is processed in cache-sized slices (every statistic of a slice while it is in the CPU
cache: the arrays are read from memory about once instead of once per statistic). Sums are float64:
dot products run in float32 BLAS per slice and are added in float64; a non-finite float32 result is
recomputed in float64 (e.g. for ±1e30 attention masks).
"""

from __future__ import annotations

import math

import numpy as np

from ..metrics import cosine_of, sqnr_of
from ._qparams import QuantParams

__all__ = ["TensorAccumulator", "HIST_BINS", "HIST_SAMPLE", "MAP_SIDE"]

HIST_BINS = 80
#: Elements per slice of a sample: the few arrays of this size stay in the CPU cache between operations.
_CHUNK = 1 << 15
HIST_SAMPLE = 1 << 13
MAP_SIDE = 96


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    value = float(np.dot(a, b))
    if not math.isfinite(value):
        value = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
    return value


class TensorAccumulator:
    """The running statistics of one compared tensor (see the module docstring)."""

    def __init__(self, qparams: QuantParams | None, clip: tuple[float, float] | None = None) -> None:
        self.qparams = qparams
        self.clip = clip
        self._scale = np.float32(qparams.scale.reshape(-1)[0]) if qparams is not None else np.float32(1)
        self._zp = np.float32(qparams.zero_point.reshape(-1)[0]) if qparams is not None else np.float32(0)
        self.bounds = qparams.bounds() if qparams is not None else None
        self.dot = self.ref_sq = self.cand_sq = self.noise_sq = self.max_abs = self.abs_sum = 0.0
        self.local_sq = self.local_max = 0.0
        self.local_seen = False
        self.count = self.clipped = 0
        self.lo, self.hi = math.inf, -math.inf
        self.edges: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.error_map: np.ndarray | None = None
        self.map_caption = ""
        self.samples = 0

    def update(self, ref: np.ndarray, cand: np.ndarray, local: np.ndarray | None) -> None:
        """Fold in one sample: the float twin, QUANT's value and the cut model's value (integer
        tensors, dequantized here slice by slice, when the tensor is quantized per tensor)."""
        if ref.shape != cand.shape or (local is not None and local.shape != ref.shape):
            raise ValueError(f"shapes differ: float {list(ref.shape)}, quantized {list(cand.shape)}")
        cand, local = self._per_tensor_ints(cand), self._per_tensor_ints(local) if local is not None else None
        raw = np.ascontiguousarray(ref, dtype=np.float32).reshape(-1)
        c, lv = cand.reshape(-1), local.reshape(-1) if local is not None else None
        buffers = tuple(np.empty(min(raw.size, _CHUNK), np.float32) for _ in range(4))
        for start in range(0, raw.size, _CHUNK):
            stop = min(start + _CHUNK, raw.size)
            self._chunk(raw[start:stop], c[start:stop], lv[start:stop] if lv is not None else None, buffers)
        self.count += raw.size
        self.local_seen = self.local_seen or lv is not None
        self._histogram(raw)
        if self.samples == 0:
            r = np.clip(raw, np.float32(self.clip[0]), np.float32(self.clip[1])) if self.clip is not None else raw
            self._error_map(np.abs(r - self._float(c, np.empty(c.shape, np.float32))).reshape(ref.shape))
        self.samples += 1

    def _per_tensor_ints(self, values: np.ndarray) -> np.ndarray:
        """Integers stay integers when one scale dequantizes them (slice by slice); others become floats now."""
        values = np.ascontiguousarray(values)
        if values.dtype.kind == "f" or (self.qparams is not None and self.qparams.scale.size == 1):
            return values
        if self.qparams is None:
            return values.astype(np.float32)
        return self.qparams.dequantize(values)

    def _float(self, values: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``values`` as float32: integers dequantized ``(q - z) · s`` into ``out``."""
        if values.dtype.kind == "f" or self.qparams is None:
            return values
        np.subtract(values, self._zp, out=out, dtype=np.float32)
        return np.multiply(out, self._scale, out=out)

    def _chunk(self, raw: np.ndarray, q: np.ndarray, lq: np.ndarray | None, buffers: tuple[np.ndarray, ...]) -> None:
        """One cache-sized slice of a sample: every statistic while its values are still in the CPU cache."""
        n = raw.size
        lo, hi = float(raw.min()), float(raw.max())
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        r = np.clip(raw, np.float32(self.clip[0]), np.float32(self.clip[1]), out=buffers[0][:n]) if self.clip is not None else raw
        c = self._float(q, buffers[2][:n])
        lv = self._float(lq, buffers[3][:n]) if lq is not None else None
        d = np.subtract(r, c, out=buffers[1][:n])
        self.dot += _dot(r, c)
        self.ref_sq += _dot(r, r)
        self.cand_sq += _dot(c, c)
        self.noise_sq += _dot(d, d)
        np.abs(d, out=d)
        self.max_abs = max(self.max_abs, float(d.max()))
        self.abs_sum += float(d.sum(dtype=np.float64))
        if lv is not None:
            dl = np.subtract(r, lv, out=buffers[1][:n])
            self.local_sq += _dot(dl, dl)
            self.local_max = max(self.local_max, float(np.abs(dl, out=dl).max()))
        if self.bounds is not None:
            self._saturation(r, lo, hi)

    def _saturation(self, r: np.ndarray, lo: float, hi: float) -> None:
        if self.bounds is None or self.qparams is None:
            return
        half = 0.5 * self.qparams.step()
        low, high = self.bounds[0] - half, self.bounds[1] + half
        if self.clip is not None:
            lo, hi = max(lo, self.clip[0]), min(hi, self.clip[1])
        if lo < low:  # counted only when the sample has such values: most have none
            self.clipped += int(np.count_nonzero(r < low))
        if hi > high:
            self.clipped += int(np.count_nonzero(r > high))

    def _histogram(self, r: np.ndarray) -> None:
        if not r.size:
            return
        sub = r[:: max(1, r.size // HIST_SAMPLE)]
        sub = sub[np.isfinite(sub)]
        if self.edges is None:
            lo, hi = (float(sub.min()), float(sub.max())) if sub.size else (0.0, 1.0)
            if self.bounds is not None:
                lo, hi = min(lo, self.bounds[0]), max(hi, self.bounds[1])
            pad = 0.05 * (hi - lo) or 0.5
            self.edges = np.linspace(lo - pad, hi + pad, HIST_BINS + 1)
            self.counts = np.zeros(HIST_BINS, np.int64)
        assert self.counts is not None
        clipped = np.clip(sub, self.edges[0], self.edges[-1])
        # equal bins given as (count, range): numpy's linear-time path (explicit edges sort the values)
        self.counts += np.histogram(clipped, bins=HIST_BINS, range=(float(self.edges[0]), float(self.edges[-1])))[0]

    def _error_map(self, err: np.ndarray) -> None:
        if err.ndim >= 3:
            per_channel = err[0].reshape(err.shape[1], -1).mean(axis=1)
            channel = int(np.argmax(per_channel)) if per_channel.size else 0
            plane = err[0, channel]
            plane = plane.reshape(plane.shape[0], -1) if plane.ndim >= 2 else plane.reshape(1, -1)
            self.map_caption = f"sample 0, channel {channel} of {err.shape[1]}"
        elif err.ndim == 2:
            plane, self.map_caption = err, "sample 0"
        else:
            plane, self.map_caption = err.reshape(1, -1), "sample 0"
        self.error_map = _pool(plane, MAP_SIDE)

    def results(self) -> dict[str, float | None]:
        """SQNR, cosine, errors, local SQNR, observed range and saturation over the samples seen."""
        n = max(self.count, 1)
        return {
            "sqnr": sqnr_of(self.ref_sq, self.noise_sq) if self.count else None,
            "cosine": cosine_of(self.dot, self.ref_sq, self.cand_sq) if self.count else None,
            "max_abs": self.max_abs,
            "mean_abs": self.abs_sum / n,
            "local_sqnr": sqnr_of(self.ref_sq, self.local_sq) if self.local_seen and self.count else None,
            "local_max_abs": self.local_max if self.local_seen else None,
            "saturation": self.clipped / n if self.bounds is not None else None,
            "observed_min": self.lo if self.count else None,
            "observed_max": self.hi if self.count else None,
        }


def _pool(plane: np.ndarray, side: int) -> np.ndarray:
    """Max-pool a 2-D array down to at most ``side`` × ``side`` (blocks of equal size, edge padded)."""
    h, w = plane.shape
    fh, fw = max(1, math.ceil(h / side)), max(1, math.ceil(w / side))
    if fh == 1 and fw == 1:
        return plane.astype(np.float32)
    ph, pw = math.ceil(h / fh) * fh, math.ceil(w / fw) * fw
    padded = np.zeros((ph, pw), np.float32)
    padded[:h, :w] = plane
    return padded.reshape(ph // fh, fh, pw // fw, fw).max(axis=(1, 3))
