"""The CLI's output layer: tables on a terminal, JSON on request, nothing else prints."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

__all__ = ["echo", "echo_json", "write_json", "table", "human_bytes", "to_jsonable", "printable"]


def printable(text: str) -> str:
    """``text`` safe to print on a UTF-8 stream: bytes of a non-UTF-8 file name (which Python
    decodes to lone surrogates) are shown as ``\\xff`` escapes instead of failing the write."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape") if _only_escapes(text) else text.encode("utf-8", "backslashreplace")
        return raw.decode("utf-8", "backslashreplace")


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def echo(message: str = "", *, err: bool = False) -> None:
    """``click.echo`` of :func:`printable` text: the only way commands print."""
    click.echo(printable(message), err=err)


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and paths for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value


def dumps(data: Any) -> str:
    return json.dumps(to_jsonable(data), indent=2, sort_keys=False)


def echo_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout."""
    echo(dumps(data))


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (temp file + rename) into an existing folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(data) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def human_bytes(n: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table (rich on a terminal, aligned text otherwise)."""
    cells = [[printable(_cell(c)) for c in row] for row in rows]
    title = printable(title) if title else title
    if sys.stdout.isatty():
        from rich.console import Console  # a dependency (pyproject), imported only for terminals
        from rich.table import Table

        t = Table(title=title, show_lines=False)
        for c in columns:
            t.add_column(c)
        for row in cells:
            t.add_row(*row)
        Console().print(t)  # rich replaces what the terminal cannot encode
        return
    widths = [max(len(str(c)), *(len(r[i]) for r in cells)) if cells else len(str(c)) for i, c in enumerate(columns)]
    if title:
        echo(title)
    echo("  ".join(str(c).ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if "." in f"{value:.4f}" else f"{value}"
    return str(value)
