"""The default ``cleanup`` pipeline on every bundled builder and every real zoo model.

Numerics are compared with onnxruntime fp32 on the same seeded inputs; the written model must pass
the full checker. Real models skip with a reason when their package is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import BUILDERS, build
from models.zoo import zoo_model_or_skip
from onnxq import PassManager, ir, make_pass
from tests.helpers import assert_same_outputs, checked, op_count, random_feeds, run

DIMS = {"batch": 2, "seq": 12, "N": 2}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_cleanup_on_builder(name: str, tmp_path: Path) -> None:
    src = build(name)
    res = PassManager([make_pass("cleanup")], check=True).run(ir.load(src))
    model = checked(res.model)
    assert op_count(model, "BatchNormalization") == 0 or name in ("if-model",)
    out = ir.save(model, tmp_path / "clean.onnx")
    feeds = random_feeds(src, seed=1, dims=DIMS)
    assert_same_outputs(src, out, feeds, atol=1e-4, rtol=1e-3)


ZOO_INPUTS = {
    "ppocr-det": (1, 3, 96, 128),
    "ppocr-rec": (1, 3, 48, 160),
    "ppocr-cls": (1, 3, 48, 192),
}


@pytest.mark.parametrize("name", sorted(ZOO_INPUTS))
def test_cleanup_on_real_model(name: str, tmp_path: Path) -> None:
    path = zoo_model_or_skip(name)
    src = ir.load(path)
    constants_before = op_count(src, "Constant")
    res = PassManager([make_pass("cleanup")], check=True).run(src)
    model = checked(res.model)
    assert constants_before > 100 and op_count(model, "Constant") == 0  # Paddle weights became initializers
    out = ir.save(model, tmp_path / "clean.onnx")
    x = np.random.default_rng(0).random(ZOO_INPUTS[name], dtype=np.float32)
    ref = run(path, {"x": x})
    got = run(out, {"x": x})
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-3)
