"""``onnxq profile``: tables, JSON and report for one or two models; bad input refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx.parser
import pytest

import onnxq
from models import build
from tests.cli._corpus import Case, assert_ok, assert_refused, ids, mlp, npy, write

FAST = ["--runs", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("profile")
    fp32 = build("cnn")
    write(folder, "cnn.onnx", fp32)
    onnxq.quantize_static(fp32, "synthetic:4", tune=False).save(folder / "cnn.int8.onnx")
    return str(folder / "cnn.onnx"), str(folder / "cnn.int8.onnx")


def test_two_models_print_categories_nodes_and_the_op_type_change(pair: tuple[str, str]) -> None:
    out = assert_ok(["profile", *pair, *FAST, "--top", "3"])
    assert "2 interleaved runs after 1 warm-up; inputs input=1x3x32x32" in out
    for label in ("int8 compute", "float compute", "conversions (Q/DQ/Cast)", "layout (data movement)", "rest", "total (sum of nodes)"):
        assert label in out
    assert "per op type: cnn.onnx → cnn.int8.onnx" in out and "QLinearConv" in out and "Conv " in out
    assert out.count("top 3 of") == 2
    assert "cnn.int8.onnx: float islands:" in out


def test_json_and_report_hold_the_same_profile(pair: tuple[str, str], tmp_path: Path) -> None:
    report = tmp_path / "profile.json"
    printed = json.loads(assert_ok(["profile", pair[1], *FAST, "--json", "--report", str(report)]))
    assert json.loads(report.read_text()) == printed
    (m,) = printed["models"]
    assert m["model"] == pair[1] and "delta" not in printed
    assert m["categories"]["int8_compute"]["ms"] > 0 and m["categories"]["float_compute"]["ms"] == 0
    assert m["nhwc"]["qlinear_conv"] == 11
    assert sum(c["ms"] for c in m["categories"].values()) == pytest.approx(m["total_ms"], abs=5e-4)


def test_one_model_lists_op_types(tmp_path: Path) -> None:
    out = assert_ok(["profile", mlp(tmp_path), *FAST])
    assert "per op type" in out and ("Gemm" in out or "MatMul" in out)


def _symbolic(d: Path) -> str:
    """A Conv whose input is [N, 3, H, W]: synthetic data needs its spatial size."""
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,3,H,W] image) => (float[N,4,H,W] y) <float[4,3,1,1] w = {1,0,0,0,1,0,0,0,1,1,1,1}> {
            y = Conv(image, w)
        }""")
    return write(d, "symbolic.onnx", model)


def test_shape_fills_symbolic_dims(tmp_path: Path) -> None:
    printed = json.loads(assert_ok(["profile", _symbolic(tmp_path), "--shape", "image=1,3,8,8", *FAST, "--json"]))
    assert printed["inputs"] == {"image": [1, 3, 8, 8]}


CASES = [
    Case("model-does-not-load", lambda d: ["profile", write(d, "junk.onnx", b"not a model"), *FAST], r"junk\.onnx.*not a valid ONNX file"),
    Case("second-model-missing", lambda d: ["profile", mlp(d), str(d / "nowhere.onnx"), *FAST], r"nowhere\.onnx.*does not exist"),
    Case("missing-shape", lambda d: ["profile", _symbolic(d), *FAST], r"input 'image' has symbolic dim 'H'; pass --dim H=N"),
    Case("shape-rank", lambda d: ["profile", _symbolic(d), "--shape", "image=1,3,8", *FAST], r"--shape image=1,3,8: rank 3.*'image' has rank 4"),
    Case("shape-unknown-input", lambda d: ["profile", mlp(d), "--shape", "x=1,32", *FAST], r"--shape x=.*no input 'x'.*'input'"),
    Case("data-does-not-fit", lambda d: ["profile", mlp(d), "--data", npy(d, "width.npy", np.zeros((1, 7), np.float32)), *FAST],
         r"width\.npy.*'input'.*axis 1 is 7, expected 32"),
    Case("data-wrong-dtype", lambda d: ["profile", mlp(d), "--data", npy(d, "f64.npy", np.zeros((1, 32))), *FAST],
         r"f64\.npy.*'input'.*float64.*float32"),
    Case("second-model-other-input", lambda d: ["profile", mlp(d), write(d, "cnn.onnx", build("cnn")), *FAST],
         r"model #2 '.*cnn\.onnx'.*'input' has rank 2"),
    Case("report-folder-missing", lambda d: ["profile", mlp(d), *FAST, "--report", str(d / "no" / "r.json")], r"--report.*does not exist"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, case: Case) -> None:
    assert_refused(tmp_path, case.make(tmp_path), case.expect)
