"""``--target ort-mobile``: onnxruntime's converter writes the ``.ort`` and the reduced build's operator
config beside ``-o``, the ``.ort`` computes what the ``.onnx`` does, and a converter failure is one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxq.targets.ort_mobile as ort_mobile
from models import build
from onnxq.targets import TargetError
from onnxq.targets.ort_mobile import parse_required_operators
from tests.helpers import invoke, random_feeds, run
from tests.targets._util import summarize


@pytest.fixture(scope="module")
def mobile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One ``onnxq convert --target ort-mobile`` (the converter subprocess takes seconds): (folder, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("mobile")
    onnx.save(build("cnn"), str(folder / "cnn.onnx"))
    code, stdout, err = invoke(
        "convert", str(folder / "cnn.onnx"), "-o", str(folder / "m.onnx"), "--data", "synthetic:2", "--dim", "N=1", "--target", "ort-mobile",
        "--no-tune", "--report", str(folder / "r.json"),
    )
    assert code == 0, err
    return folder, stdout, err


def test_ort_and_operator_config_are_written_beside_the_model(mobile: tuple[Path, str, str]) -> None:
    folder, _, _ = mobile
    assert sorted(p.name for p in folder.iterdir()) == ["cnn.onnx", "m.onnx", "m.ort", "m.required_operators.config", "r.json"]
    ops = parse_required_operators((folder / "m.required_operators.config").read_text())
    assert "QLinearConv" in ops["com.microsoft"]["ops"]  # the Q/DQ units were fused before the .ort was written
    assert "Conv" not in ops.get("ai.onnx", {}).get("ops", [])
    report = json.loads((folder / "r.json").read_text())["target"]
    assert report["name"] == "ort-mobile" and report["passed"]
    assert report["validation"]["details"]["ort_bytes"] == (folder / "m.ort").stat().st_size


def test_ort_mobile_model_follows_the_onnxruntime_profile(mobile: tuple[Path, str, str]) -> None:
    folder, _, _ = mobile
    model = onnx.load(str(folder / "m.onnx"))
    onnx.checker.check_model(model, full_check=True)
    s = summarize(model)
    assert s.activation_dtypes == {"uint8"} and s.weight_dtypes == {"int8"} and set(s.weight_zero_points) == {0}
    assert all(n > 1 for n in s.conv_weight_scale_sizes) and s.int32_bias_dqs == s.biased_nodes > 0


def test_ort_matches_the_onnx(mobile: tuple[Path, str, str]) -> None:
    folder, stdout, _ = mobile
    assert "ok the .ort matches the .onnx" in stdout
    for seed in (21, 22):
        feeds = random_feeds(folder / "m.onnx", seed=seed, dims={"N": 1})
        from_onnx = run(folder / "m.onnx", feeds)[0]
        import onnxruntime as ort

        sess = ort.InferenceSession(str(folder / "m.ort"), providers=["CPUExecutionProvider"])
        from_ort = sess.run(None, feeds)[0]
        np.testing.assert_allclose(from_ort, from_onnx, atol=1e-4 * float(np.max(np.abs(from_onnx))))


def test_a_converter_failure_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert ort_mobile.CONVERTER in cmd  # the real tool is what would run
        log = "Converting models with optimization style 'Fixed'\nTraceback (most recent call last):\n  File \"x.py\"\nRuntimeError: kernel not found\n"
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=log)

    monkeypatch.setattr(ort_mobile.subprocess, "run", failing)
    onnx.save(build("cnn"), str(tmp_path / "cnn.onnx"))
    out = tmp_path / "m.onnx"
    code, _, err = invoke("convert", str(tmp_path / "cnn.onnx"), "-o", str(out), "--data", "synthetic:2", "--dim", "N=1", "--target", "ort-mobile", "--no-tune")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "ort-mobile: onnxruntime's .ort converter failed: RuntimeError: kernel not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx"]  # no model, no .ort, no config


def test_a_converter_timeout_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(cmd, ort_mobile.TIMEOUT_S)

    monkeypatch.setattr(ort_mobile.subprocess, "run", slow)
    with pytest.raises(TargetError, match=r"converter took more than \d+ s"):
        ort_mobile.convert_to_ort(build("mlp"))


def test_required_operators_config_parses_domains_and_drops_type_suffixes() -> None:
    text = (
        "# generated\n"
        "ai.onnx;13;Flatten,QuantizeLinear{\"outputs\": {\"0\": [\"uint8_t\"]}},Transpose\n"
        "com.microsoft;1;QLinearConv,QGemm\n"
        "ai.onnx;17;Flatten,Relu\n"
    )
    ops = parse_required_operators(text)
    assert ops == {"ai.onnx": {"opset": 17, "ops": ["Flatten", "QuantizeLinear", "Relu", "Transpose"]},
                   "com.microsoft": {"opset": 1, "ops": ["QGemm", "QLinearConv"]}}
    assert ort_mobile.OrtConversion(b"", b"", ops).minimal_build_ops()[0] == "ai.onnx:Flatten"


def test_a_malformed_config_line_is_a_target_error() -> None:
    with pytest.raises(TargetError, match="line 2: expected 'domain;opset;ops'"):
        parse_required_operators("ai.onnx;13;Relu\nnot a config line\n")
