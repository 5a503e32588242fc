"""Cleanup passes: shape inference, constant handling, dead code, no-ops, deduplication, opset upgrade."""

from __future__ import annotations

from . import (  # noqa: F401  (imported to register the passes)
    constants_to_initializers,
    dedupe_initializers,
    eliminate_dead_code,
    fold_constants,
    infer_shapes,
    remove_noops,
    upgrade_opset,
)
