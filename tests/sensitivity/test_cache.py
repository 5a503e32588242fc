"""The on-disk cache: a repeated run evaluates nothing, a changed setting misses, a corrupt entry is ignored."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import onnxq
from onnxq.api._sensitivity_cache import default_cache_dir
from tests.sensitivity._util import cnn, samples


def _run(cache: Path, **kwargs: object) -> onnxq.SensitivityReport:
    return onnxq.sensitivity(cnn(), samples(), cache=cache, eval_samples=4, **kwargs)  # type: ignore[arg-type]


def _comparable(report: onnxq.SensitivityReport) -> list[dict]:
    return [{k: v for k, v in u.as_dict(0).items() if k not in ("only_quantized", "only_float")} | {
        "q": u.only_quantized.values + u.only_quantized.sqnr_db, "f": u.only_float.values + u.only_float.sqnr_db} for u in report.units]


def test_a_repeated_run_evaluates_nothing_and_gives_the_same_results(tmp_path: Path) -> None:
    cold = _run(tmp_path)
    assert cold.evaluated == cold.evaluations == 2 * len(cold.units) + 2 and cold.cached == 0 and cold.sessions == 1
    warm = _run(tmp_path)
    assert warm.evaluated == 0 and warm.cached == warm.evaluations and warm.sessions == 0
    assert _comparable(warm) == _comparable(cold)
    assert warm.to_dict()["units"][0]["only_quantized"]["cached"] is True
    assert all(json.loads(p.read_text()) for p in tmp_path.rglob("*.json"))  # plain JSON, nothing else
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_changed_setting_misses_the_cache(tmp_path: Path) -> None:
    _run(tmp_path)
    assert _run(tmp_path, metric="sqnr").evaluated > 0
    assert _run(tmp_path, per_channel=False).evaluated > 0
    assert onnxq.sensitivity(cnn(), samples(seed=1), cache=tmp_path, eval_samples=4).evaluated > 0  # other data


def test_a_corrupt_entry_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cold = _run(tmp_path)
    evaluations = sorted((tmp_path / "evaluations").glob("*.json"))
    evaluations[0].write_text("{not json")
    evaluations[1].write_text(json.dumps({"schema": 1, "key": evaluations[1].stem, "evaluation": {}, "values": ["x"], "sqnr_db": [], "seconds": 1}))
    run = next((tmp_path / "runs").glob("*.json"))
    run.write_text(json.dumps(json.loads(run.read_text()) | {"units": [{"name": 3}]}))  # valid JSON, wrong shape
    with caplog.at_level(logging.WARNING, logger="onnxq"):
        again = _run(tmp_path)
    assert again.evaluated == 2 and again.cached == again.evaluations - 2
    assert _comparable(again) == _comparable(cold)
    assert sum("sensitivity cache: ignoring" in r.getMessage() for r in caplog.records) == 3
    assert _run(tmp_path).evaluated == 0  # rewritten


def test_no_cache_reads_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXQ_CACHE_DIR", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "sensitivity"
    onnxq.sensitivity(cnn(), samples(2), eval_samples=1, use_cache=False)
    assert not (tmp_path / "root").exists()
    onnxq.sensitivity(cnn(), samples(2), eval_samples=1)
    assert list((tmp_path / "root" / "sensitivity" / "evaluations").glob("*.json"))
