"""open_source: dispatch by kind, sample limits, errors, --dim parsing and labels files paired with samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxq.data import (
    LimitedSource,
    NpyFolderSource,
    NpzFileSource,
    NpzFolderSource,
    ReaderSource,
    SyntheticSource,
    open_source,
    parse_dims,
)
from onnxq.errors import CalibrationDataError, ConfigError
from tests.data._helpers import IMAGE_MODEL, IMG, TEXT_MODEL, Reader, error, image, npz_folder

# ------------------------------------------------------------------------------------------ open_source


def test_open_source_dispatches_by_kind(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path, [{"x": image()}])
    np.savez(tmp_path / "one.npz", x=np.zeros((2, 1, 3, 8, 8), np.float32))
    np.save(tmp_path / "one.npy", image())
    npy_folder = tmp_path / "npys"
    npy_folder.mkdir()
    np.save(npy_folder / "a.npy", image())
    assert isinstance(open_source(str(folder), IMAGE_MODEL), NpzFolderSource)
    assert isinstance(open_source(tmp_path / "one.npz", IMAGE_MODEL), NpzFileSource)
    assert isinstance(open_source(tmp_path / "one.npy", IMG), NpyFolderSource)
    assert isinstance(open_source(npy_folder, IMG), NpyFolderSource)
    assert isinstance(open_source(Reader([{"x": image()}]), IMG), ReaderSource)
    synthetic = open_source("synthetic:3", TEXT_MODEL, dims={"seq": 4}, seed=1)
    assert isinstance(synthetic, SyntheticSource) and len(synthetic) == 3 and synthetic.seed == 1


def test_open_source_samples_limits_and_sizes_synthetic(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path, [{"x": image(value=i)} for i in range(5)])
    limited = open_source(folder, IMG, samples=2)
    assert isinstance(limited, LimitedSource) and len(limited) == 2
    assert [float(s["x"].flat[0]) for s in limited] == [0.0, 1.0]
    assert limited.describe() == f"first 2 samples of 5 .npz files in {folder}/"
    assert len(list(open_source("synthetic", IMG, samples=12))) == 12
    assert len(list(open_source("synthetic:3", IMG, samples=12))) == 3
    with pytest.raises(ConfigError, match="must be >= 1, got 0"):
        open_source(folder, IMG, samples=0)


def test_open_source_missing_path() -> None:
    with pytest.raises(CalibrationDataError) as info:
        open_source("no/such/calib", IMG)
    assert str(info.value) == "calibration data 'no/such/calib' does not exist"


def test_open_source_empty_folder_names_folder_and_kinds(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CalibrationDataError) as info:
        open_source(tmp_path, IMG)
    assert str(info.value) == (
        f"folder '{tmp_path}' contains no calibration data: expected .npz, .npy or image "
        "(.bmp .jpeg .jpg .png) files"
    )


def test_open_source_mixed_kinds_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=image())
    np.save(tmp_path / "b.npy", image())
    with pytest.raises(CalibrationDataError, match="mixes kinds of data files: npz \\(a.npz\\), npy \\(b.npy\\)"):
        open_source(tmp_path, IMG)


def test_open_source_bad_specs(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(CalibrationDataError, match="data.csv' is not a supported kind"):
        open_source(tmp_path / "data.csv", IMG)
    with pytest.raises(ConfigError, match="'synthetic:abc': expected synthetic:N"):
        open_source("synthetic:abc", IMG)
    with pytest.raises(CalibrationDataError, match="cannot use a int as data"):
        open_source(3, IMG)


def test_samples_feed_onnxruntime(tmp_path: Path) -> None:
    session = ort.InferenceSession(TEXT_MODEL.SerializeToString(), providers=["CPUExecutionProvider"])
    for sample in open_source("synthetic:2", TEXT_MODEL, dims={"seq": 6}):
        (out,) = session.run(None, sample)
        np.testing.assert_array_equal(out, sample["input_ids"] + 1)


# ---------------------------------------------------------------------------------------- parse_dims


def test_parse_dims() -> None:
    assert parse_dims(["seq=128", "x:2=4"]) == {"seq": 128, "x:2": 4}
    with pytest.raises(ConfigError, match="--dim 'seq': expected NAME=N"):
        parse_dims(["seq"])
    with pytest.raises(ConfigError, match="--dim 'seq=0'"):
        parse_dims(["seq=0"])


# ---------------------------------------------------------------------------------------------- labels


def test_labels_file_pairs_with_samples(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path, [{"x": image()} for _ in range(3)])
    (tmp_path / "labels.txt").write_text("7\n8\n9\n")
    source = open_source(folder, IMG, labels_file=tmp_path / "labels.txt")
    assert [label for _, label in source.iter_with_labels()] == [7, 8, 9]
    assert [label for _, label in open_source(folder, IMG, samples=2).iter_with_labels()] == [None, None]


def test_labels_file_count_must_match(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path, [{"x": image()} for _ in range(3)])
    (tmp_path / "few.txt").write_text("7\n8\n")
    (tmp_path / "many.txt").write_text("7\n8\n9\n10\n")
    assert error(NpzFolderSource(folder, IMG, labels_file=tmp_path / "few.txt")) == (
        f"{folder / '2.npz'}: labels file '{tmp_path / 'few.txt'}' has only 2 labels, none for sample #2"
    )
    assert error(NpzFolderSource(folder, IMG, labels_file=tmp_path / "many.txt")) == (
        f"labels file '{tmp_path / 'many.txt'}' has 4 labels but the data has 3 samples"
    )
    limited = open_source(folder, IMG, samples=2, labels_file=tmp_path / "many.txt")
    assert [label for _, label in limited.iter_with_labels()] == [7, 8]


def test_inline_label_and_labels_file_conflict(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path, [{"x": image(), "label": 1}])
    (tmp_path / "labels.txt").write_text("1\n")
    assert "carries its own label and a labels file" in error(
        NpzFolderSource(folder, IMG, labels_file=tmp_path / "labels.txt")
    )
