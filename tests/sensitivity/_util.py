"""Shared by the sensitivity tests: the cnn builder, seeded samples, and a layer made to quantize badly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

import onnxq.passes.quantization.insert_qdq as insert_qdq
from models import build

#: The layer the tests break (a 3x3 Conv in the middle of the cnn builder, Relu folded into it).
BAD_LAYER = "stage1/block1/conv1"


def cnn() -> Any:
    return build("cnn")


def samples(n: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)} for _ in range(n)]


@contextmanager
def bad_layer(monkeypatch: pytest.MonkeyPatch, node: str = BAD_LAYER, factor: float = 50.0) -> Iterator[None]:
    """Quantize ``node``'s weight with its scale multiplied by ``factor`` (its int8 values collapse
    to a few levels), as the real materialization path does it: both engines see the same layer."""
    original = insert_qdq._weight_qparams

    def tampered(values: np.ndarray, wq: Any, *rest: Any) -> Any:
        qp = original(values, wq, *rest)
        if wq.node == node and wq.kind == "weight":
            qp.scale = (qp.scale * np.float32(factor)).astype(np.float32)
        return qp

    with monkeypatch.context() as m:
        m.setattr(insert_qdq, "_weight_qparams", tampered)
        yield
