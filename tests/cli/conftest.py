"""Fixtures shared by the CLI tests: bundled models written to a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import build


@pytest.fixture()
def cnn(tmp_path: Path) -> Path:
    path = tmp_path / "cnn.onnx"
    path.write_bytes(build("cnn").SerializeToString())
    return path


@pytest.fixture()
def mlp(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    path.write_bytes(build("mlp").SerializeToString())
    return path
