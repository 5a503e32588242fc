"""Named pipelines composed of other passes.

``cleanup`` is what every conversion starts with. Its order matters: Constant nodes become
initializers first (so folding and BatchNorm folding see weights), shapes are inferred so that
``Shape`` folds and no-op Reshape/Cast are recognized, and the whole list repeats until nothing
changes (folding exposes no-ops, removing no-ops exposes folds).
"""

from __future__ import annotations

from onnxq.pass_base import register_pass
from onnxq.pass_manager import Sequential


@register_pass("cleanup")
class Cleanup(Sequential):
    """Default cleanup: constants to initializers, shape inference, folding, no-ops, BN folding, dedupe."""

    steps = 3
    members = (
        "constants-to-initializers",
        "infer-shapes",
        "fold-constants",
        "remove-noops",
        "fold-batchnorm",
        "fold-affine",
        "fuse-activations",
        "fold-affine-forward",  # after fuse-activations: a HardSwish ending in "/ 6" must fuse first
        "fuse-matmul-add",
        "dedupe-initializers",
        "eliminate-dead-code",
    )
