"""Fixtures the quantization pass tests share."""

from __future__ import annotations

import onnx
import pytest

from models import build


@pytest.fixture(scope="module")
def transformer() -> onnx.ModelProto:
    """The default transformer encoder builder (built once per test module)."""
    return build("transformer")
