"""The harness's table printer, cell formatting and JSON output (``benchmarks/_harness/report.py``)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks._harness import report
from benchmarks._harness.report import Column


def _printed(fn, *args, **kwargs) -> list[str]:
    out = io.StringIO()
    fn(*args, **kwargs, file=out)
    return out.getvalue().splitlines()


@pytest.mark.parametrize(
    ("value", "spec", "text"),
    [
        (None, ".2f", "-"),
        ("failed", ".2f", "failed"),
        (math.inf, ".1f", "inf"),
        (math.nan, ".3f", "nan"),
        (1.23456, ".2f", "1.23"),
        (1.5, "x", "1.50x"),
        (4_720_000, "mb", "4.72"),
        (177_000, "m", "0.177"),
        (348_000_000, "g", "0.348"),
        (0.4962, "%", "49.6%"),
        (8, "d", "8"),
        (object, "d", str(object)),  # a value the spec cannot format is shown as text, never an error
    ],
)
def test_fmt_specs_and_units(value, spec, text) -> None:
    assert report.fmt(value, spec) == text


def test_ratio_and_latency_median_tolerate_missing_figures() -> None:
    assert report.ratio(3.0, 2.0) == 1.5
    assert report.ratio(None, 2.0) is None and report.ratio(1.0, 0) is None
    variant = {"latency": {"1": {"median_ms": 2.5}}}
    assert report.latency_median(variant) == 2.5
    assert report.latency_median(variant, 2) is None and report.latency_median(None) is None


def test_print_table_right_aligns_numeric_columns_only() -> None:
    lines = _printed(report.print_table, ["model", "s", "note"], [["rec", 1.5, "ok"], ["det-long", None, "x"]])
    assert lines == [
        "model        s  note",
        "--------  ----  ----",
        "rec       1.50  ok",
        "det-long     -  x",
    ]


def test_print_table_align_overrides_and_digits() -> None:
    lines = _printed(report.print_table, ["a", "b"], [["x", "1"], ["yy", "22"]], align=["l", "r"])
    assert lines[2:] == ["x    1", "yy  22"]
    assert _printed(report.print_table, ["v"], [[0.0001], [12345678.0]], digits=1)[2:] == ["0.0001", " 1e+07"]  # %g off-scale


def test_print_markdown() -> None:
    lines = _printed(report.print_markdown, ["precision", "MB"], [["fp32", "90.37"], ["int8", None]], align=["l", "r"])
    assert lines == ["| precision | MB |", "|---|---:|", "| fp32 | 90.37 |", "| int8 |  |"]


def test_column_table_and_print_records(capsys: pytest.CaptureFixture[str]) -> None:
    columns = [Column("variant", "variant"), Column("speedup", "latency x", "x"), Column("sparsity", "sparsity", "%")]
    rows = [
        {"variant": "fp32", "speedup": 1.0, "sparsity": 0.0},
        {"variant": "l1 30%", "speedup": 1.27, "sparsity": 0.3, "note": "1 group left unpruned"},
        {"variant": "broken", "error": "pass failed: ValueError: no"},
    ]
    headers, cells = report.column_table(columns, rows[:2])
    assert headers == ["variant", "latency x", "sparsity"]
    assert cells == [["fp32", "1.00x", "0.0%"], ["l1 30%", "1.27x", "30.0%"]]
    report.print_records("channel pruning", columns, rows)
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["", "## channel pruning", "variant  latency x  sparsity"]
    assert out[4] == "fp32         1.00x      0.0%"  # first column left-aligned, the others right
    assert out[-2:] == ["broken: FAILED: pass failed: ValueError: no", "  * l1 30%: 1 group left unpruned"]


def test_print_heading_says_why_a_model_was_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert report.print_heading({"model": "cnn", "description": "builder"}) is True
    assert report.print_heading({"model": "rec", "description": "zoo", "skipped": "no wheel"}) is False
    assert capsys.readouterr().out.splitlines() == ["", "=== cnn: builder", "", "=== rec: zoo", "  skipped: no wheel"]


def test_write_json_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    report.write_json(path, {"sqnr": math.inf, "values": np.array([1.5, np.nan]), "file": Path("/x"), "n": np.int64(3)})
    assert json.loads(path.read_text()) == {"sqnr": "inf", "values": [1.5, "nan"], "file": "/x", "n": 3}


def test_describe_exception_names_the_function_of_a_bare_assert() -> None:
    def failing() -> None:
        raise AssertionError()

    try:
        failing()
    except AssertionError as e:
        assert report.describe_exception(e) == "AssertionError: in test_harness_report.failing"
    assert report.one_line("a\n  b " + "c" * 200, 10) == "a b ccc..."
