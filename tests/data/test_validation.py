"""Input signatures and per-sample validation: every message names the sample, the tensor, expected and found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest

from onnxq.data import InputSpec, NpzFolderSource, input_specs, validate_sample
from onnxq.errors import CalibrationDataError
from tests.data._helpers import IMG, TEXT, error, ids, image, npz_folder

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
            {"x": image(), "y": image()},
            "calib/0.npz: unknown input 'y'; expected inputs: 'x'",
        ),
        (
            {"arr_0": image()},
            "calib/0.npz: unknown input 'arr_0' (np.savez names positional arrays",
        ),
        (
            {"x": image().astype(np.float64)},
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
    source = NpzFolderSource(npz_folder(tmp_path, [sample]), IMG)
    assert error(source).startswith(str(tmp_path / expected))


def test_missing_input_lists_expected_names(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path, [{"input_ids": ids()["input_ids"]}])
    message = error(NpzFolderSource(folder, TEXT))
    assert message == (
        f"{folder / '0.npz'}: missing input 'attention_mask'; expected inputs: 'input_ids', 'attention_mask'"
    )


def test_nan_and_inf_are_refused_naming_sample_tensor_and_count(tmp_path: Path) -> None:
    bad = image()
    bad[0, 0, 0, :3] = np.nan
    bad[0, 1, 0, 0] = np.inf
    folder = npz_folder(tmp_path, [{"x": image()}, {"x": image()}, {"x": image()}, {"x": bad}])
    assert error(NpzFolderSource(folder, IMG)) == (
        f"{folder / '3.npz'}: input 'x' has 4 non-finite values (3 NaN, 1 Inf) out of 192; "
        "calibration data must be finite"
    )


def test_symbolic_dim_must_agree_across_inputs(tmp_path: Path) -> None:
    sample = {"input_ids": np.zeros((1, 7), np.int64), "attention_mask": np.ones((1, 5), np.int64)}
    folder = npz_folder(tmp_path, [sample])
    assert error(NpzFolderSource(folder, TEXT)) == (
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
