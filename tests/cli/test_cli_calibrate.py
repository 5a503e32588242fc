"""``onnxq calibrate`` end to end, and its bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import build
from onnxq.calibration.ranges import RangeSet
from tests.helpers import invoke


def test_calibrate_npz_folder(cnn: Path, tmp_path: Path) -> None:
    data = tmp_path / "calib"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        np.savez(data / f"{i}.npz", input=rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "ranges.json"
    report = tmp_path / "report.json"
    method = ["--method", "percentile", "--percentile", "99.9"]
    code, stdout, stderr = invoke("calibrate", str(cnn), "--data", str(data), *method, "-o", str(out), "--report", str(report))
    assert code == 0, stderr
    assert "samples" in stdout and "peak RSS" in stdout
    assert "\x1b[" not in stdout + stderr  # no progress bar or colors when piped
    ranges = RangeSet.load_json(out)
    assert ranges.num_samples == 6 and len(ranges) > 10
    assert json.loads(report.read_text())["samples"] == 6
    # deterministic: same data, same file
    out2 = tmp_path / "ranges2.json"
    invoke("calibrate", str(cnn), "--data", str(data), "--method", "percentile", "--percentile", "99.9", "-o", str(out2))
    assert out.read_bytes() == out2.read_bytes()


def test_calibrate_synthetic_needs_dims(tmp_path: Path) -> None:
    path = tmp_path / "t.onnx"
    path.write_bytes(build("transformer").SerializeToString())
    code, _, err = invoke("calibrate", str(path), "--data", "synthetic:2", "-o", str(tmp_path / "r.json"))
    assert code == 2 and "seq" in err and len(err.strip().splitlines()) == 1
    code, _, err = invoke("calibrate", str(path), "--data", "synthetic:2", "--dim", "seq=8", "-o", str(tmp_path / "r.json"))
    assert code == 0, err


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "contains no calibration data"),
        (lambda d: (d.mkdir(), np.savez(d / "a.npz", wrong=np.zeros((1, 3, 32, 32), np.float32))), "wrong"),
        (lambda d: (d.mkdir(), np.savez(d / "a.npz", input=np.zeros((1, 3, 32, 32), np.float64))), "float64"),
        (lambda d: (d.mkdir(), np.savez(d / "a.npz", input=np.zeros((1, 3, 32), np.float32))), "rank"),
        (lambda d: (d.mkdir(), np.savez(d / "a.npz", input=np.full((1, 3, 32, 32), np.nan, np.float32))), "NaN"),
    ],
    ids=["missing", "empty", "wrong-name", "wrong-dtype", "wrong-rank", "nan"],
)
def test_calibrate_bad_data(cnn: Path, tmp_path: Path, make, message: str) -> None:
    data = tmp_path / "calib"
    make(data)
    out = tmp_path / "ranges.json"
    code, _, err = invoke("calibrate", str(cnn), "--data", str(data), "-o", str(out))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not out.exists()
