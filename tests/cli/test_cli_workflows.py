"""The seams between commands, and failures late in a run: calibrate → convert --ranges, --replay,
a report that cannot be written after the model was, an invalid output blamed on onnxq."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import build
from onnxq import ir
from onnxq.errors import InvalidModelError
from tests.cli._corpus import assert_ok, mlp, snapshot, write
from tests.helpers import cosine, invoke, random_feeds, run


def test_calibrate_then_convert_ranges_with_hardswish(tmp_path: Path) -> None:
    """calibrate prepares the model as convert does (HardSwish expanded), so its ranges fit."""
    src = write(tmp_path, "mobilenet.onnx", build("mobilenet"))
    assert "HardSwish" in {n.op_type for n in onnx.load(src).graph.node}
    ranges, out = tmp_path / "ranges.json", tmp_path / "q.onnx"
    assert_ok(["calibrate", src, "--data", "synthetic:4", "--dim", "N=1", "-o", str(ranges)])
    for fmt in ("qdq", "qoperator"):
        assert_ok(["convert", src, "--ranges", str(ranges), "-o", str(out), "--format", fmt])
        onnx.checker.check_model(onnx.load(str(out)), full_check=True)
        feeds = random_feeds(src, seed=1, dims={"N": 1})
        assert cosine(run(src, feeds)[0], run(out, feeds)[0]) > 0.9, fmt


def test_replay_of_own_report_and_of_another_models(tmp_path: Path) -> None:
    src, other = mlp(tmp_path), write(tmp_path, "cnn.onnx", build("cnn"))
    report = tmp_path / "report.json"
    args = ["--data", "synthetic:4", "--dim", "N=1"]
    assert_ok(["convert", src, "-o", str(tmp_path / "a.onnx"), *args, "--report", str(report)])
    assert json.loads(report.read_text())["model_digest"]
    assert_ok(["convert", src, "-o", str(tmp_path / "b.onnx"), *args, "--replay", str(report)])
    assert_ok(["convert", src, "-o", str(tmp_path / "c.onnx"), *args, "--replay", str(report)])
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "c.onnx").read_bytes()
    before = snapshot(tmp_path)
    code, _, err = invoke("convert", other, "-o", str(tmp_path / "d.onnx"), *args, "--replay", str(report))
    assert code == 2 and "another model" in err and str(report) in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_report_that_fails_after_the_model_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model is staged first; a report write failing then must not leave the model behind."""
    from onnxq.cli import _common

    def full(path: Path, data: object) -> None:
        Path(path).write_bytes(b"{")  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    src = mlp(tmp_path)
    monkeypatch.setattr(_common, "write_json", full)
    before = snapshot(tmp_path)
    code, _, err = invoke("convert", src, "-o", str(tmp_path / "q.onnx"), "--mode", "dynamic", "--report", str(tmp_path / "r.json"))
    assert code == 2 and err.strip() == f"error: cannot write --report '{tmp_path / 'r.json'}': No space left on device"
    assert snapshot(tmp_path) == before


def test_invalid_output_is_blamed_on_onnxq_not_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The final check of what onnxq wrote fails (the passes' own checks still pass)."""
    src = mlp(tmp_path)
    real_check = ir.check

    def failing_check(model: ir.Model, *, full: bool = True) -> None:
        if model.source.startswith("onnxq's"):
            raise InvalidModelError(f"{model.source}: fails the ONNX checker: broken on purpose")
        real_check(model, full=full)

    monkeypatch.setattr(ir, "check", failing_check)
    before = snapshot(tmp_path)
    code, _, err = invoke("convert", src, "-o", str(tmp_path / "q.onnx"), "--mode", "dynamic")
    line = err.strip()
    assert code == 1 and line.startswith(f"internal error: onnxq's dynamic conversion for '{src}': fails the ONNX checker")
    assert "bug in onnxq" in line and len(line.splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_sixteen_bit_activations_still_convert_as_qdq(tmp_path: Path) -> None:
    src = write(tmp_path, "cnn.onnx", build("cnn"))
    out = tmp_path / "q.onnx"
    assert_ok(["convert", src, "-o", str(out), "--data", "synthetic:2", "--dim", "N=1", "--activation-type", "uint16", "--no-tune"])
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    dq = [n for n in onnx.load(str(out)).graph.node if n.op_type == "DequantizeLinear"]
    assert dq and np.isfinite(run(out, random_feeds(src, dims={"N": 1}))[0]).all()
