"""Tests of ``models.zoo``: fetching pretrained PP-OCR models shipped inside a PyPI wheel.

Tests that need ``rapidocr-onnxruntime`` skip cleanly when it is not installed; the error paths
use a fake entry whose package cannot exist, so they run everywhere.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models import ModelArgumentError, zoo
from onnxq.errors import OnnxqError


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the zoo cache at a fresh temp dir so tests never touch the real cache."""
    cache = tmp_path / "zoo-cache"
    monkeypatch.setenv("ONNXQ_ZOO_CACHE", str(cache))
    return cache


@pytest.fixture
def missing_entry(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register a zoo entry whose package is certainly not installed."""
    fake = dataclasses.replace(zoo.ZOO["ppocr-cls"], name="fake", package="onnxq-no-such-package",
                               import_name="onnxq_no_such_package_for_tests")
    monkeypatch.setitem(zoo.ZOO, "fake", fake)
    return "fake"


def test_entries_describe_the_three_ppocr_models() -> None:
    assert set(zoo.ZOO) == {"ppocr-det", "ppocr-rec", "ppocr-cls"}
    for entry in zoo.ZOO.values():
        assert entry.package == "rapidocr-onnxruntime" and entry.relative_path.endswith(".onnx")
        assert "opset" in entry.description and entry.input_notes
    with pytest.raises(dataclasses.FrozenInstanceError):
        zoo.ZOO["ppocr-det"].name = "x"  # type: ignore[misc]


def test_cache_dir_honours_the_environment(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert zoo.cache_dir() == tmp_cache
    monkeypatch.delenv("ONNXQ_ZOO_CACHE")
    assert zoo.cache_dir().parts[-2:] == (".cache", "zoo")


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_fetch_copies_into_cache_with_matching_sha256_and_runs(name: str, tmp_cache: Path) -> None:
    path = zoo.zoo_model_or_skip(name)
    assert path.parent == tmp_cache and path.is_file()
    assert zoo.sha256(path) == zoo.sha256(zoo.source_path(name))
    entry = zoo.ZOO[name]
    model = onnx.load(str(path))
    assert model.graph.input[0].name == entry.input_name
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(entry.example_shape, np.float32)
    assert np.isfinite(sess.run(None, {entry.input_name: x})[0]).all()


def test_fetch_reuses_a_good_copy_and_replaces_a_corrupt_one(tmp_cache: Path) -> None:
    path = zoo.zoo_model_or_skip("ppocr-cls")
    stamp = path.stat().st_mtime_ns
    assert zoo.fetch("ppocr-cls") == path and path.stat().st_mtime_ns == stamp
    path.write_bytes(b"not a model")
    assert zoo.sha256(zoo.fetch("ppocr-cls")) == zoo.sha256(zoo.source_path("ppocr-cls"))
    assert [p.name for p in tmp_cache.iterdir()] == ["ppocr-cls.onnx"]  # no temp files left


def test_unknown_name_is_an_error_listing_valid_names() -> None:
    with pytest.raises(ModelArgumentError, match="valid names: ppocr-cls"):
        zoo.fetch("yolo")


def test_missing_package_raises_zoo_unavailable(missing_entry: str) -> None:
    with pytest.raises(zoo.ZooUnavailable) as exc:
        zoo.fetch(missing_entry)
    assert isinstance(exc.value, OnnxqError)
    assert exc.value.name == missing_entry and "pip install onnxq-no-such-package" in exc.value.reason


def test_zoo_model_or_skip_skips_when_the_package_is_missing(missing_entry: str) -> None:
    with pytest.raises(pytest.skip.Exception, match="onnxq-no-such-package is not installed"):
        zoo.zoo_model_or_skip(missing_entry)


def test_install_runs_pip_for_the_package(missing_entry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    class Result:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found"

    def fake_run(cmd: list[str], **_: object) -> Result:
        calls.append(cmd)
        return Result()

    monkeypatch.setattr(zoo.subprocess, "run", fake_run)
    with pytest.raises(zoo.ZooUnavailable, match="No matching distribution"):
        zoo.fetch(missing_entry, install=True)
    assert calls and calls[0][1:] == ["-m", "pip", "install", "onnxq-no-such-package"]


def test_cli_prints_name_sha256_path(tmp_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo.zoo_model_or_skip("ppocr-cls")
    assert zoo.main(["fetch", "ppocr-cls"]) == 0
    name, digest, path = capsys.readouterr().out.split()
    assert name == "ppocr-cls" and Path(path) == tmp_cache / "ppocr-cls.onnx"
    assert digest == zoo.sha256(Path(path))


def test_cli_reports_unavailable_models_with_exit_2(missing_entry: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo.main([missing_entry]) == 2
    assert "is not installed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        zoo.main(["nope"])
