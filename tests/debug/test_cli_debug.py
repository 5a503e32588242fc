"""``onnxq debug`` and ``onnxq convert --report-html`` end to end, and every bad input as one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.debug._models import float_model, quantized, with_scale_times
from tests.helpers import invoke


@pytest.fixture()
def cnn_pair(tmp_path: Path) -> tuple[Path, Path]:
    f, q = tmp_path / "cnn.onnx", tmp_path / "cnn.int8.onnx"
    onnx.save(float_model("cnn"), str(f))
    onnx.save(with_scale_times(quantized("cnn"), "stage1/block2/conv1/W1_scale", 50.0), str(q))
    return f, q


def test_debug_prints_the_blamed_layer_and_writes_json_and_html(cnn_pair: tuple[Path, Path], tmp_path: Path) -> None:
    f, q = cnn_pair
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    code, stdout, err = invoke("debug", str(f), str(q), "--data", "synthetic:4", "--dim", "N=1", "--top", "3", "--json", str(out_json), "--html", str(out_html))
    assert code == 0, err
    lines = stdout.splitlines()
    assert "local SQNR dB" in lines[1] and lines[2].startswith("stage1/block2/conv1 ")  # worst first
    assert "error jumps first at: stage1/block2/relu1/out" in stdout
    data = json.loads(out_json.read_text())
    assert data["matched"] == len(data["tensors"]) == 20 and data["blame"][0]["layer"] == "stage1/block2/conv1"
    page = out_html.read_text()
    assert 'id="tensors"' in page and "<svg" in page and "data:image/png;base64," in page
    assert not any(ref in page for ref in ('src="http', 'href="http', "url(http", "@import"))  # nothing to fetch
    assert not list(tmp_path.glob(".onnxq-staging-*")) and not list(tmp_path.glob("*.tmp"))


def test_convert_report_html_shows_the_decisions_and_the_layers(tmp_path: Path) -> None:
    f = tmp_path / "cnn.onnx"
    onnx.save(float_model("cnn"), str(f))
    page = tmp_path / "conversion.html"
    code, _, err = invoke("convert", str(f), "-o", str(tmp_path / "q.onnx"), "--data", "synthetic:4", "--dim", "N=1", "--no-tune", "--report-html", str(page))
    assert code == 0, err
    text = page.read_text()
    assert "What stayed float, and why" in text and "Tuner steps" in text and "Layer-wise error" in text and 'id="tensors"' in text
    assert "q.onnx" in text


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_models_that_do_not_correspond(tmp_path: Path) -> None:
    f, q = tmp_path / "cnn.onnx", tmp_path / "det.int8.onnx"
    onnx.save(float_model("cnn"), str(f))
    onnx.save(quantized("transformer"), str(q))
    line = _one_line_error(*invoke("debug", str(f), str(q), "--data", "synthetic:2", "--dim", "N=1")[::2])
    assert "do not correspond: inputs differ (FLOAT: input; QUANT: input_ids, attention_mask)" in line


def test_a_quant_model_with_nothing_quantized(tmp_path: Path) -> None:
    f = tmp_path / "cnn.onnx"
    onnx.save(float_model("cnn"), str(f))
    line = _one_line_error(*invoke("debug", str(f), str(f), "--data", "synthetic:2", "--dim", "N=1")[::2])
    assert "has no quantized activations" in line and "onnxq eval" in line


@pytest.mark.parametrize("arrays", [{"wrong": (1, 3, 32, 32)}, {"input": (1, 3, 16, 16)}])
def test_data_that_does_not_fit_gives_the_errors_convert_gives(tmp_path: Path, arrays: dict[str, tuple[int, ...]]) -> None:
    f, q, data = tmp_path / "cnn.onnx", tmp_path / "cnn.int8.onnx", tmp_path / "bad.npz"
    onnx.save(float_model("cnn"), str(f))
    onnx.save(quantized("cnn"), str(q))
    np.savez(data, **{k: np.zeros(v, np.float32) for k, v in arrays.items()})
    debug = _one_line_error(*invoke("debug", str(f), str(q), "--data", str(data))[::2])
    convert = _one_line_error(*invoke("convert", str(f), "-o", str(tmp_path / "x.onnx"), "--data", str(data), "--no-tune")[::2])
    assert debug.removeprefix("error: ") in convert
    assert not (tmp_path / "x.onnx").exists()
