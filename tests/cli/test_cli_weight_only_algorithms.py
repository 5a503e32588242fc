"""``onnxq convert --mode weight-only --algorithm gptq|awq --data ...`` end to end (click's CliRunner).

On the transformer builder (hidden 64, one layer: six MatMul weights) with ``--data synthetic:8``:
the written model passes the ONNX checker (full_check), runs on onnxruntime, is byte-identical when
converted twice, and on held-out inputs its output error against fp32 is at most RTN's (measured,
seeded: GPTQ about 0.43x, AWQ about 0.96x; asserted <= 0.7x and <= 1.0x). Without ``--data`` both
algorithms are refused with one line and exit code 2, and nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import build
from onnxq import ir
from tests.helpers import invoke, op_count, random_feeds, run

DIMS = ("--dim", "batch=2", "--dim", "seq=16")
#: held-out output MSE vs fp32 at most this times RTN's (see the module docstring for the measured values)
MARGIN = {"gptq": 0.7, "awq": 1.0}


@pytest.fixture(scope="module")
def transformer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "transformer.onnx"
    path.write_bytes(build("transformer").SerializeToString())
    return path


def convert(src: Path, out: Path, *args: str) -> tuple[int, str, str]:
    return invoke("convert", str(src), "-o", str(out), "--mode", "weight-only", *args)


def held_out_mse(src: Path, model: Path) -> float:
    feeds = [random_feeds(str(src), seed=100 + i, dims={"batch": 2, "seq": 16}) for i in range(6)]
    return float(np.mean([np.square(run(str(model), f)[0] - run(str(src), f)[0]).mean() for f in feeds]))


@pytest.mark.parametrize("algorithm", ["gptq", "awq"])
def test_convert_with_an_algorithm_end_to_end(algorithm: str, transformer: Path, tmp_path: Path) -> None:
    out, again, report = tmp_path / "q.onnx", tmp_path / "again.onnx", tmp_path / "report.json"
    code, _, err = convert(transformer, out, "--algorithm", algorithm, "--data", "synthetic:8", *DIMS, "--report", str(report))
    assert code == 0, err
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert op_count(ir.load(str(out)), "MatMulNBits") == 6
    stats = next(p for p in json.loads(report.read_text())["passes"] if p["pass"] == "quantize-weights-blockwise")["stats"]
    assert stats["algorithm"] == algorithm and stats["calibrated_layers"] == 6 and stats["fallback"] == {}
    code, _, err = convert(transformer, again, "--algorithm", algorithm, "--data", "synthetic:8", *DIMS)
    assert code == 0, err
    assert out.read_bytes() == again.read_bytes()
    rtn = tmp_path / "rtn.onnx"
    assert convert(transformer, rtn)[0] == 0
    assert held_out_mse(transformer, out) <= MARGIN[algorithm] * held_out_mse(transformer, rtn)


@pytest.mark.parametrize("algorithm", ["gptq", "awq"])
def test_no_data_is_one_line_and_exit_2(algorithm: str, transformer: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    code, stdout, err = convert(transformer, out, "--algorithm", algorithm)
    assert code == 2 and not out.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"--algorithm {algorithm} needs calibration samples: give --data" in lines[0]


def test_too_few_rows_are_reported_and_rounded_to_nearest(tmp_path: Path) -> None:
    src = tmp_path / "mlp.onnx"
    src.write_bytes(build("mlp", in_features=64, hidden=(128, 128)).SerializeToString())
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    # 16 samples x 6 rows = 96 rows: enough for the first layer (K = 64), not the second (K = 128)
    code, _, err = convert(src, out, "--algorithm", "gptq", "--data", "synthetic:16", "--dim", "N=6", "--report", str(report))
    assert code == 0, err
    assert op_count(ir.load(str(out)), "MatMulNBits") == 2
    stats = next(p for p in json.loads(report.read_text())["passes"] if p["pass"] == "quantize-weights-blockwise")["stats"]
    assert stats["calibrated_layers"] == 1
    (reason,) = stats["fallback"].values()
    assert reason.startswith("only 96 calibration rows for K=128 inputs (GPTQ's Hessian would be singular") and reason.endswith("rounded to nearest")
