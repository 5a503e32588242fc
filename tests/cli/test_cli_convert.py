"""``onnxq convert`` / ``eval`` / ``bench`` end to end (click's CliRunner), and their bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import build
from onnxq import ir
from onnxq.api import quantize_static
from tests.helpers import cosine, invoke, random_feeds, run


@pytest.fixture()
def calib(tmp_path: Path) -> Path:
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        np.savez(folder / f"{i}.npz", input=rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    return folder


def test_convert_end_to_end(cnn: Path, calib: Path, tmp_path: Path) -> None:
    out = tmp_path / "cnn.int8.onnx"
    report = tmp_path / "report.json"
    digest = hashlib.sha256(cnn.read_bytes()).hexdigest()
    code, stdout, stderr = invoke("convert", str(cnn), "-o", str(out), "--data", str(calib), "--no-tune", "--report", str(report))
    assert code == 0, stderr
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    rep = json.loads(report.read_text())
    assert rep["quantized_nodes"] > 10 and rep["bytes_after"] < 0.4 * rep["bytes_before"]  # int8 weights + scales
    assert {"pipeline", "passes", "float_nodes", "ranges"} <= set(rep)
    assert all({"node", "op", "reason"} <= set(d) for d in rep["float_nodes"])
    assert hashlib.sha256(cnn.read_bytes()).hexdigest() == digest
    feeds = random_feeds(cnn, seed=3, dims={"N": 1})
    assert cosine(run(cnn, feeds)[0], run(out, feeds)[0]) > 0.995
    # deterministic output and the same result through the Python API
    out2 = tmp_path / "again.onnx"
    invoke("convert", str(cnn), "-o", str(out2), "--data", str(calib), "--no-tune")
    assert out.read_bytes() == out2.read_bytes()
    from onnxq.data import open_source

    api = quantize_static(str(cnn), open_source(str(calib), build("cnn")), tune=False)
    assert ir.to_proto(api.model).SerializeToString() == onnx.load(str(out)).SerializeToString()


def test_convert_qoperator_and_reused_ranges(cnn: Path, calib: Path, tmp_path: Path) -> None:
    ranges = tmp_path / "ranges.json"
    code, _, err = invoke("calibrate", str(cnn), "--data", str(calib), "-o", str(ranges))
    assert code == 0, err
    out = tmp_path / "q.onnx"
    code, _, err = invoke("convert", str(cnn), "-o", str(out), "--ranges", str(ranges), "--format", "qoperator")
    assert code == 0, err
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QLinearConv" in ops
    assert "latency tuning skipped" in err  # no sample inputs with --ranges alone


def test_convert_recipe(cnn: Path, calib: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[[passes]]\npass = "cleanup"\n\n[[passes]]\npass = "calibrate"\nmethod = "percentile"\n\n'
        '[[passes]]\npass = "annotate-quantization"\nexclude_op_types = ["Gemm"]\n\n[[passes]]\npass = "insert-qdq"\n'
    )
    out = tmp_path / "q.onnx"
    report = tmp_path / "rep.json"
    code, _, err = invoke("convert", str(cnn), "-o", str(out), "--data", str(calib), "--recipe", str(recipe), "--report", str(report))
    assert code == 0, err
    reasons = {d["op"]: d["reason"] for d in json.loads(report.read_text())["float_nodes"]}
    assert reasons["Gemm"] == "op type excluded by the user"


def test_convert_options(cnn: Path, calib: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    code, _, err = invoke(
        "convert", str(cnn), "-o", str(out), "--data", str(calib), "--no-tune", "--activation-type", "int8",
        "--per-tensor", "--exclude-nodes", "stem/.*", "--keep-last", "1", "--method", "mse",
    )
    assert code == 0, err
    m = ir.load(out)
    dqs = [n for n in m.graph.nodes if n.op == "DequantizeLinear"]
    assert all("axis" not in n.attrs for n in dqs)
    assert any(ir.const_value(n.inputs[2]).dtype == np.int8 for n in dqs if ir.is_constant(n.inputs[2]) and ir.const_value(n.inputs[0]).dtype != np.int32)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "needs --data"),
        (["--data", "missing_folder"], "does not exist"),
        (["--data", "synthetic:2", "--recipe", "nope.toml"], "does not exist"),
        (["--data", "synthetic:2", "--exclude-nodes", "("], "invalid node-name regex"),
    ],
)
def test_convert_bad_input(cnn: Path, tmp_path: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.onnx"
    code, _, err = invoke("convert", str(cnn), "-o", str(out), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_convert_ranges_of_other_model(cnn: Path, tmp_path: Path) -> None:
    other = tmp_path / "mlp.onnx"
    other.write_bytes(build("mlp").SerializeToString())
    ranges = tmp_path / "r.json"
    invoke("calibrate", str(other), "--data", "synthetic:2", "-o", str(ranges))
    code, _, err = invoke("convert", str(cnn), "-o", str(tmp_path / "q.onnx"), "--ranges", str(ranges))
    assert code == 2 and "another model" in err and not (tmp_path / "q.onnx").exists()


def test_eval_and_bench(cnn: Path, calib: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    invoke("convert", str(cnn), "-o", str(out), "--data", str(calib), "--no-tune")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(i % 10) for i in range(8)) + "\n")
    code, stdout, err = invoke("eval", str(cnn), str(out), "--data", str(calib), "--labels", str(labels), "--json")
    assert code == 0, err
    data = json.loads(stdout)
    o = data["outputs"][0]
    assert o["samples"] == 8 and o["cosine"] > 0.99 and o["sqnr_db"] > 20 and o["top1_agreement"] >= 0.875
    assert o["top1_accuracy_reference"] is not None and data["candidate_bytes"] < data["reference_bytes"]
    code, stdout, err = invoke("bench", str(cnn), str(out), "--runs", "5", "--warmup", "1", "--dim", "N=1", "--json")
    assert code == 0, err
    bench = json.loads(stdout)
    assert [m["model"] for m in bench["models"]] == [str(cnn), str(out)]
    assert bench["models"][0]["speedup_vs_first"] == 1.0 and bench["models"][1]["median_ms"] > 0


def test_eval_output_mismatch(cnn: Path, tmp_path: Path) -> None:
    other = tmp_path / "mlp.onnx"
    other.write_bytes(build("mlp").SerializeToString())
    code, _, err = invoke("eval", str(cnn), str(other), "--data", "synthetic:2", "--dim", "N=1")
    assert code == 2 and len(err.strip().splitlines()) == 1


MODE_CASES = [("dynamic", [], "DynamicQuantizeMatMul"), ("weight-only", ["--weight-bits", "4", "--block-size", "32"], "MatMulNBits"), ("fp16", [], "Cast")]


@pytest.mark.parametrize("mode, extra, op", MODE_CASES)
def test_convert_modes(tmp_path: Path, mode: str, extra: list[str], op: str) -> None:
    src = tmp_path / "t.onnx"
    src.write_bytes(build("transformer", hidden=128, layers=1).SerializeToString())
    out = tmp_path / f"{mode}.onnx"
    report = tmp_path / "r.json"
    code, stdout, err = invoke("convert", str(src), "-o", str(out), "--mode", mode, "--report", str(report), *extra)
    assert code == 0, err
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert op in ops
    assert json.loads(report.read_text())["mode"] == mode
    f = random_feeds(src, seed=0, dims={"batch": 1, "seq": 8})
    assert cosine(run(src, f)[0], run(out, f)[0]) > 0.99


def test_weight_only_qdq_on_old_opset_upgrades(tmp_path: Path) -> None:
    src = tmp_path / "t.onnx"
    src.write_bytes(build("transformer", hidden=128, layers=1).SerializeToString())
    out = tmp_path / "q.onnx"
    code, _, err = invoke("convert", str(src), "-o", str(out), "--mode", "weight-only", "--weight-format", "qdq")
    assert code == 0, err
    m = onnx.load(str(out))
    assert {o.domain: o.version for o in m.opset_import}[""] >= 21
