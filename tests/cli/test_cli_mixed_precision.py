"""``onnxq convert --accuracy-target / --max-latency-ms / --min-speedup``: the mixed-precision search end to end.

A met target exits 0 and the report holds the precision map, the evaluations and the frontier; a
target that cannot be met writes the best plan found, says so plainly on stderr and exits 3; a
malformed target is one line and exit code 2, before any work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxq.cli.cmd_convert import TARGET_NOT_MET
from tests.helpers import invoke, run


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """8 samples of 64 rows for the mlp builder's ``input`` [N, 32]."""
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, input=rng.standard_normal((8, 64, 32)).astype(np.float32))
    return path


def test_met_target_writes_the_precision_map_and_the_frontier(mlp: Path, data: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    code, stdout, stderr = invoke("convert", str(mlp), "-o", str(out), "--data", str(data), "--accuracy-target", "agreement>=0.9", "--report", str(report))
    assert code == 0, stderr
    assert "mixed precision: points measured" in stdout and "mixed precision: chose" in stdout
    mixed = json.loads(report.read_text(encoding="utf-8"))["mixed_precision"]
    assert mixed["met"] is True and mixed["targets"] == ["agreement>=0.9"] and mixed["unmet"] == ""
    assert set(mixed["evaluations"]) == {"sensitivity", "search", "timed"} and mixed["evaluations"]["search"] >= 1
    assert mixed["precisions"] and set(mixed["precisions"].values()) <= {"int8", "dynamic-int8", "fp32"}
    assert mixed["frontier"][0]["label"] == "all lowest" and mixed["frontier"][0]["meets_accuracy"] is True
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    feeds = {"input": np.load(data)["input"][0]}
    reference, converted = run(onnx.load(str(mlp)), feeds)[0], run(onnx.load(str(out)), feeds)[0]
    assert np.mean(np.argmax(reference, -1) == np.argmax(converted, -1)) >= 0.9


def test_replay_of_a_search_writes_the_same_file(mlp: Path, data: Path, tmp_path: Path) -> None:
    first, again, report = tmp_path / "first.onnx", tmp_path / "again.onnx", tmp_path / "report.json"
    target = ["--accuracy-target", "agreement>=0.9"]
    code, _, stderr = invoke("convert", str(mlp), "-o", str(first), "--data", str(data), *target, "--report", str(report))
    assert code == 0, stderr
    code, stdout, stderr = invoke("convert", str(mlp), "-o", str(again), "--data", str(data), *target, "--replay", str(report))
    assert code == 0, stderr
    assert again.read_bytes() == first.read_bytes()
    assert "nothing evaluated or timed" in stderr + stdout


def test_impossible_target_exits_3_and_says_so(mlp: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    code, _, stderr = invoke("convert", str(mlp), "-o", str(out), "--data", str(data), "--accuracy-target", "cosine>=1.01")
    assert code == TARGET_NOT_MET == 3
    assert "target not met: accuracy target cosine>=1.01 not met even with every unit fp32" in stderr
    assert "wrote the best plan found ('all fp32')" in stderr
    assert out.is_file()  # the best plan found is still written


def test_unreachable_speedup_exits_3(mlp: Path, data: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke("convert", str(mlp), "-o", str(tmp_path / "out.onnx"), "--data", str(data), "--min-speedup", "1000")
    assert code == TARGET_NOT_MET
    assert "target not met: latency constraint not met: speedup" in stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--accuracy-target", "agreement>=2"], "an agreement bar is a share in [0, 1]"),
        (["--accuracy-target", "cosine"], "has no bar"),
        (["--max-latency-ms", "0"], "max_latency_ms must be a positive number"),
        (["--accuracy-target", "cosine>=0.99", "--no-tune"], "--no-tune turns off"),
        (["--mode", "dynamic", "--min-speedup", "2"], "--min-speedup does not apply to --mode dynamic"),
        (["--accuracy-target", "cosine>=0.99", "--target", "tensorrt"], "with --target tensorrt: the mixed-precision search times its candidates"),
        (["--accuracy-target", "cosine>=0.99", "--target", "qnn"], "which does not run here"),
    ],
)
def test_bad_targets_are_one_line_and_exit_2(mlp: Path, data: Path, tmp_path: Path, flags: list[str], message: str) -> None:
    code, _, stderr = invoke("convert", str(mlp), "-o", str(tmp_path / "out.onnx"), "--data", str(data), *flags)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()
