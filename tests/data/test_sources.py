"""The concrete sources: .npz folder and file, .npy, synthetic data and reader objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxq.data import (
    InputSpec,
    NpyFolderSource,
    NpzFileSource,
    NpzFolderSource,
    ReaderSource,
    SyntheticSource,
)
from onnxq.errors import CalibrationDataError, ConfigError
from tests.data._helpers import IMG, TEXT, Reader, error, ids, image, npz_folder

# --------------------------------------------------------------------------------------- npz folder


def test_npz_folder_yields_in_natural_order_with_symbolic_batch(tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    for index in (10, 2, 1):
        np.savez(folder / f"{index}.npz", x=image(batch=index % 3 + 1, value=index))
    (folder / "README.txt").write_text("ignored")
    (folder / ".hidden.npz").write_bytes(b"junk")
    source = NpzFolderSource(folder, IMG)
    assert len(source) == 3
    samples = list(source)
    assert [float(s["x"].flat[0]) for s in samples] == [1.0, 2.0, 10.0]
    assert [s["x"].shape[0] for s in samples] == [2, 3, 2]
    assert source.describe() == f"3 .npz files in {folder}/"


def test_npz_folder_refuses_stacked_arrays_suggesting_single_file(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path, [{"x": np.zeros((4, 1, 3, 8, 8), np.float32)}])
    assert error(NpzFolderSource(folder, IMG)) == (
        f"{folder / '0.npz'}: input 'x' has rank 5 (shape (4, 1, 3, 8, 8)), one more than the model's "
        "[N, 3, 8, 8]; a folder holds one sample per file — to stack samples along a leading axis pass one .npz file"
    )


def test_npz_folder_labels_are_carried_separately(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path, [{"x": image(), "label": 3}, {"x": image(), "labels": np.array([1, 2])}])
    pairs = list(NpzFolderSource(folder, IMG).iter_with_labels())
    assert list(pairs[0][0]) == ["x"]
    assert pairs[0][1] == 3
    np.testing.assert_array_equal(pairs[1][1], [1, 2])


def test_npz_with_both_label_keys_is_refused(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path, [{"x": image(), "label": 1, "labels": 2}])
    assert error(NpzFolderSource(folder, IMG)) == f"{folder / '0.npz'}: has both 'label' and 'labels' arrays; keep one"


def test_model_input_named_label_is_an_input_not_a_label(tmp_path: Path) -> None:
    specs = [InputSpec("x", np.float32, (2,)), InputSpec("label", np.int64, (1,))]
    folder = npz_folder(tmp_path, [{"x": np.zeros(2, np.float32), "label": np.array([4])}])
    ((sample, label),) = NpzFolderSource(folder, specs).iter_with_labels()
    assert label is None and sample["label"].tolist() == [4]


# ----------------------------------------------------------------------------------------- npz file


def test_npz_file_enumerates_leading_axis_as_views_with_labels(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.arange(5 * 3 * 64, dtype=np.float32).reshape(5, 1, 3, 8, 8), labels=np.arange(5) * 10)
    source = NpzFileSource(path, IMG)
    assert len(source) == 5
    pairs = list(source.iter_with_labels())
    assert [label for _, label in pairs] == [0, 10, 20, 30, 40]
    assert all(sample["x"].shape == (1, 3, 8, 8) for sample, _ in pairs)
    assert pairs[1][0]["x"].flat[0] == 192
    assert source.describe() == f"{path}: 5 samples"


def test_npz_file_with_input_rank_is_one_sample(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    np.savez(path, x=image(batch=4), label=7)
    source = NpzFileSource(path, IMG)
    assert len(source) == 1
    ((sample, label),) = source.iter_with_labels()
    assert sample["x"].shape == (4, 3, 8, 8) and label == 7


def test_npz_file_inputs_must_agree_on_sample_count(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, input_ids=np.zeros((10, 1, 4), np.int64), attention_mask=np.ones((8, 1, 4), np.int64))
    assert error(NpzFileSource(path, TEXT)) == (
        f"{path}: inputs disagree on the number of samples: 'input_ids' has 10, 'attention_mask' has 8"
    )


def test_npz_file_mixed_single_and_stacked_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, input_ids=np.zeros((1, 4), np.int64), attention_mask=np.ones((8, 1, 4), np.int64))
    assert "input 'input_ids' holds one sample but 'attention_mask' has a leading axis" in error(
        NpzFileSource(path, TEXT)
    )


def test_npz_file_wrong_rank_names_both_accepted_ranks(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.zeros((8, 8), np.float32))
    assert error(NpzFileSource(path, IMG)) == (
        f"{path}: input 'x' has rank 2 (shape (8, 8)), expected 4 (one sample) or 5 "
        "(samples along a leading axis) for [N, 3, 8, 8]"
    )


def test_npz_file_labels_must_match_sample_count(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.zeros((3, 1, 3, 8, 8), np.float32), labels=np.arange(2))
    assert "labels have shape (2,), expected one label per sample (3 along axis 0)" in error(
        NpzFileSource(path, IMG)
    )


def test_npz_file_sample_errors_name_the_index(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    data = np.zeros((3, 1, 3, 8, 8), np.float32)
    data[2, 0, 0, 0, 0] = np.inf
    np.savez(path, x=data)
    assert error(NpzFileSource(path, IMG)).startswith(f"{path} sample #2: input 'x' has 1 non-finite")


def test_npz_file_unknown_key_is_refused_before_slicing(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.zeros((3, 1, 3, 8, 8), np.float32), extra=np.float32(1))
    assert error(NpzFileSource(path, IMG)) == f"{path}: unknown input 'extra'; expected inputs: 'x'"


# ------------------------------------------------------------------------------------------------ npy


def test_npy_folder_one_sample_per_file(tmp_path: Path) -> None:
    folder = tmp_path / "npy"
    folder.mkdir()
    for index in range(3):
        np.save(folder / f"{index}.npy", image(value=index))
    source = NpyFolderSource(folder, IMG)
    assert len(source) == 3
    assert [float(s["x"].flat[0]) for s in source] == [0.0, 1.0, 2.0]


def test_npy_file_stacked_is_memory_mapped_and_sliced(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.arange(4 * 192, dtype=np.float32).reshape(4, 1, 3, 8, 8))
    source = NpyFolderSource(path, IMG)
    assert len(source) == 4
    samples = list(source)
    assert len(samples) == 4 and samples[3]["x"].flat[0] == 3 * 192
    assert source.describe() == f"{path}: 4 samples"


def test_npy_folder_refuses_stacked_files(tmp_path: Path) -> None:
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "0.npy", np.zeros((4, 1, 3, 8, 8), np.float32))
    assert "a folder holds one sample per file — to stack samples pass that .npy file alone" in error(
        NpyFolderSource(folder, IMG)
    )


def test_npy_needs_a_single_input_model(tmp_path: Path) -> None:
    np.save(tmp_path / "ids.npy", np.zeros((1, 4), np.int64))
    with pytest.raises(CalibrationDataError) as info:
        NpyFolderSource(tmp_path / "ids.npy", TEXT)
    assert str(info.value) == (
        ".npy data only works for single-input models; this model has inputs 'input_ids', 'attention_mask': "
        "save one .npz per sample with one array per input"
    )


# ------------------------------------------------------------------------------------------ synthetic


def test_synthetic_is_deterministic_and_follows_the_signature() -> None:
    first = list(SyntheticSource(TEXT, count=3, dims={"seq": 16}, seed=7))
    again = list(SyntheticSource(TEXT, count=5, dims={"seq": 16}, seed=7))[:3]
    other = list(SyntheticSource(TEXT, count=3, dims={"seq": 16}, seed=8))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert not all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, other))
    sample = first[0]
    assert sample["input_ids"].shape == (1, 16) and sample["input_ids"].dtype == np.int64
    assert sample["input_ids"].min() >= 0 and sample["input_ids"].max() < 100
    assert (sample["attention_mask"] == 1).all()


def test_synthetic_floats_are_clipped_normal_of_the_input_dtype() -> None:
    specs = [InputSpec("x", np.float16, ("batch_size", 2000))]
    (sample,) = SyntheticSource(specs, count=1)
    x = sample["x"]
    assert x.dtype == np.float16 and x.shape == (1, 2000)
    assert np.abs(x).max() <= 4 and abs(float(x.astype(np.float32).mean())) < 0.1


def test_synthetic_int_high_and_bool() -> None:
    specs = [InputSpec("ids", np.int32, (50,)), InputSpec("flag", np.bool_, (50,))]
    (sample,) = SyntheticSource(specs, count=1, int_high=3)
    assert set(np.unique(sample["ids"]).tolist()) <= {0, 1, 2}
    assert sample["flag"].dtype == np.bool_ and 0 < sample["flag"].sum() < 50


def test_synthetic_missing_dim_names_dim_and_input() -> None:
    with pytest.raises(CalibrationDataError) as info:
        SyntheticSource(TEXT)
    assert str(info.value) == "input 'input_ids' has symbolic dim 'seq'; pass --dim seq=N"


def test_synthetic_unnamed_dims_default_first_and_accept_input_axis_keys() -> None:
    specs = [InputSpec("x", np.float32, (None, 3, None))]
    with pytest.raises(CalibrationDataError, match=r"axis 2 is dynamic and unnamed; pass --dim x:2=N"):
        SyntheticSource(specs)
    (sample,) = SyntheticSource(specs, count=1, dims={"x:2": 5})
    assert sample["x"].shape == (1, 3, 5)


def test_synthetic_batch_can_be_overridden() -> None:
    (sample,) = SyntheticSource(IMG, count=1, dims={"N": 4})
    assert sample["x"].shape == (4, 3, 8, 8)


def test_synthetic_refuses_bad_count() -> None:
    with pytest.raises(ConfigError, match="count >= 1"):
        SyntheticSource(IMG, count=0)


# ---------------------------------------------------------------------------------------------- reader


def test_reader_source_validates_and_rewinds() -> None:
    source = ReaderSource(Reader([ids(), ids(seq=3)]), TEXT)
    assert [s["input_ids"].shape for s in source] == [(1, 5), (1, 3)]
    assert len(list(source)) == 2  # rewound
    assert source.num_samples is None and bool(source)
    with pytest.raises(TypeError):
        len(source)


def test_reader_source_errors_name_the_reader_sample() -> None:
    bad = ids()
    bad["input_ids"] = bad["input_ids"].astype(np.int32)
    source = ReaderSource(Reader([ids(), bad]), TEXT)
    assert error(source) == (
        "reader sample #1: input 'input_ids' has dtype int32, expected int64 (cast with .astype(np.int64))"
    )


def test_reader_without_samples_or_get_next_is_refused() -> None:
    class OneShot:
        def get_next(self) -> None:
            return None

    assert error(ReaderSource(OneShot(), TEXT)).startswith("reader sample #0: get_next() returned None")
    with pytest.raises(CalibrationDataError, match="object has no get_next"):
        ReaderSource(object())


def test_reader_without_specs_still_refuses_nan() -> None:
    source = ReaderSource(Reader([{"x": np.array([np.nan], np.float32)}]))
    assert error(source).startswith("reader sample #0: input 'x' has 1 non-finite values (1 NaN, 0 Inf)")
