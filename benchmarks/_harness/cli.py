"""What the scripts' command lines and main loops share: list options, work folders, the per-model loop."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .data import Skip
from .report import one_line

__all__ = ["add_common_options", "comma_list", "known_only", "onnxruntime_version", "run_models", "work_folder"]


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [v.strip() for v in text.split(",") if v.strip()]


def add_common_options(ap: argparse.ArgumentParser, models: Sequence[str]) -> None:
    """``--models`` (comma list, default all of ``models``), ``--json`` and ``--keep``."""
    ap.add_argument("--models", default=",".join(models), help=f"comma list (default all): {','.join(models)}")
    ap.add_argument("--json", dest="json_out", help="write every measurement here")
    ap.add_argument("--keep", help="keep the fp32 and converted files in this folder")


def known_only(ap: argparse.ArgumentParser, values: Sequence[str], known: Sequence[str], what: str) -> None:
    """``ap.error`` naming the values that are not in ``known``."""
    unknown = [v for v in values if v not in known]
    if unknown:
        ap.error(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")


def onnxruntime_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}, {os.cpu_count()} cpus"


@contextmanager
def work_folder(keep: str | None, prefix: str) -> Iterator[Path]:
    """``keep`` (created, left in place) or a temporary folder removed afterwards."""
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield root
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def run_models(names: Sequence[str], bench: Callable[[str], dict[str, Any]], identity: Callable[[str], dict[str, Any]],
               show: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """``bench(name)`` for every model, one broken model never losing the others.

    A :class:`Skip` becomes ``{**identity(name), "skipped": reason}``, any other exception
    ``"benchmark error: ..."`` (traceback printed); ``seconds`` is the model's wall time; ``show``
    prints each result as soon as it is in.
    """
    results = []
    for name in names:
        print(f"\n--- {name}", flush=True)
        start = time.perf_counter()
        try:
            res = bench(name)
        except Skip as e:
            res = {**identity(name), "skipped": str(e)}
        except Exception as e:  # noqa: BLE001 - one broken model must not lose the others
            traceback.print_exc()
            res = {**identity(name), "skipped": f"benchmark error: {one_line(e)}"}
        res["seconds"] = round(time.perf_counter() - start, 1)
        results.append(res)
        show(res)
    return results
