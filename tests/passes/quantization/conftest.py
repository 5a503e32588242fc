"""Fixtures the quantization pass tests share."""

from __future__ import annotations

import onnx
import pytest

from models import build
from tests.helpers import random_feeds, run


@pytest.fixture(scope="module")
def transformer() -> onnx.ModelProto:
    """The default transformer encoder builder (built once per test module)."""
    return build("transformer")


@pytest.fixture(scope="module")
def transformer_ref(transformer: onnx.ModelProto, request: pytest.FixtureRequest) -> tuple[dict, list]:
    """Feeds (symbolic dims from the test module's ``FEEDS_DIMS``) and onnxruntime's fp32 outputs on them."""
    feeds = random_feeds(transformer, dims=request.module.FEEDS_DIMS)
    return feeds, run(transformer, feeds)
