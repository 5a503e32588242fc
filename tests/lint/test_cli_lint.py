"""``onnxq lint``: exit code 0 when clean, 1 when a finding is an error, 2 on bad input; ``--json`` and
``--report`` are the report's versioned JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.helpers import invoke
from tests.lint import _models as m
from tests.targets._util import converted


@pytest.fixture()
def clean(tmp_path: Path) -> Path:
    path = tmp_path / "clean.onnx"
    onnx.save(converted("tensorrt", tune=False)[0], str(path))
    return path


@pytest.fixture()
def uint8_for_tensorrt(tmp_path: Path) -> Path:
    path = tmp_path / "uint8.onnx"
    onnx.save(m.activation_qdq(np.uint8), str(path))
    return path


def test_clean_model_exit_0(clean: Path) -> None:
    code, stdout, err = invoke("lint", str(clean), "--target", "tensorrt")
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == "0 error(s), 0 warning(s) for tensorrt"


def test_errors_exit_1_with_nodes_and_fix_in_the_table(uint8_for_tensorrt: Path) -> None:
    code, stdout, _ = invoke("lint", str(uint8_for_tensorrt), "--target", "tensorrt")
    assert code == 1
    row = next(line for line in stdout.splitlines() if "no-int8-kernel" in line)
    assert row.startswith("error") and "act_q, act_dq" in row and "--target tensorrt sets them" in row
    assert stdout.splitlines()[-1].startswith("2 error(s)")  # uint8 type and its zero point 128


def test_warnings_alone_exit_0(tmp_path: Path) -> None:
    path = tmp_path / "w.onnx"
    onnx.save(m.shared_weight_dq(), str(path))
    code, stdout, _ = invoke("lint", str(path))
    assert code == 0 and "dq-shared-consumers" in stdout and "0 error(s)" in stdout


def test_json_output_parses(uint8_for_tensorrt: Path, tmp_path: Path) -> None:
    report = tmp_path / "lint.json"
    code, stdout, _ = invoke("lint", str(uint8_for_tensorrt), "--target", "tensorrt", "--json", "--report", str(report))
    assert code == 1
    data = json.loads(stdout)
    assert data == json.loads(report.read_text())
    assert data["schema_version"] == 1 and data["target"] == "tensorrt" and data["errors"] >= 1
    finding = next(f for f in data["findings"] if f["rule"] == "no-int8-kernel")
    assert finding["nodes"] == ["act_q", "act_dq"] and finding["severity"] == "error" and finding["fix"]


def test_rule_filter(uint8_for_tensorrt: Path) -> None:
    code, stdout, _ = invoke("lint", str(uint8_for_tensorrt), "--target", "tensorrt", "--rule", "redundant-qdq", "--json")
    data = json.loads(stdout)
    assert data["rules"] == ["redundant-qdq"] and {f["rule"] for f in data["findings"]} <= {"redundant-qdq"} and code == 0


def test_data_measures_ranges(tmp_path: Path) -> None:
    path, data = tmp_path / "cat.onnx", tmp_path / "data"
    onnx.save(m.concat_of_disparate_ranges(), str(path))
    data.mkdir()
    np.savez(data / "0.npz", X=np.full(m.X, 0.5, np.float32))
    code, stdout, err = invoke("lint", str(path), "--data", str(data), "--json")
    assert code == 0, err
    assert "shared-scale-disparate-ranges" not in {f["rule"] for f in json.loads(stdout)["findings"]}
    code, stdout, _ = invoke("lint", str(path), "--json")
    assert "shared-scale-disparate-ranges" in {f["rule"] for f in json.loads(stdout)["findings"]}


@pytest.mark.parametrize("args", [("missing.onnx",), ("{clean}", "--target", "tpu"), ("{clean}", "--rule", "nope")])
def test_bad_input_exit_2(args: tuple[str, ...], clean: Path, tmp_path: Path) -> None:
    argv = [a.format(clean=clean) if a != "missing.onnx" else str(tmp_path / a) for a in args]
    code, stdout, err = invoke("lint", *argv)
    assert code == 2 and stdout == ""
    assert err.strip().count("\n") == 0 and err.startswith("error:")


def test_not_an_onnx_file_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a model")
    code, _, err = invoke("lint", str(path))
    assert code == 2 and "junk.onnx" in err and err.strip().count("\n") == 0
