"""A layer's input statistics for AdaRound: ``H = E[x xᵀ]`` and ``μ = E[x]`` over its input patches.

A Conv is a matrix product per output position: output ``y[g, o]`` at one position is
``W[g, o, :] · p[g, :]`` with ``p`` the input patch (``C/g · kh · kw`` values of group ``g``, zero
padding included). So for any weight change ``Δ`` the layer's mean squared output change is a
quadratic form in ``Δ``::

    E ||Δ p||² = Σ_g Σ_o Δ[g, o] · H[g] · Δ[g, o]ᵀ        H[g] = E[p[g] p[g]ᵀ]

and its mean output change is ``Δ[g, o] · μ[g]``. Accumulating ``H`` and ``μ`` over the calibration
samples (streamed; positions sub-sampled per sample, seeded) turns AdaRound's per-layer
reconstruction ``||W x - W̃ x||²`` into a loss that never touches the data again: each optimizer
step costs ``O · F²``, whatever the number of samples. Gemm and MatMul are the one-group case with
rows of the (flattened) input as patches.
"""

from __future__ import annotations

import numpy as np

from ._layers import Linear

__all__ = ["InputMoments", "patches"]


def _conv_patches(layer: Linear, x: np.ndarray, positions: int, rng: np.random.Generator) -> np.ndarray:
    """``[R, groups, F]`` input patches at up to ``positions`` random output positions of a 2-D Conv."""
    attrs = layer.node.attrs
    kh, kw = (int(k) for k in layer.weight.shape[2:])
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
    sh, sw = (int(s) for s in attrs.get("strides", [1, 1]))
    dh, dw = (int(d) for d in attrs.get("dilations", [1, 1]))
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    total = n * oh * ow
    idx = np.sort(rng.choice(total, size=positions, replace=False)) if total > positions else np.arange(total)
    batch, rest = np.divmod(idx, oh * ow)
    row, col = np.divmod(rest, ow)
    rows = row[:, None] * sh + np.arange(kh)[None, :] * dh
    cols = col[:, None] * sw + np.arange(kw)[None, :] * dw
    p = xp[batch[:, None, None, None], np.arange(c)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
    return p.reshape(len(idx), layer.groups, -1)


def patches(layer: Linear, x: np.ndarray, positions: int, rng: np.random.Generator) -> np.ndarray:
    """The layer's input as ``[R, groups, F]`` rows (sub-sampled to ``positions``), float64."""
    x = np.asarray(x, np.float64)
    if layer.op == "Conv":
        return _conv_patches(layer, x, positions, rng)
    rows = x.reshape(-1, x.shape[-1])
    if len(rows) > positions:
        rows = rows[np.sort(rng.choice(len(rows), size=positions, replace=False))]
    return rows[:, None, :]


class InputMoments:
    """Running ``H = E[p pᵀ]`` (``[groups, F, F]``) and ``μ = E[p]`` (``[groups, F]``) of one layer's patches."""

    def __init__(self, layer: Linear) -> None:
        g, f = layer.rows().shape[0], layer.rows().shape[2]
        self.gram = np.zeros((g, f, f))
        self.total = np.zeros((g, f))
        self.count = 0

    def update(self, p: np.ndarray) -> None:
        """Add ``[R, groups, F]`` patches."""
        if p.shape[1] == 1:
            self.gram[0] += p[:, 0, :].T @ p[:, 0, :]
        else:
            self.gram += np.einsum("rgf,rgh->gfh", p, p, optimize=True)
        self.total += p.sum(axis=0)
        self.count += p.shape[0]

    @property
    def hessian(self) -> np.ndarray:
        return self.gram / max(self.count, 1)

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)
