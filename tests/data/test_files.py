"""Reading data files without pickle (corrupt, truncated, object arrays) and label files."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from onnxq.data import InputSpec, NpyFolderSource, NpzFileSource, NpzFolderSource, load_labels
from onnxq.errors import CalibrationDataError
from tests.data._helpers import IMG, error

# ------------------------------------------------------------------------------------------ loading


def test_corrupt_npz_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "0.npz").write_bytes(b"this is not a zip file")
    message = error(NpzFolderSource(folder, IMG))
    assert message.startswith(f"{folder / '0.npz'}: cannot read as .npz (BadZipFile")


def test_truncated_npz_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).standard_normal((4, 1, 3, 8, 8)).astype(np.float32))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CalibrationDataError, match=f"^{path}: cannot read as .npz") as info:
        list(NpzFileSource(path, IMG))
    assert info.value.__cause__ is not None


def test_object_arrays_in_npz_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CalibrationDataError) as info:
        list(NpzFileSource(path, IMG))
    assert str(info.value) == (
        f"{path}: array 'x': holds Python objects (dtype object); onnxq never unpickles data — save numeric arrays"
    )


def test_pickled_npy_and_plain_pickles_are_refused(tmp_path: Path) -> None:
    spec = [InputSpec("x", np.float32, (3,))]
    object_npy = tmp_path / "obj.npy"
    np.save(object_npy, np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(CalibrationDataError, match="holds Python objects"):
        list(NpyFolderSource(object_npy, spec))
    plain = tmp_path / "plain.npy"
    plain.write_bytes(pickle.dumps(np.zeros(3, np.float32)))
    with pytest.raises(CalibrationDataError, match=f"^{plain}: not a valid .npy array"):
        list(NpyFolderSource(plain, spec))


def test_npz_member_that_is_not_npy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(CalibrationDataError, match="member 'notes.txt' is not an .npy array"):
        list(NpzFileSource(path, IMG))


# ---------------------------------------------------------------------------------------------- labels


def test_labels_file_text_ints_strings_and_npy(tmp_path: Path) -> None:
    (tmp_path / "ints.txt").write_text("3\n1\n 2 \n\n")
    (tmp_path / "words.txt").write_text("hello\n\n42\n")
    np.save(tmp_path / "labels.npy", np.array([5, 6]))
    assert load_labels(tmp_path / "ints.txt") == [3, 1, 2]
    assert load_labels(tmp_path / "words.txt") == ["hello", "", "42"]
    assert load_labels(tmp_path / "labels.npy") == [5, 6]
    np.save(tmp_path / "bad.npy", np.zeros((2, 2)))
    with pytest.raises(CalibrationDataError, match=r"has shape \(2, 2\), expected one label per sample"):
        load_labels(tmp_path / "bad.npy")
    with pytest.raises(CalibrationDataError, match="labels file 'nope.txt' does not exist"):
        load_labels("nope.txt")
