"""Shared fixtures of the data-source tests: two tiny models, their input specs, sample builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
import pytest

from onnxq.data import input_specs
from onnxq.errors import CalibrationDataError

IMAGE_MODEL = onnx.parser.parse_model(
    """
    <ir_version: 8, opset_import: ["" : 17]>
    img (float[N, 3, 8, 8] x) => (float[N, 3, 8, 8] y) { y = Relu(x) }
    """
)
TEXT_MODEL = onnx.parser.parse_model(
    """
    <ir_version: 8, opset_import: ["" : 17]>
    text (int64[batch, seq] input_ids, int64[batch, seq] attention_mask) => (int64[batch, seq] y) {
        y = Add(input_ids, attention_mask)
    }
    """
)
IMG = input_specs(IMAGE_MODEL)
TEXT = input_specs(TEXT_MODEL)


def image(batch: int = 1, value: float = 0.5) -> np.ndarray:
    """A constant batch for IMAGE_MODEL's ``x``."""
    return np.full((batch, 3, 8, 8), value, dtype=np.float32)


def ids(batch: int = 1, seq: int = 5) -> dict[str, np.ndarray]:
    """A valid sample for TEXT_MODEL."""
    return {
        "input_ids": np.arange(batch * seq, dtype=np.int64).reshape(batch, seq),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
    }


def npz_folder(tmp_path: Path, samples: list[dict[str, Any]], name: str = "calib") -> Path:
    """A folder with one ``<index>.npz`` per sample."""
    folder = tmp_path / name
    folder.mkdir()
    for index, sample in enumerate(samples):
        np.savez(folder / f"{index}.npz", **sample)
    return folder


def error(source: Any) -> str:
    """The CalibrationDataError message iterating ``source`` raises (the test fails if none)."""
    with pytest.raises(CalibrationDataError) as info:
        list(source.iter_with_labels())
    return str(info.value)


class Reader:
    """onnxruntime's CalibrationDataReader protocol, with rewind()."""

    def __init__(self, samples: list[Any]) -> None:
        self.samples = samples
        self.rewind()

    def get_next(self) -> Any:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.samples)
