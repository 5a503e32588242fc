"""AdaRound's optimization for one layer, in numpy (Nagel et al. 2020, "Up or Down? Adaptive Rounding").

Each weight is rounded either down or up: ``W̃ = s · (⌊W/s⌋ + h(V) - z')`` (``z'`` the zero point;
the integer stays within the grid the scale was chosen for). ``h`` is the rectified sigmoid::

    h(V) = clip(σ(V) · (ζ - γ) + γ, 0, 1)            ζ = 1.1, γ = -0.1

which reaches exactly 0 and 1 (so the optimum can be a hard rounding). The loss is the layer's
output reconstruction plus a regularizer driving every ``h`` to 0 or 1::

    L(V) = Σ_g Σ_o ΔW[g,o] H[g] ΔW[g,o]ᵀ / L_rtn  +  λ · mean(1 - |2h(V) - 1|^β)

with ``ΔW = W̃ - W``, ``H = E[x xᵀ]`` of the layer's float inputs (:mod:`._patches`) and ``L_rtn``
the reconstruction error of round-to-nearest (so ``λ`` means the same for every layer). ``V``
starts where ``h(V)`` equals the fractional part (``W̃ = W``); the first 20% of steps optimize the
reconstruction alone, then ``β`` anneals from 20 to 2 so the regularizer first leaves ``h`` free and
finally pulls it to {0, 1}. "Steps" here is progress: the larger of steps/``iterations`` and
elapsed/``seconds``, so a layer that hits its time budget still goes through the whole schedule.
Adam (plain numpy) updates ``V``; the gradient of the reconstruction
with respect to ``W̃`` is ``2 ΔW H / L_rtn`` and ``dW̃/dV = s · h'(V)`` (0 where ``h`` is clipped).

The result is the hard rounding ``h ≥ 0.5``, kept only if its reconstruction error is below
round-to-nearest's (otherwise round-to-nearest stays). Weights whose nearest integer is a grid
end keep it: the extremes define the scale ``insert-qdq`` recomputes from the written weights.
Steps stop at ``iterations`` or at the time budget, whichever comes first. ``λ`` defaults to 10
(the reconstruction term is normalized to 1 at round-to-nearest, the regularizer is a mean: much
weaker per weight than the paper's λ = 0.01 against an unnormalized sum); measured on the
compensation test models, λ = 0.01 leaves most ``h`` undecided and the hard rounding barely beats
round-to-nearest, λ = 3-10 halves the reconstruction error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["RoundingProblem", "RoundingResult", "learn_rounding", "reconstruction"]

_ZETA, _GAMMA = 1.1, -0.1
_WARMUP = 0.2
_BETA = (20.0, 2.0)


@dataclass
class RoundingProblem:
    """One layer, in rows layout ``[groups, O/groups, F]``.

    Attributes:
        w: the float weights.
        scale: their scale, broadcastable onto ``w`` (per tensor, or ``[groups, O/groups, 1]``).
        zero_point: likewise.
        lo / hi: the grid ends (integers including the zero point).
        rtn: round-to-nearest integers (as QuantizeLinear computes them).
        hessian: ``E[x xᵀ]`` per group, ``[groups, F, F]``.
    """

    w: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    lo: int
    hi: int
    rtn: np.ndarray
    hessian: np.ndarray

    def weights(self, q: np.ndarray) -> np.ndarray:
        return self.scale * (q - self.zero_point)


@dataclass
class RoundingResult:
    """The chosen integers and what the choice did.

    ``cut_short``: the time budget ended the steps before ``iterations`` (the schedule still ran
    to its end, compressed into fewer steps).
    """

    q: np.ndarray
    rtn_error: float
    error: float
    steps: int
    seconds: float
    flipped: int
    improved: bool
    cut_short: bool = False


def reconstruction(delta: np.ndarray, hessian: np.ndarray) -> float:
    """``Σ_g Σ_o Δ[g,o] H[g] Δ[g,o]ᵀ``: the mean squared output change caused by weight change ``delta``."""
    return float(np.sum(np.matmul(delta, hessian) * delta))


def _h(v: np.ndarray) -> np.ndarray:
    return np.clip(1.0 / (1.0 + np.exp(-v)) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)


def _dh(v: np.ndarray) -> np.ndarray:
    sig = 1.0 / (1.0 + np.exp(-v))
    raw = sig * (_ZETA - _GAMMA) + _GAMMA
    return np.where((raw > 0.0) & (raw < 1.0), sig * (1.0 - sig) * (_ZETA - _GAMMA), 0.0)


def _initial_v(rest: np.ndarray) -> np.ndarray:
    """``V`` with ``h(V) = rest`` (the fractional part), so the soft weights start equal to ``W``."""
    p = np.clip((rest - _GAMMA) / (_ZETA - _GAMMA), 1e-6, 1 - 1e-6)
    return np.log(p / (1.0 - p))


def _beta(progress: float) -> float:
    """β at ``progress`` in (warm-up, 1]: linear from 20 down to 2."""
    frac = min(1.0, max(0.0, (progress - _WARMUP) / (1.0 - _WARMUP)))
    return _BETA[0] + (_BETA[1] - _BETA[0]) * frac


def learn_rounding(p: RoundingProblem, *, iterations: int, seconds: float, lam: float = 10.0, lr: float = 0.01) -> RoundingResult:
    """Learn the rounding of one layer (see the module docstring); never worse than round-to-nearest."""
    start = time.perf_counter()
    rtn_error = reconstruction(p.weights(p.rtn) - p.w, p.hessian)
    floor = np.floor(p.w / p.scale) + p.zero_point
    free = (p.rtn > p.lo) & (p.rtn < p.hi) & (floor >= p.lo) & (floor + 1 <= p.hi)
    if rtn_error <= 0 or not free.any():
        return RoundingResult(p.rtn, rtn_error, rtn_error, 0, time.perf_counter() - start, 0, False)
    # the steps run in float32 (half the time of float64 on the O·F² products); errors are judged in float64
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    hessian, w, scale, zp, fixed = f32(p.hessian), f32(p.w), f32(p.scale), f32(p.zero_point), f32(p.rtn - floor)
    v = f32(_initial_v(p.w / p.scale + p.zero_point - floor))
    base = f32(floor)
    m, s2 = np.zeros_like(v), np.zeros_like(v)
    n_free = int(free.sum())
    steps, progress = 0, 0.0
    while progress < 1.0:
        steps += 1
        h = np.where(free, _h(v), fixed)
        delta = scale * (base + h - zp) - w
        grad_w = np.matmul(delta, hessian) * np.float32(2.0 / rtn_error)
        grad = grad_w * scale * _dh(v)
        if progress > _WARMUP:
            beta = _beta(progress)
            t = 2.0 * h - 1.0
            grad = grad + lam / n_free * (-beta * np.abs(t) ** (beta - 1.0) * np.sign(t) * 2.0) * _dh(v)
        grad = np.where(free, grad, np.float32(0.0))
        m = np.float32(0.9) * m + np.float32(0.1) * grad
        s2 = np.float32(0.999) * s2 + np.float32(0.001) * grad * grad
        v = v - np.float32(lr / (1 - 0.9**steps)) * m / (np.sqrt(s2 / np.float32(1 - 0.999**steps)) + np.float32(1e-8))
        progress = max(steps / iterations, (time.perf_counter() - start) / seconds)
    q = np.where(free, floor + (_h(v) >= 0.5), p.rtn)
    error = reconstruction(p.weights(q) - p.w, p.hessian)
    improved = error < rtn_error
    chosen = q if improved else p.rtn
    flipped = int(np.count_nonzero(chosen != p.rtn))
    return RoundingResult(chosen, rtn_error, min(error, rtn_error), steps, time.perf_counter() - start, flipped, improved, steps < iterations)
