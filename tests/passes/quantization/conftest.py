"""Fixtures the quantization pass tests share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest

from models import build
from onnxq import ir
from tests.helpers import cosine, random_feeds, run


@pytest.fixture(scope="module")
def transformer() -> onnx.ModelProto:
    """The default transformer encoder builder (built once per test module)."""
    return build("transformer")


@pytest.fixture(scope="module")
def transformer_ref(transformer: onnx.ModelProto, request: pytest.FixtureRequest) -> tuple[dict, list]:
    """Feeds (symbolic dims from the test module's ``FEEDS_DIMS``) and onnxruntime's fp32 outputs on them."""
    feeds = random_feeds(transformer, dims=request.module.FEEDS_DIMS)
    return feeds, run(transformer, feeds)


@pytest.fixture(scope="module")
def transformer_loss(transformer: onnx.ModelProto, request: pytest.FixtureRequest) -> Callable[[ir.Model], float]:
    """A model's mean cosine loss ``1 - cos`` against the fp32 transformer on 6 held-out feeds (seeds 100-105,
    symbolic dims from the test module's ``FEEDS_DIMS``): how the weight-only algorithms are compared."""
    held = [random_feeds(transformer, seed=100 + i, dims=request.module.FEEDS_DIMS) for i in range(6)]
    refs = [run(transformer, f)[0] for f in held]

    def loss(model: ir.Model) -> float:
        return float(np.mean([1 - cosine(r, run(model, f)[0]) for r, f in zip(refs, held)]))

    return loss
