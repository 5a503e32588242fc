"""Formatting cells, printing tables (aligned text or Markdown) and writing JSON results.

One table printer serves every script: :func:`print_table` lays out rows in aligned columns
(numbers right-aligned unless ``align`` says otherwise, ``None`` as ``-``) under a dashed rule;
:func:`print_markdown` prints the same rows as a Markdown table for the README.
:func:`column_table` turns records and declarative :class:`Column` specs into such rows.
"""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ._child import json_default

__all__ = [
    "Column",
    "column_table",
    "describe_exception",
    "finite",
    "fmt",
    "json_default",
    "latency_median",
    "one_line",
    "print_heading",
    "print_markdown",
    "print_records",
    "print_table",
    "progress",
    "ratio",
    "write_json",
]


def progress(text: str) -> None:
    """A progress line on stdout, flushed (benchmarks print while they measure)."""
    print(text, flush=True)


def one_line(text: Any, limit: int = 160) -> str:
    """``text`` with its whitespace collapsed, cut to ``limit`` characters (for error cells)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_exception(e: BaseException, limit: int = 100) -> str:
    """``Type: message``; for an empty message (a bare assert) the function that raised it."""
    text = str(e).strip()
    if not text:
        frames = traceback.extract_tb(e.__traceback__)
        text = f"in {Path(frames[-1].filename).stem}.{frames[-1].name}" if frames else ""
    return one_line(f"{type(e).__name__}: {text}", limit)


#: Unit specs of :func:`fmt` besides ``format()`` specs: value -> text.
_UNITS = {
    "x": lambda v: f"{v:.2f}x",
    "mb": lambda v: f"{v / 1e6:.2f}",
    "m": lambda v: f"{v / 1e6:.3f}",
    "g": lambda v: f"{v / 1e9:.3f}",
    "%": lambda v: f"{100 * v:.1f}%",
}


def fmt(value: Any, spec: str = ".3f", none: str = "-") -> str:
    """``format(value, spec)`` for a table cell.

    ``none`` for a missing figure, a string as it is, ``inf``/``nan`` spelled out; ``spec`` may also
    be a unit: ``x`` (ratio ``1.23x``), ``mb`` (bytes as MB), ``m`` (millions), ``g`` (billions), ``%``.
    """
    if value is None:
        return none
    if isinstance(value, str):
        return value
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    try:
        return _UNITS[spec](value) if spec in _UNITS else format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None when either figure is missing (or ``den`` is zero)."""
    return num / den if num is not None and den else None


def latency_median(variant: Mapping[str, Any] | None, threads: int = 1) -> float | None:
    """Median latency (ms) at ``threads`` from a result ``{"latency": {"1": {"median_ms": ...}}}``."""
    return (((variant or {}).get("latency") or {}).get(str(threads)) or {}).get("median_ms")


# ---- tables -------------------------------------------------------------------------------------


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 10**-digits):
            return f"{value:.{max(digits, 1)}g}"
        return f"{value:.{digits}f}"
    return str(value)


def _right_aligned(rows: Sequence[Sequence[Any]], columns: int, align: Sequence[str] | None) -> list[bool]:
    if align is not None:
        return [a == "r" for a in align]
    return [bool(rows) and all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(columns)]


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    digits: int = 2,
    align: Sequence[str] | None = None,
    file: TextIO | None = None,
) -> None:
    """Print ``rows`` under ``headers`` in aligned columns.

    Numbers are formatted with ``digits`` decimals; ``align`` gives ``"l"``/``"r"`` per column
    (default: right for columns holding only numbers, left otherwise).
    """
    cells = [[_cell(v, digits) for v in row] for row in rows]
    right = _right_aligned(rows, len(headers), align)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if right[i] else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    print(line(list(headers)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in cells:
        print(line(r), file=file)


def print_markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, align: Sequence[str] | None = None,
                   file: TextIO | None = None) -> None:
    """Print a Markdown table (``align``: ``"l"``/``"r"`` per column, default left)."""
    marks = ["---:" if a == "r" else "---" for a in (align or ["l"] * len(headers))]
    print("| " + " | ".join(headers) + " |", file=file)
    print("|" + "|".join(marks) + "|", file=file)
    for row in rows:
        print("| " + " | ".join("" if v is None else str(v) for v in row) + " |", file=file)


@dataclass(frozen=True)
class Column:
    """One table column: the record ``key`` shown under ``header``, formatted by ``spec`` (see :func:`fmt`)."""

    key: str
    header: str
    spec: str = "s"


def column_table(columns: Sequence[Column], records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows for :func:`print_table` (use ``align=["l"] + ["r"] * ...``)."""
    return [c.header for c in columns], [[fmt(r.get(c.key), c.spec) for c in columns] for r in records]


def print_heading(result: Mapping[str, Any]) -> bool:
    """``=== model: description`` of a model's result; False (after saying why) when it was skipped."""
    print(f"\n=== {result['model']}: {result['description']}")
    if "skipped" in result:
        print(f"  skipped: {result['skipped']}")
        return False
    return True


def print_records(title: str, columns: Sequence[Column], records: Sequence[Mapping[str, Any]]) -> None:
    """``## title`` and the records without an ``error`` as a table (first column left-aligned, the
    others right); then ``<first cell>: FAILED: <error>`` per failed record, ``  * <first cell>: <note>``
    per record with a ``note``."""
    print(f"\n## {title}")
    headers, cells = column_table(columns, [r for r in records if not r.get("error")])
    print_table(headers, cells, align=["l"] + ["r"] * (len(columns) - 1))
    first = columns[0].key
    for r in records:
        if r.get("error"):
            print(f"{r.get(first)}: FAILED: {r['error']}")
    for r in records:
        if r.get("note"):
            print(f"  * {r.get(first)}: {r['note']}")


# ---- JSON ---------------------------------------------------------------------------------------


def finite(o: Any) -> Any:
    """inf / nan as strings (strict JSON has neither; SQNR of fp32 against itself is inf)."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


def _default(value: Any) -> Any:
    try:
        return json_default(value)
    except TypeError:
        return str(value)


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as strict JSON (non-finite floats as strings, other objects as text)."""
    text = json.dumps(finite(json.loads(json.dumps(payload, default=_default))), indent=1, allow_nan=False)
    Path(path).write_text(text)
    print(f"\nwrote {path}")
