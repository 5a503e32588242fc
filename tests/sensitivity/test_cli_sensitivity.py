"""``onnxq sensitivity`` end to end (click's CliRunner), and its bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli._corpus import assert_refused
from tests.helpers import invoke
from tests.sensitivity._util import BAD_LAYER, bad_layer, cnn


@pytest.fixture()
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the cnn and 8 samples; the cache lives outside it (under ``cache/``)."""
    monkeypatch.setenv("ONNXQ_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "cnn.onnx").write_bytes(cnn().SerializeToString())
    rng = np.random.default_rng(0)
    for i in range(8):
        np.savez(work / "data" / f"{i}.npz", input=rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    return work


def _args(folder: Path, *extra: str) -> list[str]:
    return ["sensitivity", str(folder / "cnn.onnx"), "--data", str(folder / "data"), "--eval-samples", "4", *extra]


def test_table_report_json_and_cache(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = folder.parent / "report.json"
    with bad_layer(monkeypatch):
        code, stdout, stderr = invoke(*_args(folder, "--metric", "sqnr", "--top", "5", "--report", str(report), "--no-cache"))
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("top 5 of 19 units, most sensitive first; metric: sqnr@logits")
    assert lines[2].split()[:3] == ["1", BAD_LAYER, "Conv+Relu"] and len(lines) == 2 + 5 + 2
    assert "38 run" not in stdout and "40 evaluations: 40 run" in stdout and "1 session(s)" in stdout
    data = json.loads(report.read_text())
    assert data["schema_version"] == 1 and data["units"][0]["name"] == BAD_LAYER and len(data["units"]) == 19
    assert {"evaluations", "evaluated", "cached", "evaluations_per_second", "seconds"} <= set(data["stats"])
    assert not (folder.parent / "cache").exists()  # --no-cache
    first = invoke(*_args(folder, "--json"))
    again = invoke(*_args(folder, "--json"))
    cold, warm = json.loads(first[1]), json.loads(again[1])
    assert cold["stats"]["evaluated"] == 40 and warm["stats"]["evaluated"] == 0 and warm["stats"]["cached"] == 40
    assert [u["name"] for u in cold["units"]] == [u["name"] for u in warm["units"]]


def test_an_unknown_metric_is_one_line_naming_it(folder: Path) -> None:
    assert_refused(folder, _args(folder, "--metric", "cosinus"), r"unknown metric 'cosinus'; valid: .*cosine")


def test_a_metric_that_raises_is_one_line_naming_it(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sens_user_metrics.py").write_text("def broken(ref, cand):\n    raise ValueError('no labels here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = assert_refused(folder, _args(folder, "--metric", "sens_user_metrics:broken"), r"sens_user_metrics:broken")
    assert "raised ValueError: no labels here" in line and "logits" in line


def test_a_missing_module_metric_is_one_line(folder: Path) -> None:
    assert_refused(folder, _args(folder, "--metric", "no_such_module_xyz:f1"), r"metric 'no_such_module_xyz:f1': cannot import module")


def test_data_that_does_not_fit_gives_the_error_convert_gives(folder: Path) -> None:
    bad = folder / "bad"
    bad.mkdir()
    np.savez(bad / "0.npz", input=np.zeros((1, 4, 32, 32), np.float32))
    args = _args(folder)
    args[3] = str(bad)
    line = assert_refused(folder, args, r"input")
    code, _, stderr = invoke("convert", str(folder / "cnn.onnx"), "--data", str(bad), "-o", str(folder.parent / "out.onnx"))
    # the same data error (convert meets it inside its calibrate pass, which prefixes the pass)
    assert code == 2 and stderr.strip().endswith(line.removeprefix("error: "))


def test_cache_flags_conflict_and_a_cache_inside_the_data_is_refused(folder: Path) -> None:
    assert_refused(folder, _args(folder, "--cache", str(folder.parent / "c"), "--no-cache"), r"--cache and --no-cache")
    assert_refused(folder, _args(folder, "--cache", str(folder / "data" / "cache")), r"inside the --data folder")


def test_budget_cuts_the_analysis_and_says_so(folder: Path) -> None:
    code, stdout, stderr = invoke(*_args(folder, "--budget", "0.000001", "--json", "--no-cache"))
    assert code == 0, stderr
    report = json.loads(stdout)
    notes = " ".join(report["notes"])
    assert "cut the analysis short" in notes and "left out of the ranking" in notes
    code, _, stderr = invoke(*_args(folder, "--budget", "0"))
    assert code == 2 and "--budget" in stderr and len(stderr.strip().splitlines()) == 1
