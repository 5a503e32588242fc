"""Model input signatures and per-sample validation shared by every data source.

Every error names the sample, the tensor, what was expected and what was found, because
onnxruntime's own errors name neither the file nor the sample.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, Union

import numpy as np
import onnx

from onnxq.errors import CalibrationDataError

_LOG = logging.getLogger(__name__)

Dim = Union[int, str, None]  # noqa: UP007 (runtime aliases, kept alike)
Sample = dict[str, np.ndarray]
Label = Union[int, float, str, np.ndarray]  # noqa: UP007
PathArg = Union[str, "PathLike[str]"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
_LABEL_KEYS = ("label", "labels")
# Names exporters give the batch axis; synthetic data defaults them to 1 instead of demanding --dim.
_BATCH_NAMES = frozenset({"batch", "n", "batch_size"})


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, numpy dtype and shape (int = static, str = symbolic, None = unknown).

    ``shape`` itself is None when the model does not record the input's rank at all.
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...] | None

    def __post_init__(self) -> None:
        # Normalize so callers may pass np.float32 or a list; frozen dataclasses need object.__setattr__.
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int | None:
        """Number of axes, or None when the model leaves it unknown."""
        return None if self.shape is None else len(self.shape)

    def shape_text(self) -> str:
        """The shape as users read it in Netron: ``[N, 3, 224, 224]`` (``?`` for unnamed dynamic axes)."""
        if self.shape is None:
            return "[unknown rank]"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The inputs a caller must feed: graph inputs that are not initializers (old IR lists those too).

    Raises:
        CalibrationDataError: an input is not a numeric tensor (sequence, map, string, ...).
    """
    initializers = {init.name for init in model.graph.initializer}
    return [_spec_from_value_info(vi) for vi in model.graph.input if vi.name not in initializers]


def _spec_from_value_info(value_info: onnx.ValueInfoProto) -> InputSpec:
    kind = value_info.type.WhichOneof("value")
    if kind != "tensor_type":
        raise CalibrationDataError(
            f"model input '{value_info.name}' is a {kind or 'untyped value'}, not a tensor; "
            "onnxq can only feed tensor inputs"
        )
    tensor = value_info.type.tensor_type
    type_name = onnx.TensorProto.DataType.Name(tensor.elem_type)
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    except (KeyError, TypeError, ValueError) as e:
        raise CalibrationDataError(
            f"model input '{value_info.name}' has element type {type_name}, which onnxq cannot feed"
        ) from e
    if dtype.hasobject:
        raise CalibrationDataError(
            f"model input '{value_info.name}' has element type {type_name}; onnxq only feeds numeric tensors"
        )
    shape = tuple(_dim(d) for d in tensor.shape.dim) if tensor.HasField("shape") else None
    return InputSpec(value_info.name, dtype, shape)


#: Dim names exporters use for "unknown" (Paddle2ONNX writes '?' on several axes): they do not tie
#: axes together, unlike a real symbolic name such as 'batch'.
_ANONYMOUS_DIMS = frozenset({"?", "-1", "unk", "None"})


def _dim(dim: onnx.TensorShapeProto.Dimension) -> Dim:
    which = dim.WhichOneof("value")
    if which == "dim_value" and dim.dim_value >= 0:
        return int(dim.dim_value)
    if which == "dim_param" and dim.dim_param and dim.dim_param not in _ANONYMOUS_DIMS:
        return dim.dim_param
    return None



def validate_sample(sample: Mapping[str, Any], specs: Sequence[InputSpec], where: str) -> Sample:
    """Check one sample against the model's inputs and return it as contiguous arrays in input order.

    Rejects (naming ``where``, the tensor, the expected and the found value): unknown or missing inputs,
    non-numeric data, a dtype other than the model's (no silent casts: float64 for a float32 input is
    the classic mistake and a cast hint is given), wrong rank, wrong static dims, empty tensors,
    NaN/Inf, and one symbolic dim taking different sizes in different inputs.

    Raises:
        CalibrationDataError: the first problem found.
    """
    _require_mapping(sample, where)
    check_input_names(sample.keys(), specs, where)
    arrays = {spec.name: _check_tensor(sample[spec.name], spec, where) for spec in specs}
    _check_symbols(arrays, specs, where)
    return arrays


def _require_mapping(sample: Any, where: str) -> None:
    if not isinstance(sample, Mapping):
        raise CalibrationDataError(f"{where}: expected a dict of input name -> array, found {type(sample).__name__}")


def check_input_names(names: Iterable[str], specs: Sequence[InputSpec], where: str) -> None:
    """Refuse names that are not model inputs and model inputs that are absent, listing the expected names."""
    names = list(names)
    expected = _quoted(spec.name for spec in specs)
    known = {spec.name for spec in specs}
    for name in names:
        if name not in known:
            hint = ""
            if re.fullmatch(r"arr_\d+", name):
                hint = " (np.savez names positional arrays arr_0, arr_1...: save with np.savez(path, name=array))"
            raise CalibrationDataError(f"{where}: unknown input '{name}'{hint}; expected inputs: {expected}")
    for spec in specs:
        if spec.name not in names:
            raise CalibrationDataError(f"{where}: missing input '{spec.name}'; expected inputs: {expected}")


def _check_tensor(value: Any, spec: InputSpec, where: str) -> np.ndarray:
    array = _as_numeric_array(value, f"{where}: input '{spec.name}'")
    if array.dtype != spec.dtype:
        hint = f" (cast with .astype(np.{_numpy_name(spec.dtype)}))" if array.dtype.kind in "biuf" else ""
        raise CalibrationDataError(
            f"{where}: input '{spec.name}' has dtype {array.dtype}, expected {spec.dtype}{hint}"
        )
    _check_shape(array, spec, where)
    _check_finite(array, f"{where}: input '{spec.name}'")
    return np.require(array, requirements="C")


def _as_numeric_array(value: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise CalibrationDataError(f"{what} is not a rectangular array ({e})") from e
    if array.dtype.kind not in "biufc":
        raise CalibrationDataError(f"{what} has dtype {array.dtype}, expected a numeric array")
    return array


def _numpy_name(dtype: np.dtype) -> str:
    # np.bool only exists from numpy 2; np.bool_ works everywhere.
    return "bool_" if dtype.kind == "b" else dtype.name


def _check_shape(array: np.ndarray, spec: InputSpec, where: str) -> None:
    if spec.shape is None:
        return
    if array.ndim != len(spec.shape):
        raise CalibrationDataError(
            f"{where}: input '{spec.name}' has rank {array.ndim} (shape {array.shape}), "
            f"expected rank {len(spec.shape)} {spec.shape_text()}"
        )
    for axis, (found, expected) in enumerate(zip(array.shape, spec.shape)):
        if isinstance(expected, int) and found != expected:
            raise CalibrationDataError(
                f"{where}: input '{spec.name}' axis {axis} is {found}, expected {expected} "
                f"(shape {array.shape}, expected {spec.shape_text()})"
            )
    if array.size == 0:
        raise CalibrationDataError(f"{where}: input '{spec.name}' is empty (shape {array.shape})")


def _check_finite(array: np.ndarray, what: str) -> None:
    if array.dtype.kind not in "fc":
        return
    nan = int(np.count_nonzero(np.isnan(array)))
    inf = int(np.count_nonzero(np.isinf(array)))
    if nan or inf:
        raise CalibrationDataError(
            f"{what} has {nan + inf} non-finite values ({nan} NaN, {inf} Inf) out of {array.size}; "
            "calibration data must be finite"
        )


def _check_symbols(arrays: Mapping[str, np.ndarray], specs: Sequence[InputSpec], where: str) -> None:
    seen: dict[str, tuple[str, int, int]] = {}
    for spec in specs:
        for axis, dim in enumerate(spec.shape or ()):
            if not isinstance(dim, str):
                continue
            size = arrays[spec.name].shape[axis]
            first = seen.setdefault(dim, (spec.name, axis, size))
            if first[2] != size:
                raise CalibrationDataError(
                    f"{where}: symbolic dim '{dim}' is {first[2]} in input '{first[0]}' (axis {first[1]}) "
                    f"but {size} in input '{spec.name}' (axis {axis})"
                )


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)
