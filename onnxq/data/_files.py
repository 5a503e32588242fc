"""Reading data files without pickle: .npy/.npz arrays, label files, folder listings."""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from onnxq.errors import CalibrationDataError

from ._validation import _LABEL_KEYS, InputSpec, Label, PathArg, _quoted


def _read_npy_header(fp: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an .npy header, so object arrays are refused before reading data."""
    try:
        version = np.lib.format.read_magic(fp)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(fp)
    except (ValueError, EOFError, OSError) as e:
        raise CalibrationDataError(f"{where}: not a valid .npy array ({e})") from e
    if dtype.hasobject:
        raise CalibrationDataError(
            f"{where}: holds Python objects (dtype {dtype}); onnxq never unpickles data — save numeric arrays"
        )
    return shape, dtype


def _read_npy(path: Path, *, mmap: bool) -> np.ndarray:
    try:
        with open(path, "rb") as fp:
            _read_npy_header(fp, str(path))
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise CalibrationDataError(f"{path}: cannot read as .npy ({e})") from e


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz, read member by member so errors name the file and the array."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    raise CalibrationDataError(f"{path}: member '{member}' is not an .npy array")
                key = member[: -len(".npy")]
                with archive.open(member) as fp:
                    _read_npy_header(fp, f"{path}: array '{key}'")
                    fp.seek(0)
                    arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError) as e:
        raise CalibrationDataError(f"{path}: cannot read as .npz ({type(e).__name__}: {e})") from e
    return arrays


def load_labels(path: PathArg) -> list[Label]:
    """Labels from a ``.npy`` (one number per sample) or a text file (one label per line).

    Text labels become ints when every line is an integer (class ids), else stay strings (OCR text).
    Only trailing empty lines are dropped: an empty line in the middle is an empty label.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationDataError(f"labels file '{path}' does not exist")
    if path.suffix.lower() == ".npy":
        array = _read_npy(path, mmap=False)
        if array.ndim != 1:
            raise CalibrationDataError(
                f"labels file '{path}' has shape {array.shape}, expected one label per sample (a 1-D array)"
            )
        return array.tolist()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationDataError(f"labels file '{path}' cannot be read as UTF-8 text ({e})") from e
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and all(re.fullmatch(r"\s*[-+]?\d+\s*", line) for line in lines):
        return [int(line) for line in lines]
    return list(lines)


def list_data_files(path: Path, suffixes: Iterable[str], kind: str) -> list[Path]:
    """The files of one kind in a folder, in natural order (``2.npz`` before ``10.npz``, so a labels file
    written line by line matches), hidden files (``.DS_Store``, ``._x.png``) skipped.

    Raises:
        CalibrationDataError: the folder holds no such file.
    """
    wanted = {suffix.lower() for suffix in suffixes}
    files = [
        p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in wanted
    ]
    if not files:
        raise CalibrationDataError(f"folder '{path}' contains no {kind} files ({' '.join(sorted(wanted))})")
    return sorted(files, key=_natural_key)


def _natural_key(path: Path) -> tuple[list[Any], str]:
    parts = re.split(r"(\d+)", path.name.lower())
    return [int(p) if p.isdigit() else p for p in parts], path.name


def _split_label(
    arrays: dict[str, np.ndarray], specs: Sequence[InputSpec], where: str
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Separate a ``label``/``labels`` array from the inputs (unless the model has an input of that name)."""
    names = {spec.name for spec in specs}
    keys = [key for key in _LABEL_KEYS if key in arrays and key not in names]
    if len(keys) > 1:
        raise CalibrationDataError(f"{where}: has both 'label' and 'labels' arrays; keep one")
    inputs = {k: v for k, v in arrays.items() if k not in keys}
    return inputs, (arrays[keys[0]] if keys else None)


def _label_value(array: np.ndarray) -> Label:
    return array.item() if array.ndim == 0 else array


def _refuse_stacked(arrays: Mapping[str, np.ndarray], specs: Sequence[InputSpec], where: str, hint: str) -> None:
    """In a folder one file is one sample; an extra leading axis means the user wanted the single-file form."""
    for spec in specs:
        array = arrays.get(spec.name)
        if array is not None and spec.rank is not None and array.ndim == spec.rank + 1:
            raise CalibrationDataError(
                f"{where}: input '{spec.name}' has rank {array.ndim} (shape {array.shape}), one more than the "
                f"model's {spec.shape_text()}; a folder holds one sample per file — {hint}"
            )


def require_single_input(specs: Sequence[InputSpec], what: str, advice: str = "") -> InputSpec:
    """The only input of a model, for data kinds that cannot say which input an array belongs to."""
    if len(specs) != 1:
        raise CalibrationDataError(
            f"{what} only works for single-input models; this model has inputs {_quoted(s.name for s in specs)}"
            + (f": {advice}" if advice else "")
        )
    return specs[0]


def _existing(path: PathArg) -> Path:
    path = Path(path)
    if not path.exists():
        raise CalibrationDataError(f"calibration data '{path}' does not exist")
    return path


def data_files(path: PathArg, suffixes: Iterable[str], kind: str) -> list[Path]:
    """``[path]`` for a file, :func:`list_data_files` for a folder.

    Raises:
        CalibrationDataError: the path does not exist or the folder holds no such file.
    """
    path = _existing(path)
    return list_data_files(path, suffixes, kind) if path.is_dir() else [path]
