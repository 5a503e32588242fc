"""Bad calibration / evaluation data: refused in one line, nothing unpickled, nothing left behind.

Each row of :data:`BAD_DATA` writes data into the test's folder; every command that reads data
then runs on it (the table times the commands). The pickled rows carry a payload that would create
a marker file if anything unpickled it (:mod:`tests.cli._corpus`). Data only some commands read
(labels, images, a NaN in a later sample, which ``bench`` never reads) has its own rows.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.cli._corpus import (
    MLP_IN,
    Case,
    assert_refused,
    ids,
    mlp,
    npy,
    npy_folder,
    npz,
    pickled_npy,
    pickled_npz,
    raw_pickle,
    samples,
    write,
)


def calibrate(data: str, d: Path, *extra: str) -> list[str]:
    return ["calibrate", mlp(d), "--data", data, "-o", str(d / "ranges.json"), *extra]


def convert(data: str, d: Path, *extra: str) -> list[str]:
    return ["convert", mlp(d), "--data", data, "-o", str(d / "out.onnx"), "--report", str(d / "report.json"), *extra]


def _mixed(d: Path) -> str:
    npy(d / "mixed", "a.npy", samples(1)[0])
    npz(d / "mixed", "b.npz", input=samples(1)[0])
    return str(d / "mixed")


def _corrupt_images(d: Path) -> str:
    write(d / "images", "0.png", np.random.default_rng(0).bytes(300))
    return str(d / "images")


def _cnn(d: Path) -> str:
    from models import build

    return write(d, "cnn.onnx", build("cnn"))


def _truncated_npz(d: Path) -> str:
    data = Path(npz(d, "full.npz", input=samples(4))).read_bytes()
    (d / "full.npz").unlink()
    return write(d, "cut.npz", data[: len(data) // 2])


def _zip_with_pickle(d: Path) -> str:
    import pickle

    from tests.cli._corpus import MARKER, Payload

    with zipfile.ZipFile(d / "evil.npz", "w") as archive:
        archive.writestr("input.pkl", pickle.dumps(Payload(d / MARKER)))
    return str(d / "evil.npz")


def _huge_header(d: Path) -> str:
    """An .npy whose header declares 10**12 floats over a few bytes of data."""
    path = d / "liar.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 1, MLP_IN)})
        f.write(b"\0" * 64)
    return str(path)


def _labels(d: Path, text: str | bytes) -> str:
    return write(d, "labels.txt", text)


def _eval(d: Path, data: str, *extra: str) -> list[str]:
    m = mlp(d)
    return ["eval", m, m, "--data", data, "--report", str(d / "report.json"), *extra]


#: Data every command refuses: (id, writes the data and returns the --data value, what the line names).
BAD_DATA: list[tuple[str, Callable[[Path], str], str]] = [
    ("pickled-npy", lambda d: pickled_npy(d), r"evil\.npy.*never unpickles"),
    ("pickled-npy-in-folder", lambda d: str(Path(pickled_npy(d / "calib")).parent), r"evil\.npy.*never unpickles"),
    ("pickled-npz", lambda d: pickled_npz(d), r"evil\.npz.*'input'.*never unpickles"),
    ("raw-pickle-as-npy", lambda d: raw_pickle(d), r"evil\.npy.*\.npy"),
    ("pickle-member-in-npz", _zip_with_pickle, r"evil\.npz.*input\.pkl"),
    ("wrong-dtype", lambda d: npy(d, "f64.npy", samples(2, dtype=np.float64)), r"f64\.npy.*'input'.*float64.*float32"),
    ("wrong-rank", lambda d: npy(d, "rank.npy", np.zeros((2, 2, 1, MLP_IN), np.float32)), r"rank\.npy.*'input'.*rank"),
    ("wrong-width", lambda d: npy(d, "width.npy", np.zeros((2, 1, 7), np.float32)), r"width\.npy.*'input'.*axis 1 is 7, expected 32"),
    ("empty-tensor", lambda d: npy(d, "zero.npy", np.zeros((0, MLP_IN), np.float32)), r"zero\.npy.*'input'.*empty"),
    ("string-array", lambda d: npy(d, "str.npy", np.array([["a"] * MLP_IN])), r"str\.npy.*'input'.*dtype"),
    ("complex-array", lambda d: npy(d, "cplx.npy", np.zeros((1, MLP_IN), np.complex64)), r"cplx\.npy.*'input'.*complex64"),
    ("nan", lambda d: npy(d, "nan.npy", samples(4, nan_at=0)), r"nan\.npy sample #0.*'input'.*NaN"),
    ("inf", lambda d: npy(d, "inf.npy", samples(4, nan_at=0, inf=True)), r"inf\.npy sample #0.*'input'.*Inf"),
    ("nan-first-file", lambda d: npy_folder(d, nan_at=0), r"calib/0\.npy.*'input'.*NaN"),
    ("empty-folder", lambda d: str((d / "none").mkdir() or d / "none"), r"none.*contains no calibration data"),
    ("folder-of-other-files", lambda d: str(Path(write(d / "txt", "a.txt", "hi")).parent), r"txt.*contains no calibration data"),
    ("mixed-kinds", _mixed, r"mixed.*mixes kinds"),
    ("truncated-npz", _truncated_npz, r"cut\.npz"),
    ("npz-unknown-key", lambda d: npz(d, "keys.npz", pixels=samples(2)), r"keys\.npz.*unknown input 'pixels'.*'input'"),
    ("npz-positional-arrays", lambda d: npz(d, "pos.npz", arr_0=samples(2)), r"pos\.npz.*arr_0"),
    ("npy-header-lies", _huge_header, r"liar\.npy"),
    ("model-as-data", lambda d: mlp(d, "other.onnx"), r"other\.onnx.*not a supported kind"),
    ("missing-data", lambda d: str(d / "nowhere"), r"nowhere.*does not exist"),
    ("synthetic-zero", lambda d: "synthetic:0", r"synthetic:0"),
    ("synthetic-word", lambda d: "synthetic:many", r"synthetic:many"),
    ("synthetic-absurd-count", lambda d: "synthetic:99999999999", r"synthetic:99999999999.*at most"),
]  # fmt: skip

#: Every command that reads data: (name, command line for model ``m`` and data ``data`` in folder ``d``).
DATA_COMMANDS: list[tuple[str, Callable[[str, str, Path], list[str]]]] = [
    ("calibrate", lambda m, data, d: ["calibrate", m, "--data", data, "-o", str(d / "r.json"), "--report", str(d / "rep.json")]),
    ("convert-static", lambda m, data, d: ["convert", m, "--data", data, "-o", str(d / "out.onnx"), "--report", str(d / "rep.json")]),
    ("convert-dynamic", lambda m, data, d: ["convert", m, "--mode", "dynamic", "--data", data, "-o", str(d / "out.onnx")]),
    ("eval", lambda m, data, d: ["eval", m, m, "--data", data, "--report", str(d / "rep.json")]),
    ("prune", lambda m, data, d: ["prune", m, "-o", str(d / "out.onnx"), "--method", "magnitude", "--sparsity", "0.5", "--data", data]),
    ("bench", lambda m, data, d: ["bench", m, "--data", data, "--runs", "1", "--warmup", "0", "--report", str(d / "rep.json")]),
]  # fmt: skip


@pytest.mark.parametrize("command", DATA_COMMANDS, ids=[c[0] for c in DATA_COMMANDS])
@pytest.mark.parametrize("data", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_bad_data(tmp_path: Path, data: tuple, command: tuple) -> None:
    _, make, expect = data
    spec = make(tmp_path)
    assert_refused(tmp_path, command[1](mlp(tmp_path), spec, tmp_path), expect)


#: Data that only some commands read.
DATA_CASES = [
    Case("pickled-labels", lambda d: _eval(d, "synthetic:1", "--dim", "N=1", "--labels", pickled_npy(d, "labels.npy")), r"labels\.npy.*never unpickles"),
    Case("nan-last-file-calibrate", lambda d: calibrate(npy_folder(d, nan_at=3), d), r"calib/3\.npy.*'input'.*NaN"),
    Case("nan-last-file-convert", lambda d: convert(npy_folder(d, nan_at=3), d, "--no-tune"), r"calib/3\.npy.*'input'.*NaN"),
    Case("nan-later-sample-dynamic", lambda d: convert(npy(d, "nan.npy", samples(4, nan_at=2)), d, "--mode", "dynamic"), r"nan\.npy sample #2.*NaN"),
    Case("inf-later-sample-eval", lambda d: _eval(d, npy(d, "inf.npy", samples(4, nan_at=2, inf=True))), r"inf\.npy sample #2.*Inf"),
    Case("nan-prune-last-sample", lambda d: ["prune", mlp(d), "-o", str(d / "p.onnx"), "--method", "magnitude", "--sparsity", "0.5",
                                             "--data", npy_folder(d, nan_at=3)], r"calib/3\.npy.*NaN"),  # fmt: skip
    Case("nan-smooth-static", lambda d: convert(npy(d, "nan.npy", samples(4, nan_at=3)), d, "--smooth", "0.9"), r"nan\.npy sample #3.*NaN"),
    Case("corrupt-image", lambda d: ["calibrate", _cnn(d), "--data", _corrupt_images(d), "-o", str(d / "r.json")], r"images/0\.png.*image"),
    Case("images-for-a-vector-model", lambda d: calibrate(_corrupt_images(d), d), r"input 'input'.*image data needs"),
    Case("synthetic-absurd-samples", lambda d: calibrate("synthetic", d, "--samples", "99999999999"), r"synthetic:99999999999.*at most"),
    Case("labels-count", lambda d: _eval(d, npy_folder(d), "--labels", _labels(d, "1\n2\n")), r"labels\.txt.*only 2 labels"),
    Case("labels-binary", lambda d: _eval(d, npy_folder(d), "--labels", _labels(d, b"\xff\xfe\x00\x01")), r"labels\.txt.*UTF-8"),
    Case("labels-2d-npy", lambda d: _eval(d, npy_folder(d), "--labels", npy(d, "labels.npy", np.zeros((4, 2)))), r"labels\.npy.*1-D"),
    Case("labels-missing", lambda d: _eval(d, npy_folder(d), "--labels", str(d / "nope.txt")), r"nope\.txt"),
]  # fmt: skip


@pytest.mark.parametrize("case", DATA_CASES, ids=ids(DATA_CASES))
def test_bad_data_for_some_commands(tmp_path: Path, case: Case) -> None:
    assert_refused(tmp_path, case.make(tmp_path), case.expect)
