"""Fusion passes: fold BatchNormalization into linear ops, MatMul + Add into Gemm."""

from __future__ import annotations

from . import fold_affine, fold_affine_forward, fold_batchnorm, fuse_activations, fuse_matmul_add  # noqa: F401  (imported to register the passes)
