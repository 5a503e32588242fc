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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import Skip
from .report import one_line

__all__ = [
    "RunDefaults", "add_common_options", "add_run_options", "comma_list", "in_process_args", "known_only", "onnxruntime_version", "resolve_run_options",
    "run_models", "work_folder",
]


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [v.strip() for v in text.split(",") if v.strip()]


def add_common_options(ap: argparse.ArgumentParser, models: Sequence[str]) -> None:
    """``--models`` (comma list, default all of ``models``), ``--json`` and ``--keep``."""
    ap.add_argument("--models", default=",".join(models), help=f"comma list (default all): {','.join(models)}")
    ap.add_argument("--json", dest="json_out", help="write every measurement here")
    ap.add_argument("--keep", help="keep the fp32 and converted files in this folder")


@dataclass(frozen=True)
class RunDefaults:
    """Defaults of the options every side-by-side script has, as ``(full run, --quick)`` pairs."""

    budget: tuple[float, float]
    min_runs: tuple[int, int]
    max_runs: tuple[int, int]
    mem_cap_gb: float
    timeout: float


def add_run_options(ap: argparse.ArgumentParser, models: Sequence[str], d: RunDefaults, *, budget_help: str) -> None:
    """:func:`add_common_options` plus ``--quick``, ``--threads``, the run plan (``--budget``,
    ``--min-runs``, ``--max-runs``) and the conversion subprocess limits (``--mem-cap-gb``, ``--timeout``)."""
    add_common_options(ap, models)
    ap.add_argument("--quick", action="store_true", help="small sizes, few samples and runs: a smoke test, not a measurement")
    ap.add_argument("--threads", default="1,2", help="thread counts to time (1 is always included: it is the reference; others are noisy)")
    ap.add_argument("--budget", type=float, help=f"{budget_help} (default {d.budget[0]:g}, quick {d.budget[1]:g})")
    ap.add_argument("--min-runs", type=int, help=f"at least this many interleaved runs (default {d.min_runs[0]}, quick {d.min_runs[1]})")
    ap.add_argument("--max-runs", type=int, help=f"at most this many (default {d.max_runs[0]}, quick {d.max_runs[1]})")
    ap.add_argument("--mem-cap-gb", type=float, default=d.mem_cap_gb, help="address-space cap of each conversion subprocess (GiB)")
    ap.add_argument("--timeout", type=float, default=d.timeout, help="seconds before a conversion is killed")


def resolve_run_options(ap: argparse.ArgumentParser, args: argparse.Namespace, models: Sequence[str], d: RunDefaults) -> None:
    """Turn the options of :func:`add_run_options` into values: model and thread lists checked, the
    run plan filled from the full or quick defaults."""
    args.models = comma_list(args.models)
    known_only(ap, args.models, list(models), "model(s)")
    args.threads = sorted({1, *(int(t) for t in comma_list(args.threads))})
    pick = 1 if args.quick else 0
    args.budget = args.budget if args.budget is not None else d.budget[pick]
    args.min_runs = args.min_runs or d.min_runs[pick]
    args.max_runs = args.max_runs or d.max_runs[pick]


def in_process_args(
    description: str, models: Sequence[str], argv: Sequence[str] | None, *, budget: float, budget_help: str
) -> tuple[argparse.Namespace, list[str]]:
    """The options of a script that converts in process (no subprocesses, one thread count):
    ``--models`` (checked), ``--quick``, ``--budget`` and ``--json``; returns them and the model list."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--models", default=",".join(models), help=f"comma-separated subset of {', '.join(models)}")
    ap.add_argument("--quick", action="store_true", help="smaller inputs and fewer samples")
    ap.add_argument("--budget", type=float, default=budget, help=budget_help)
    ap.add_argument("--json", help="write the results here")
    cfg = ap.parse_args(argv)
    names = comma_list(cfg.models)
    known_only(ap, names, list(models), "model(s)")
    return cfg, names


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
