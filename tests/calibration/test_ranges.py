"""Tests of TensorRange / Histogram / RangeSet and the ranges JSON file."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxq.calibration.ranges import FORMAT, Histogram, RangeSet, TensorRange
from onnxq.errors import CalibrationError

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
finite = st.floats(allow_nan=False, allow_infinity=False)
counts = st.integers(0, 2**62)


@st.composite
def histograms(draw: st.DrawFn) -> Histogram:
    k = draw(st.integers(-140, 90))
    start = draw(st.integers(-(2**40), 2**40))
    values = draw(st.lists(st.integers(0, 2**62), min_size=1, max_size=20))
    return Histogram(np.array(values, dtype=np.int64), math.ldexp(1.0, k), math.ldexp(float(start), k))


@st.composite
def tensor_ranges(draw: st.DrawFn) -> TensorRange:
    lo, hi = sorted([draw(finite), draw(finite)])
    dlo, dhi = sorted([draw(finite), draw(finite)])
    fields: dict = {}
    if draw(st.booleans()):
        pairs = draw(st.lists(st.tuples(finite, finite).map(sorted), min_size=1, max_size=5))
        fields = {"axis": draw(st.integers(-4, 3)), "channel_min": tuple(p[0] for p in pairs),
                  "channel_max": tuple(p[1] for p in pairs)}
    return TensorRange(
        min=lo, max=hi, method=draw(st.sampled_from(["minmax", "entropy", "percentile"])),
        samples=draw(counts), count=draw(counts), data_min=dlo, data_max=dhi,
        nonfinite=draw(counts), extreme=draw(counts),
        histogram=draw(st.none() | histograms()), **fields,
    )


range_sets = st.builds(
    RangeSet,
    st.dictionaries(st.text(max_size=12), tensor_ranges(), max_size=4),
    model_name=st.text(max_size=10),
    model_sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
    method=st.sampled_from(["minmax", "entropy"]),
    num_samples=counts,
    onnxq_version=st.just("0.1.0"),
)


@FAST
@given(rs=range_sets)
def test_json_round_trip_is_exact_and_byte_identical(tmp_path: Path, rs: RangeSet) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    rs.save_json(first)
    loaded = RangeSet.load_json(first)
    assert loaded == rs
    for name in rs:  # exact floats, not just approximately equal
        assert loaded[name].min.hex() == rs[name].min.hex()
    loaded.save_json(second)
    assert first.read_bytes() == second.read_bytes()
    rs.save_json(first)  # overwrite in place
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temp files left


def test_file_layout(tmp_path: Path) -> None:
    hist = Histogram(np.array([1, 0, 3]), 0.25, -0.5)
    rs = RangeSet({"b": TensorRange(-0.5, 0.1, "percentile", 1, 4, data_min=-0.5, data_max=0.2, histogram=hist),
                   "a": TensorRange(0.0, 1.0 / 3.0, "minmax", 2, 10)},
                  model_name="m", model_sha256="00", method="minmax", num_samples=2, onnxq_version="0.1")
    path = tmp_path / "r.json"
    rs.save_json(path)
    text = path.read_text()
    data = json.loads(text)
    assert data["format"] == FORMAT
    assert list(data["tensors"]) == ["a", "b"]  # sorted keys
    assert "0.3333333333333333" in text  # repr precision
    assert data["tensors"]["b"]["histogram"] == {"bin_width": 0.25, "counts": [1, 0, 3], "origin": -0.5}
    assert text.endswith("}\n")


def _write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(content)
    return path


def _valid_doc() -> dict:
    rs = RangeSet({"t": TensorRange(0.0, 1.0, "minmax", 1, 1)}, method="minmax")
    return rs.to_json()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="onnxq-ranges/9"), "unsupported format 'onnxq-ranges/9'"),
        (lambda d: d.pop("format"), "not an onnxq ranges file"),
        (lambda d: d.update(extra=1), "unknown key"),
        (lambda d: d["tensors"]["t"].update(min="x"), "tensor 't': min must be a number"),
        (lambda d: d["tensors"]["t"].update(min=2.0), "min 2.0 > max 1.0"),
        (lambda d: d["tensors"]["t"].pop("count"), "lacks key"),
        (lambda d: d["tensors"]["t"].update(count=-1), "count must be >= 0"),
        (lambda d: d["tensors"]["t"].update(histogram={"bin_width": 1.0, "origin": 0.0, "counts": [1.5]}),
         "list of integers"),
        (lambda d: d.update(tensors=[]), "'tensors' must be a JSON object"),
    ],
)
def test_load_rejects_malformed_files(tmp_path: Path, mutate, message: str) -> None:
    doc = _valid_doc()
    mutate(doc)
    path = _write(tmp_path, json.dumps(doc))
    with pytest.raises(CalibrationError, match=message) as info:
        RangeSet.load_json(path)
    assert str(path) in str(info.value)


def test_load_rejects_unreadable_and_non_json(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="cannot read ranges file"):
        RangeSet.load_json(tmp_path / "missing.json")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        RangeSet.load_json(_write(tmp_path, "{"))
    with pytest.raises(CalibrationError, match="non-finite number NaN"):
        RangeSet.load_json(_write(tmp_path, json.dumps(_valid_doc()).replace("1.0", "NaN")))
    with pytest.raises(CalibrationError, match="must be a JSON object"):
        RangeSet.load_json(_write(tmp_path, "[]"))


def test_failed_save_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "dir_as_target"
    target.mkdir()
    with pytest.raises(OSError):
        RangeSet({}).save_json(target)  # os.replace onto a directory fails
    assert [p.name for p in tmp_path.iterdir()] == ["dir_as_target"]


def test_saved_file_is_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    RangeSet({}).save_json(path)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_tensor_range_helpers_and_validation() -> None:
    r = TensorRange(-1.0, 3.0, "minmax", 1, 8, data_min=-2.0, data_max=5.0, extreme=1)
    assert r.span == 4.0 and not r.is_constant and r.is_saturating
    c = TensorRange(np.float32(2.0), np.float32(2.0), "minmax", 1, 1)
    assert c.is_constant and not c.is_saturating and type(c.min) is float and c.data_min == 2.0
    assert TensorRange(0.0, 0.0, "minmax", 1, 1, nonfinite=3).is_saturating
    with pytest.raises(CalibrationError, match="min 1.0 > max 0.0"):
        TensorRange(1.0, 0.0, "minmax", 1, 1)
    with pytest.raises(CalibrationError, match="must be finite"):
        TensorRange(0.0, math.inf, "minmax", 1, 1)
    with pytest.raises(CalibrationError, match="given together"):
        TensorRange(0.0, 1.0, "minmax", 1, 1, axis=0)
    with pytest.raises(CalibrationError, match="same"):
        TensorRange(0.0, 1.0, "minmax", 1, 1, axis=0, channel_min=(0.0,), channel_max=(1.0, 2.0))
    with pytest.raises(CalibrationError, match="integer"):
        TensorRange(0.0, 1.0, "minmax", True, 1)


def test_histogram_is_immutable_and_has_exact_edges() -> None:
    source = np.array([1, 2, 3])
    h = Histogram(source, 0.125, -0.25)
    source[0] = 100
    assert h.counts.tolist() == [1, 2, 3] and h.total == 6
    with pytest.raises(ValueError):
        h.counts[0] = 5
    assert h.edges().tolist() == [-0.25, -0.125, 0.0, 0.125]
    assert h == Histogram(np.array([1, 2, 3], dtype=np.uint8), 0.125, -0.25)
    assert h != Histogram(np.array([1, 2, 4]), 0.125, -0.25)
    with pytest.raises(CalibrationError):
        Histogram(np.array([1.0]), 1.0, 0.0)
    with pytest.raises(CalibrationError):
        Histogram(np.array([-1]), 1.0, 0.0)
    with pytest.raises(CalibrationError):
        Histogram(np.array([1]), 0.0, 0.0)
