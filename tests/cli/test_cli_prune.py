"""CLI: onnxq prune for every method, the --max-drop search, reports, and bad input as one line + exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import build
from onnxq import ir
from onnxq.passes.pruning import check_nm_sparsity
from tests.helpers import invoke, random_feeds, run


def _written(path: Path, src: Path) -> onnx.ModelProto:
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    feeds = random_feeds(src, dims={"N": 2})
    assert [o.shape for o in run(path, feeds)] == [o.shape for o in run(src, feeds)]
    return proto


def test_magnitude_with_report(mlp: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    code, stdout, err = invoke("prune", str(mlp), "-o", str(out), "--method", "magnitude", "--sparsity", "0.5", "--skip-first-last", "--report", str(report))
    assert code == 0, err
    assert "layer2/fc/matmul" in stdout and "50.0%" in stdout and "first/last layer" in stdout
    _written(out, mlp)
    data = json.loads(report.read_text())
    assert data["pass"] == "prune-magnitude" and data["options"]["skip_first_last"] is True
    assert data["stats"]["layers"]["layer2/fc/matmul"]["after"] == 0.5 and data["search"] is None


def test_nm_channel_lowrank_cluster(cnn: Path, tmp_path: Path) -> None:
    code, _, err = invoke("prune", str(cnn), "-o", str(tmp_path / "nm.onnx"), "--method", "nm", "--nm", "2:4")
    assert code == 0, err
    proto = _written(tmp_path / "nm.onnx", cnn)
    w = next(onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == "stage1/block1/conv1/weight")
    assert check_nm_sparsity(w, 1, 2, 4)
    code, stdout, err = invoke("prune", str(cnn), "-o", str(tmp_path / "ch.onnx"), "--method", "channel", "--sparsity", "0.5", "--round-to", "8")
    assert code == 0, err
    assert "stem/conv" in stdout and "graph output" in stdout
    _written(tmp_path / "ch.onnx", cnn)
    assert (tmp_path / "ch.onnx").stat().st_size < 0.5 * cnn.stat().st_size
    code, _, err = invoke("prune", str(cnn), "-o", str(tmp_path / "c.onnx"), "--method", "cluster", "--bits", "4", "--min-params", "256")
    assert code == 0, err
    _written(tmp_path / "c.onnx", cnn)
    assert (tmp_path / "c.onnx").stat().st_size < 0.45 * cnn.stat().st_size
    mobilenet = tmp_path / "mobilenet.onnx"
    mobilenet.write_bytes(build("mobilenet").SerializeToString())
    code, stdout, err = invoke("prune", str(mobilenet), "-o", str(tmp_path / "lr.onnx"), "--method", "lowrank", "--energy", "0.9", "--data", "synthetic:2")
    assert code == 0, err
    assert "energy kept" in stdout and "vs original on 2 samples" in stdout
    _written(tmp_path / "lr.onnx", mobilenet)


def test_max_drop_search(mlp: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        np.savez(data / f"{i}.npz", input=np.random.default_rng(i).standard_normal((2, 32)).astype(np.float32))
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    code, stdout, err = invoke("prune", str(mlp), "-o", str(out), "--method", "magnitude", "--max-drop", "0.02", "--data", str(data), "--report", str(report))
    assert code == 0, err
    assert "best step: sparsity" in stdout and "synthetic" not in stdout
    search = json.loads(report.read_text())["search"]
    assert search["option"] == "sparsity" and search["best_step"] is not None
    assert search["curve"][-1]["ok"] is False and all(c["ok"] for c in search["curve"][:-1])
    code, stdout, err = invoke("prune", str(mlp), "-o", str(out), "--method", "channel", "--max-drop", "0.9", "--steps", "0.1,0.2", "--metric", "top1")
    assert code == 0, err
    assert "synthetic (random) samples" in stdout


def test_search_budget_cuts_the_search_and_the_report_says_so(mlp: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    args = ("--method", "magnitude", "--max-drop", "0.5", "--steps", "0.1,0.2,0.3", "--search-budget", "1e-9", "--report", str(report))
    code, stdout, err = invoke("prune", str(mlp), "-o", str(out), *args)
    assert code == 0, err
    search = json.loads(report.read_text())["search"]
    assert search["cut_short"] is True and len(search["curve"]) == 1 and search["seconds"] >= 0  # the first step always runs
    assert "time budget spent after 1 step(s)" in stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "magnitude", "--sparsity", "1.5"], r"sparsity must be in [0, 1)"),
        (["--method", "magnitude"], "exactly one of"),
        (["--method", "magnitude", "--sparsity", "0.5", "--layer", "nope"], "layer 'nope' does not exist"),
        (["--method", "magnitude", "--sparsity", "0.5", "--bits", "4"], "--bits does not apply to --method magnitude"),
        (["--method", "channel", "--sparsity", "1.0"], "every channel"),
        (["--method", "channel", "--criterion", "apoz"], "needs --data"),
        (["--method", "nm", "--nm", "2-4"], "--nm expects N:M"),
        (["--method", "cluster", "--max-drop", "0.1"], "--max-drop works with"),
        (["--method", "magnitude", "--max-drop", "1e-9", "--steps", "0.9"], "no step kept cosine"),
        (["--method", "magnitude", "--sparsity", "0.5", "--search-budget", "5"], "--search-budget bounds the --max-drop search"),
    ],
)
def test_bad_input_is_one_line_exit_2(mlp: Path, tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = invoke("prune", str(mlp), "-o", str(tmp_path / "o.onnx"), *args)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_refuses_to_overwrite_input(mlp: Path) -> None:
    code, _, err = invoke("prune", str(mlp), "-o", str(mlp), "--method", "magnitude", "--sparsity", "0.5")
    assert code == 2 and "never overwrites its input" in err
    assert ir.load(mlp)  # untouched and still valid
