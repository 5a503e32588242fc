"""``onnxq sensitivity`` on the PP-OCRv4 recogniser: evaluations per second and total time, cold and cached.

The recogniser comes from the rapidocr-onnxruntime wheel (``models/zoo.py``); its samples are
rendered text lines preprocessed like rapidocr, batch 6 x [3, 48, 320] (``benchmarks/ocr_data.py``,
the calibration seed of ``bench_static``). Three measurements, in this process:

* ``cold``: :func:`onnxq.sensitivity` with an empty cache: the static pipeline up to annotation
  (calibration included), then every evaluation (2 per unit + the float and full-int8 baselines)
  with the default ``switch`` engine — one onnxruntime session for all of them;
* ``cached``: the same call again: the run and every evaluation come from the cache;
* engines: on ``--compare-units`` units spread over the graph, the ``switch`` engine against
  ``rebuild`` (one session built per evaluation, onnxruntime's int8 kernels): evaluations per second
  (session building included) and how far their SQNRs and rankings agree, per kind (only-float
  differs by design where onnxruntime quantizes a float Conv's weights itself, see
  ``passes/quantization/_switchable.py``).

Evaluations per second count evaluations run, over the time spent evaluating (setup excluded: it is
reported separately). Timings swing on a shared machine: the JSON records the load average.

    python benchmarks/bench_sensitivity.py [--samples 16] [--eval-samples 8] [--compare-units 8] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _harness import data
from _harness.report import print_table, write_json
from _static_models import CALIB_SEED, SPECS


def analyse(path: Path, feeds: list[dict[str, np.ndarray]], cache: str, args: argparse.Namespace) -> Any:
    import onnxq

    return onnxq.sensitivity(str(path), feeds, cache=cache, eval_samples=args.eval_samples, threads=args.threads)


def run_record(label: str, report: Any) -> dict[str, Any]:
    stats = report.to_dict()["stats"]
    return {"run": label, **stats}


def compare_engines(path: Path, feeds: list[dict[str, np.ndarray]], args: argparse.Namespace) -> dict[str, Any]:
    """Switch against rebuild on a subset of units: speed and agreement."""
    from onnxq import ir
    from onnxq.api import ConversionOptions
    from onnxq.api.sensitivity_analysis import _prepare
    from onnxq.metrics import choose_guards
    from onnxq.passes.quantization.sensitivity import Evaluation, Evaluator, fusion_units

    prepared = _prepare(ir.load(path), feeds, ConversionOptions(eval_samples=args.eval_samples), False)
    units = fusion_units(prepared.model, prepared.plan)
    picked = units[:: max(1, len(units) // args.compare_units)][: args.compare_units]
    wanted = [Evaluation("only-float", ()), *(ev for u in picked for ev in u.evaluations())]
    guards = choose_guards(prepared.model, ranges=prepared.ranges)
    out: dict[str, Any] = {"units": [u.name for u in picked], "evaluations": len(wanted)}
    sqnr: dict[str, list[float]] = {}
    for engine in ("switch", "rebuild"):
        evaluator = Evaluator(prepared.model, prepared.plan, prepared.ranges, feeds[: args.eval_samples], guards, engine=engine, threads=args.threads)  # type: ignore[arg-type]
        start = time.perf_counter()
        evaluator.start()
        setup = time.perf_counter() - start
        start = time.perf_counter()
        results = [evaluator.evaluate(ev) for ev in wanted]
        busy = time.perf_counter() - start
        sqnr[engine] = [min((v for v in r.sqnr_db if v is not None), default=float("inf")) for r in results]
        out[engine] = {"setup_s": setup, "seconds": busy, "evaluations_per_second": len(wanted) / busy, "sessions": evaluator.sessions}
        print(f"  {engine}: {len(wanted)} evaluations in {busy:.1f} s (+{setup:.1f} s setup), {evaluator.sessions} session(s)", flush=True)
    a, b = np.array(sqnr["switch"]), np.array(sqnr["rebuild"])
    for kind, at in (("only_quantized", slice(1, None, 2)), ("only_float", slice(2, None, 2))):
        x, y = a[at], b[at]
        finite = np.isfinite(x) & np.isfinite(y)
        out[f"max_abs_sqnr_diff_db_{kind}"] = float(np.max(np.abs(x[finite] - y[finite]))) if finite.any() else None
        out[f"rank_correlation_{kind}"] = _spearman(x, y)
    out["full_plan_sqnr_db"] = {"switch": float(a[0]), "rebuild": float(b[0])}
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2:
        return None
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=16, help="Samples (batch 6 each) to calibrate on.")
    parser.add_argument("--eval-samples", type=int, default=8, help="Samples each evaluation runs on (the CLI's default).")
    parser.add_argument("--compare-units", type=int, default=8, help="Units on which switch and rebuild are compared (0: skip).")
    parser.add_argument("--no-runs", action="store_true", help="Skip the cold and cached runs (only compare the engines).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        path = data.zoo_file("ppocr-rec")
    except data.Skip as e:
        print(f"skipped: {e}")
        return 0
    feeds, _ = SPECS["ppocr-rec"].data(path, args.samples, CALIB_SEED)
    load = os.getloadavg()
    print(f"ppocr-rec: {args.samples} samples (batch 6), evaluations on {args.eval_samples}; load average {load[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    records: list[dict[str, Any]] = []
    top: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="onnxq-sensitivity-bench-") as cache:
        for label in () if args.no_runs else ("cold", "cached"):
            start = time.perf_counter()
            report = analyse(path, feeds, cache, args)
            records.append(run_record(label, report) | {"wall_s": time.perf_counter() - start})
            print(f"  {label}: {time.perf_counter() - start:.1f} s", flush=True)
            top = [[u.name, "+".join(u.ops), u.only_quantized.worst_sqnr_db, u.only_float.worst_sqnr_db, u.damage] for u in report.units[:10]]
    engines = compare_engines(path, feeds, args) if args.compare_units else None
    if records:
        print("\n## sensitivity, switch engine")
        headers = ["run", "units", "evaluations", "run now", "shared", "cached", "sessions", "setup s", "evals/s", "total s"]
        keys = ["run", "units", "evaluations", "evaluated", "shared", "cached", "sessions", "setup_seconds", "evaluations_per_second", "wall_s"]
        print_table(headers, [[r[k] for k in keys] for r in records])
        print("\n## most sensitive units (SQNR dB of the output, only this unit quantized / only it float)")
        print_table(["unit", "ops", "only quantized", "only float", "damage"], top)
    if engines is not None:
        print(f"\n## engines on {engines['evaluations']} evaluations of {len(engines['units'])} units")
        rows = [[e, engines[e]["evaluations_per_second"], engines[e]["sessions"], engines[e]["setup_s"]] for e in ("switch", "rebuild")]
        print_table(["engine", "evals/s", "sessions", "setup s"], rows)
        for kind in ("only_quantized", "only_float"):
            diff, corr = engines[f"max_abs_sqnr_diff_db_{kind}"], engines[f"rank_correlation_{kind}"]
            print(f"{kind}: max |SQNR switch - rebuild| {diff:.2f} dB, rank correlation {corr:.3f}")
        print(f"full plan SQNR: switch {engines['full_plan_sqnr_db']['switch']:.2f} dB, rebuild {engines['full_plan_sqnr_db']['rebuild']:.2f} dB")
    if args.json:
        write_json(args.json, {"load_average": load, "args": vars(args) | {"json": str(args.json)}, "runs": records, "top": top, "engines": engines})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
