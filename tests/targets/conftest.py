"""Fixtures shared by the target tests."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from models import build


@pytest.fixture()
def cnn(tmp_path: Path) -> Path:
    """The cnn builder saved as a file (for the CLI)."""
    path = tmp_path / "cnn.onnx"
    onnx.save(build("cnn"), str(path))
    return path
