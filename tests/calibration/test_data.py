"""Tests for onnxq.calibration.data: sources, validation messages, dispatch and labels."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest

from onnxq.calibration.data import (
    InputSpec,
    LimitedSource,
    NpyFolderSource,
    NpzFileSource,
    NpzFolderSource,
    ReaderSource,
    SyntheticSource,
    input_specs,
    load_labels,
    open_source,
    parse_dims,
    validate_sample,
)
from onnxq.errors import CalibrationDataError, ConfigError

IMAGE_MODEL = onnx.parser.parse_model(
    """
    <ir_version: 8, opset_import: ["" : 17]>
    img (float[N, 3, 8, 8] x) => (float[N, 3, 8, 8] y) { y = Relu(x) }
    """
)
TEXT_MODEL = onnx.parser.parse_model(
    """
    <ir_version: 8, opset_import: ["" : 17]>
    text (int64[batch, seq] input_ids, int64[batch, seq] attention_mask) => (int64[batch, seq] y) {
        y = Add(input_ids, attention_mask)
    }
    """
)
IMG = input_specs(IMAGE_MODEL)
TEXT = input_specs(TEXT_MODEL)


def _image(batch: int = 1, value: float = 0.5) -> np.ndarray:
    return np.full((batch, 3, 8, 8), value, dtype=np.float32)


def _ids(batch: int = 1, seq: int = 5) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.arange(batch * seq, dtype=np.int64).reshape(batch, seq),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
    }


def _npz_folder(tmp_path: Path, samples: list[dict[str, Any]], name: str = "calib") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for index, sample in enumerate(samples):
        np.savez(folder / f"{index}.npz", **sample)
    return folder


def _error(source: Any) -> str:
    with pytest.raises(CalibrationDataError) as info:
        list(source.iter_with_labels())
    return str(info.value)


# ----------------------------------------------------------------------------------------------- specs


def test_input_specs_reads_names_dtypes_and_symbolic_dims() -> None:
    assert IMG == [InputSpec("x", np.float32, ("N", 3, 8, 8))]
    assert [(s.name, s.dtype, s.shape) for s in TEXT] == [
        ("input_ids", np.dtype(np.int64), ("batch", "seq")),
        ("attention_mask", np.dtype(np.int64), ("batch", "seq")),
    ]
    assert IMG[0].shape_text() == "[N, 3, 8, 8]"


def test_input_specs_skips_initializers_listed_as_inputs() -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 3, opset_import: ["" : 11]>
        g (float[2] x, float[2] w) => (float[2] y) <float[2] w = {1.0, 2.0}> { y = Add(x, w) }
        """
    )
    assert [s.name for s in input_specs(model)] == ["x"]


def test_input_specs_unnamed_dynamic_dim_is_none() -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    assert input_specs(onnx.helper.make_model(graph)) == [InputSpec("x", np.float32, (None, 4))]


def test_input_specs_refuses_non_tensor_inputs() -> None:
    seq = onnx.helper.make_tensor_sequence_value_info("s", onnx.TensorProto.FLOAT, [2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    graph = onnx.helper.make_graph([], "g", [seq], [y])
    with pytest.raises(CalibrationDataError, match="model input 's' is a sequence_type, not a tensor"):
        input_specs(onnx.helper.make_model(graph))


# ------------------------------------------------------------------------------------------ validation


def test_validate_sample_returns_contiguous_arrays_in_input_order() -> None:
    sample = {"attention_mask": np.ones((1, 4), np.int64), "input_ids": np.zeros((4, 1), np.int64).T}
    out = validate_sample(sample, TEXT, "s")
    assert list(out) == ["input_ids", "attention_mask"]
    assert all(a.flags.c_contiguous for a in out.values())


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (
            {"x": _image(), "y": _image()},
            "calib/0.npz: unknown input 'y'; expected inputs: 'x'",
        ),
        (
            {"arr_0": _image()},
            "calib/0.npz: unknown input 'arr_0' (np.savez names positional arrays",
        ),
        (
            {"x": _image().astype(np.float64)},
            "calib/0.npz: input 'x' has dtype float64, expected float32 (cast with .astype(np.float32))",
        ),
        (
            {"x": np.zeros((3, 8, 8), np.float32)},
            "calib/0.npz: input 'x' has rank 3 (shape (3, 8, 8)), expected rank 4 [N, 3, 8, 8]",
        ),
        (
            {"x": np.zeros((1, 3, 40, 8), np.float32)},
            "calib/0.npz: input 'x' axis 2 is 40, expected 8 (shape (1, 3, 40, 8), expected [N, 3, 8, 8])",
        ),
        (
            {"x": np.zeros((0, 3, 8, 8), np.float32)},
            "calib/0.npz: input 'x' is empty (shape (0, 3, 8, 8))",
        ),
    ],
    ids=["unknown", "positional", "dtype", "rank", "static-dim", "empty"],
)
def test_folder_validation_errors_name_file_tensor_expected_and_found(
    tmp_path: Path, sample: dict[str, np.ndarray], expected: str
) -> None:
    source = NpzFolderSource(_npz_folder(tmp_path, [sample]), IMG)
    assert _error(source).startswith(str(tmp_path / expected))


def test_missing_input_lists_expected_names(tmp_path: Path) -> None:
    folder = _npz_folder(tmp_path, [{"input_ids": _ids()["input_ids"]}])
    message = _error(NpzFolderSource(folder, TEXT))
    assert message == (
        f"{folder / '0.npz'}: missing input 'attention_mask'; expected inputs: 'input_ids', 'attention_mask'"
    )


def test_nan_and_inf_are_refused_naming_sample_tensor_and_count(tmp_path: Path) -> None:
    bad = _image()
    bad[0, 0, 0, :3] = np.nan
    bad[0, 1, 0, 0] = np.inf
    folder = _npz_folder(tmp_path, [{"x": _image()}, {"x": _image()}, {"x": _image()}, {"x": bad}])
    assert _error(NpzFolderSource(folder, IMG)) == (
        f"{folder / '3.npz'}: input 'x' has 4 non-finite values (3 NaN, 1 Inf) out of 192; "
        "calibration data must be finite"
    )


def test_symbolic_dim_must_agree_across_inputs(tmp_path: Path) -> None:
    sample = {"input_ids": np.zeros((1, 7), np.int64), "attention_mask": np.ones((1, 5), np.int64)}
    folder = _npz_folder(tmp_path, [sample])
    assert _error(NpzFolderSource(folder, TEXT)) == (
        f"{folder / '0.npz'}: symbolic dim 'seq' is 7 in input 'input_ids' (axis 1) "
        "but 5 in input 'attention_mask' (axis 1)"
    )


def test_validate_sample_refuses_non_dicts_and_non_numeric_data() -> None:
    with pytest.raises(CalibrationDataError, match="^s: expected a dict of input name -> array, found list$"):
        validate_sample([1, 2], IMG, "s")  # type: ignore[arg-type]
    with pytest.raises(CalibrationDataError, match="^s: input 'x' has dtype <U1, expected a numeric array$"):
        validate_sample({"x": np.array(["a"])}, IMG, "s")


def test_scalar_inputs_keep_rank_zero() -> None:
    specs = [InputSpec("temperature", np.float32, ())]
    assert validate_sample({"temperature": np.float32(0.7)}, specs, "s")["temperature"].shape == ()


def test_python_lists_are_float64_and_get_the_cast_hint() -> None:
    with pytest.raises(CalibrationDataError, match=r"dtype float64, expected float32 \(cast with"):
        validate_sample({"x": np.zeros((1, 3, 8, 8)).tolist()}, IMG, "s")


# --------------------------------------------------------------------------------------- npz folder


def test_npz_folder_yields_in_natural_order_with_symbolic_batch(tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    for index in (10, 2, 1):
        np.savez(folder / f"{index}.npz", x=_image(batch=index % 3 + 1, value=index))
    (folder / "README.txt").write_text("ignored")
    (folder / ".hidden.npz").write_bytes(b"junk")
    source = NpzFolderSource(folder, IMG)
    assert len(source) == 3
    samples = list(source)
    assert [float(s["x"].flat[0]) for s in samples] == [1.0, 2.0, 10.0]
    assert [s["x"].shape[0] for s in samples] == [2, 3, 2]
    assert source.describe() == f"3 .npz files in {folder}/"


def test_npz_folder_refuses_stacked_arrays_suggesting_single_file(tmp_path: Path) -> None:
    folder = _npz_folder(tmp_path, [{"x": np.zeros((4, 1, 3, 8, 8), np.float32)}])
    assert _error(NpzFolderSource(folder, IMG)) == (
        f"{folder / '0.npz'}: input 'x' has rank 5 (shape (4, 1, 3, 8, 8)), one more than the model's "
        "[N, 3, 8, 8]; a folder holds one sample per file — to stack samples along a leading axis pass one .npz file"
    )


def test_npz_folder_labels_are_carried_separately(tmp_path: Path) -> None:
    folder = _npz_folder(tmp_path, [{"x": _image(), "label": 3}, {"x": _image(), "labels": np.array([1, 2])}])
    pairs = list(NpzFolderSource(folder, IMG).iter_with_labels())
    assert list(pairs[0][0]) == ["x"]
    assert pairs[0][1] == 3
    np.testing.assert_array_equal(pairs[1][1], [1, 2])


def test_npz_with_both_label_keys_is_refused(tmp_path: Path) -> None:
    folder = _npz_folder(tmp_path, [{"x": _image(), "label": 1, "labels": 2}])
    assert _error(NpzFolderSource(folder, IMG)) == f"{folder / '0.npz'}: has both 'label' and 'labels' arrays; keep one"


def test_model_input_named_label_is_an_input_not_a_label(tmp_path: Path) -> None:
    specs = [InputSpec("x", np.float32, (2,)), InputSpec("label", np.int64, (1,))]
    folder = _npz_folder(tmp_path, [{"x": np.zeros(2, np.float32), "label": np.array([4])}])
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
    np.savez(path, x=_image(batch=4), label=7)
    source = NpzFileSource(path, IMG)
    assert len(source) == 1
    ((sample, label),) = source.iter_with_labels()
    assert sample["x"].shape == (4, 3, 8, 8) and label == 7


def test_npz_file_inputs_must_agree_on_sample_count(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, input_ids=np.zeros((10, 1, 4), np.int64), attention_mask=np.ones((8, 1, 4), np.int64))
    assert _error(NpzFileSource(path, TEXT)) == (
        f"{path}: inputs disagree on the number of samples: 'input_ids' has 10, 'attention_mask' has 8"
    )


def test_npz_file_mixed_single_and_stacked_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, input_ids=np.zeros((1, 4), np.int64), attention_mask=np.ones((8, 1, 4), np.int64))
    assert "input 'input_ids' holds one sample but 'attention_mask' has a leading axis" in _error(
        NpzFileSource(path, TEXT)
    )


def test_npz_file_wrong_rank_names_both_accepted_ranks(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.zeros((8, 8), np.float32))
    assert _error(NpzFileSource(path, IMG)) == (
        f"{path}: input 'x' has rank 2 (shape (8, 8)), expected 4 (one sample) or 5 "
        "(samples along a leading axis) for [N, 3, 8, 8]"
    )


def test_npz_file_labels_must_match_sample_count(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.zeros((3, 1, 3, 8, 8), np.float32), labels=np.arange(2))
    assert "labels have shape (2,), expected one label per sample (3 along axis 0)" in _error(
        NpzFileSource(path, IMG)
    )


def test_npz_file_sample_errors_name_the_index(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    data = np.zeros((3, 1, 3, 8, 8), np.float32)
    data[2, 0, 0, 0, 0] = np.inf
    np.savez(path, x=data)
    assert _error(NpzFileSource(path, IMG)).startswith(f"{path} sample #2: input 'x' has 1 non-finite")


def test_npz_file_unknown_key_is_refused_before_slicing(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.zeros((3, 1, 3, 8, 8), np.float32), extra=np.float32(1))
    assert _error(NpzFileSource(path, IMG)) == f"{path}: unknown input 'extra'; expected inputs: 'x'"


# ------------------------------------------------------------------------------------------ loading


def test_corrupt_npz_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "0.npz").write_bytes(b"this is not a zip file")
    message = _error(NpzFolderSource(folder, IMG))
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


# ------------------------------------------------------------------------------------------------ npy


def test_npy_folder_one_sample_per_file(tmp_path: Path) -> None:
    folder = tmp_path / "npy"
    folder.mkdir()
    for index in range(3):
        np.save(folder / f"{index}.npy", _image(value=index))
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
    assert "a folder holds one sample per file — to stack samples pass that .npy file alone" in _error(
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


def test_parse_dims() -> None:
    assert parse_dims(["seq=128", "x:2=4"]) == {"seq": 128, "x:2": 4}
    with pytest.raises(ConfigError, match="--dim 'seq': expected NAME=N"):
        parse_dims(["seq"])
    with pytest.raises(ConfigError, match="--dim 'seq=0'"):
        parse_dims(["seq=0"])


# ---------------------------------------------------------------------------------------------- reader


class _Reader:
    """onnxruntime's CalibrationDataReader protocol, with rewind()."""

    def __init__(self, samples: list[Any]) -> None:
        self.samples = samples
        self.rewind()

    def get_next(self) -> Any:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.samples)


def test_reader_source_validates_and_rewinds() -> None:
    source = ReaderSource(_Reader([_ids(), _ids(seq=3)]), TEXT)
    assert [s["input_ids"].shape for s in source] == [(1, 5), (1, 3)]
    assert len(list(source)) == 2  # rewound
    assert source.num_samples is None and bool(source)
    with pytest.raises(TypeError):
        len(source)


def test_reader_source_errors_name_the_reader_sample() -> None:
    bad = _ids()
    bad["input_ids"] = bad["input_ids"].astype(np.int32)
    source = ReaderSource(_Reader([_ids(), bad]), TEXT)
    assert _error(source) == (
        "reader sample #1: input 'input_ids' has dtype int32, expected int64 (cast with .astype(np.int64))"
    )


def test_reader_without_samples_or_get_next_is_refused() -> None:
    class OneShot:
        def get_next(self) -> None:
            return None

    assert _error(ReaderSource(OneShot(), TEXT)).startswith("reader sample #0: get_next() returned None")
    with pytest.raises(CalibrationDataError, match="object has no get_next"):
        ReaderSource(object())


def test_reader_without_specs_still_refuses_nan() -> None:
    source = ReaderSource(_Reader([{"x": np.array([np.nan], np.float32)}]))
    assert _error(source).startswith("reader sample #0: input 'x' has 1 non-finite values (1 NaN, 0 Inf)")


# ------------------------------------------------------------------------------------------ open_source


def test_open_source_dispatches_by_kind(tmp_path: Path) -> None:
    folder = _npz_folder(tmp_path, [{"x": _image()}])
    np.savez(tmp_path / "one.npz", x=np.zeros((2, 1, 3, 8, 8), np.float32))
    np.save(tmp_path / "one.npy", _image())
    npy_folder = tmp_path / "npys"
    npy_folder.mkdir()
    np.save(npy_folder / "a.npy", _image())
    assert isinstance(open_source(str(folder), IMAGE_MODEL), NpzFolderSource)
    assert isinstance(open_source(tmp_path / "one.npz", IMAGE_MODEL), NpzFileSource)
    assert isinstance(open_source(tmp_path / "one.npy", IMG), NpyFolderSource)
    assert isinstance(open_source(npy_folder, IMG), NpyFolderSource)
    assert isinstance(open_source(_Reader([{"x": _image()}]), IMG), ReaderSource)
    synthetic = open_source("synthetic:3", TEXT_MODEL, dims={"seq": 4}, seed=1)
    assert isinstance(synthetic, SyntheticSource) and len(synthetic) == 3 and synthetic.seed == 1


def test_open_source_samples_limits_and_sizes_synthetic(tmp_path: Path) -> None:
    folder = _npz_folder(tmp_path, [{"x": _image(value=i)} for i in range(5)])
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
    np.savez(tmp_path / "a.npz", x=_image())
    np.save(tmp_path / "b.npy", _image())
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


def test_labels_file_pairs_with_samples(tmp_path: Path) -> None:
    folder = _npz_folder(tmp_path, [{"x": _image()} for _ in range(3)])
    (tmp_path / "labels.txt").write_text("7\n8\n9\n")
    source = open_source(folder, IMG, labels_file=tmp_path / "labels.txt")
    assert [label for _, label in source.iter_with_labels()] == [7, 8, 9]
    assert [label for _, label in open_source(folder, IMG, samples=2).iter_with_labels()] == [None, None]


def test_labels_file_count_must_match(tmp_path: Path) -> None:
    folder = _npz_folder(tmp_path, [{"x": _image()} for _ in range(3)])
    (tmp_path / "few.txt").write_text("7\n8\n")
    (tmp_path / "many.txt").write_text("7\n8\n9\n10\n")
    assert _error(NpzFolderSource(folder, IMG, labels_file=tmp_path / "few.txt")) == (
        f"{folder / '2.npz'}: labels file '{tmp_path / 'few.txt'}' has only 2 labels, none for sample #2"
    )
    assert _error(NpzFolderSource(folder, IMG, labels_file=tmp_path / "many.txt")) == (
        f"labels file '{tmp_path / 'many.txt'}' has 4 labels but the data has 3 samples"
    )
    limited = open_source(folder, IMG, samples=2, labels_file=tmp_path / "many.txt")
    assert [label for _, label in limited.iter_with_labels()] == [7, 8]


def test_inline_label_and_labels_file_conflict(tmp_path: Path) -> None:
    folder = _npz_folder(tmp_path, [{"x": _image(), "label": 1}])
    (tmp_path / "labels.txt").write_text("1\n")
    assert "carries its own label and a labels file" in _error(
        NpzFolderSource(folder, IMG, labels_file=tmp_path / "labels.txt")
    )
