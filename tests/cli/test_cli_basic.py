"""CLI: inspect / optimize / passes / models, and bad input handled as one line + exit code 2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from models import build
from onnxq.cli import cli
from tests.helpers import assert_same_outputs, invoke, random_feeds


def test_version() -> None:
    code, out, _ = invoke("--version")
    assert code == 0 and "onnxq, version" in out


def test_inspect_json(cnn: Path) -> None:
    code, out, _ = invoke("inspect", str(cnn), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["opsets"][""] == 17
    assert data["ops"]["BatchNormalization"] > 0
    assert data["inputs"][0]["name"] == "input"
    assert data["parameters"]["count"] > 1000
    assert data["quantization"]["quantized"] is False
    assert data["flops"]["total"] > 0


def test_inspect_text(cnn: Path) -> None:
    code, out, _ = invoke("inspect", str(cnn))
    assert code == 0 and "quantization: none" in out and "FLOPs" in out


def test_optimize_default_cleanup(cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "clean.onnx"
    report = tmp_path / "report.json"
    digest = hashlib.sha256(cnn.read_bytes()).hexdigest()
    code, stdout, _ = invoke("optimize", str(cnn), "-o", str(out), "--report", str(report))
    assert code == 0, stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert_same_outputs(cnn, out, random_feeds(cnn, dims={"N": 2}), atol=1e-4)
    assert hashlib.sha256(cnn.read_bytes()).hexdigest() == digest
    data = json.loads(report.read_text())
    assert data["nodes_after"] < data["nodes_before"]
    # deterministic: the same command writes the same bytes
    out2 = tmp_path / "clean2.onnx"
    invoke("optimize", str(cnn), "-o", str(out2))
    assert out.read_bytes() == out2.read_bytes()


def test_optimize_with_pass_list_and_pipeline(cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.onnx"
    code, _, err = invoke("optimize", str(cnn), "-o", str(out), "--passes", "infer-shapes,fold-batchnorm")
    assert code == 0, err
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(out)).graph.node}
    toml = tmp_path / "p.toml"
    toml.write_text('[[passes]]\npass = "cleanup"\n')
    code, _, err = invoke("optimize", str(cnn), "-o", str(tmp_path / "b.onnx"), "--pipeline", str(toml))
    assert code == 0, err


def test_passes_lists_registry() -> None:
    code, out, _ = invoke("passes", "--json")
    assert code == 0
    names = {p["name"] for p in json.loads(out)}
    assert {"cleanup", "fold-batchnorm", "fold-constants"} <= names


def test_models_command(tmp_path: Path) -> None:
    out = tmp_path / "mlp.onnx"
    code, stdout, err = invoke("models", "mlp", "-o", str(out), "--set", "in_features=8")
    assert code == 0, err
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 8
    code, stdout, _ = invoke("models")
    assert code == 0 and "transformer" in stdout


def _bad_models(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = build("mlp").SerializeToString()
    (tmp_path / "notonnx.onnx").write_text("hello")
    (tmp_path / "trunc.onnx").write_bytes(good[: len(good) // 3])
    bad_checker = build("mlp")
    bad_checker.graph.node[0].input[0] = "nowhere"
    (tmp_path / "checker.onnx").write_bytes(bad_checker.SerializeToString())
    old = build("mlp")
    old.opset_import[0].version = 3
    (tmp_path / "opset.onnx").write_bytes(old.SerializeToString())
    for name, location in (("escape", "../../etc/passwd"), ("noext", "weights.bin")):
        ext = build("mlp")  # the first weight's data moved to an external file at ``location``
        t = ext.graph.initializer[0]
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", location
        (tmp_path / f"{name}.onnx").write_bytes(ext.SerializeToString())
    return {
        "missing": (tmp_path / "missing.onnx", "does not exist"),
        "notonnx": (tmp_path / "notonnx.onnx", "not a valid ONNX file"),
        "truncated": (tmp_path / "trunc.onnx", "ONNX"),
        "checker": (tmp_path / "checker.onnx", "checker"),
        "opset": (tmp_path / "opset.onnx", "opset 3 is not supported"),
        "escape": (tmp_path / "escape.onnx", "escapes the model's folder"),
        "missing-external": (tmp_path / "noext.onnx", "not found"),
    }


@pytest.mark.parametrize("case", ["missing", "notonnx", "truncated", "checker", "opset", "escape", "missing-external"])
@pytest.mark.parametrize("command", ["inspect", "optimize"])
def test_bad_models_one_line_exit_2(case: str, command: str, tmp_path: Path) -> None:
    path, message = _bad_models(tmp_path)[case]
    before = path.read_bytes() if path.exists() else None
    out = tmp_path / "out.onnx"
    args = [command, str(path)] + (["-o", str(out)] if command == "optimize" else [])
    code, stdout, stderr = invoke(*args)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in stderr
    assert not out.exists()
    assert (path.read_bytes() if path.exists() else None) == before


def test_debug_shows_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--debug", "inspect", str(tmp_path / "missing.onnx")])
    assert result.exit_code != 0
    assert result.exception is not None and "does not exist" in str(result.exception)


def test_optimize_refuses_to_overwrite_input(cnn: Path) -> None:
    code, _, err = invoke("optimize", str(cnn), "-o", str(cnn))
    assert code == 2 and "never overwrites its input" in err


def test_unknown_pass_is_one_line(cnn: Path, tmp_path: Path) -> None:
    code, _, err = invoke("optimize", str(cnn), "-o", str(tmp_path / "x.onnx"), "--passes", "cleanup,nope")
    assert code == 2 and "unknown pass 'nope'" in err and not (tmp_path / "x.onnx").exists()
