"""Greedy float fallback (``tune-latency``) against the mixed-precision search at the same accuracy target.

For each builder (``bench_static``'s sizes: the MLP 784-1024x3-10 at batch 256, the transformer at
hidden 384, 6 layers, seq 128), one static conversion per tuner on the same calibration samples:

* ``greedy``: the default pipeline with the target as tune-latency's guard bar
  (``min_agreement`` / ``min_cosine``);
* ``mixed``: ``accuracy_target`` set, so ``mixed-precision`` runs in place of tune-latency (its
  default search space: int8, dynamic int8, int16, fp16, fp32);
* with ``--forced``, at each model's first target: ``mixed int16`` and ``mixed fp16``, the search
  restricted to that precision or fp32 (``precisions``), so what int16 activations and float16
  compute cost and keep on this machine's onnxruntime is measured even where the full search never
  picks them.

Both results and fp32 are then timed interleaved in one run at 1 thread (medians; the harness's
``fastest`` run plan), and their accuracy is read against fp32 on held-out samples (top-1 agreement
for the MLP's logits, mean cosine of the transformer's ``last_hidden_state``). The mixed search's
own record (evaluations, chosen plan, precision counts) is printed beside it.

    python benchmarks/bench_mixed_precision.py [--models mlp transformer] [--calib 32] [--eval 32] [--forced] [--json out.json]

Timings swing on a shared machine (the JSON records the load average); on CPUs without VNNI int8 is
often not faster than fp32, which both tuners see and which decides many of their choices.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _harness.report import print_table, write_json
from _harness.timing import RunPlan, TimingSpec, time_contenders
from _static_models import CALIB_SEED, EVAL_SEED, SPECS

#: model → [(greedy tune-latency options, the mixed-precision target)]: the same bar on the same metric.
TARGETS: dict[str, list[tuple[dict[str, Any], str]]] = {
    "mlp": [({"min_agreement": bar}, f"agreement>={bar}") for bar in (0.97, 0.98, 0.99)],
    "transformer": [({"min_cosine": bar}, f"cosine>={bar}") for bar in (0.999, 0.9995)],
}


def _accuracy(metric: str, reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    if metric == "top1":
        return float(np.mean([np.mean(np.argmax(r, -1) == np.argmax(c, -1)) for r, c in zip(reference, candidate)]))
    cos = []
    for r, c in zip(reference, candidate):
        a, b = r.ravel().astype(np.float64), c.ravel().astype(np.float64)
        cos.append(float(a @ b / max(np.sqrt((a @ a) * (b @ b)), 1e-30)))
    return float(np.mean(cos))


def _outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return [sess.run(None, {k: v for k, v in f.items() if k in names})[0] for f in feeds]


def bench_model(name: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    import onnxq

    spec = SPECS[name]
    fp32 = spec.make(workdir)
    calib, _ = spec.data(fp32, args.calib, CALIB_SEED)
    held_out, _ = spec.data(fp32, args.eval, EVAL_SEED)
    paths: dict[str, Path] = {"fp32": fp32}
    records: dict[str, dict[str, Any]] = {"fp32": {"model": name, "tuner": "fp32", "target": "-"}}
    runs = [(f"{tuner} {target}", tuner, target, options) for greedy_options, target in TARGETS[name]
            for tuner, options in (("greedy", greedy_options), ("mixed", {"accuracy_target": (target,)}))]
    if args.forced:
        target = TARGETS[name][0][1]
        runs += [
            (f"mixed {p} {target}", f"mixed {p}", target, {"accuracy_target": (target,), "pass_options": {"mixed-precision": {"precisions": [p]}}})
            for p in ("int16", "fp16")
        ]
    for key, tuner, target, options in runs:
        start = time.perf_counter()
        result = onnxq.convert(str(fp32), calib, threads=1, **options)
        seconds = time.perf_counter() - start
        paths[key] = workdir / f"{len(paths)}.onnx"
        result.save(paths[key])
        report = result.report.to_dict()
        record: dict[str, Any] = {"model": name, "tuner": tuner, "target": target, "convert_s": round(seconds, 1), "int8_nodes": report["quantized_nodes"]}
        mixed = report.get("mixed_precision")
        if mixed is not None:
            counts: dict[str, int] = {}
            for p in mixed["precisions"].values():
                counts[p] = counts.get(p, 0) + 1
            record.update(met=mixed["met"], chosen=mixed["chosen"], evaluations=mixed["evaluations"], precisions=counts, frontier=mixed["frontier"])
            record["int8_nodes"] = counts.get("int8", 0)  # quantized_nodes also counts the int16 ones
            if mixed["unmet"]:
                record["unmet"] = mixed["unmet"]
        records[key] = record
        print(f"  {name} {key}: converted in {seconds:.1f} s, {report['quantized_nodes']} int8 nodes", flush=True)
    reference = _outputs(fp32, held_out)
    for tuner, path in paths.items():
        records[tuner]["accuracy"] = round(_accuracy(spec.metric, reference, _outputs(path, held_out)), 5)
        records[tuner]["metric"] = spec.metric
    timing = TimingSpec(threads=(1,), plan=RunPlan(budget_s=args.time_budget, min_runs=10, max_runs=400), warmup=3)
    latency, errors = time_contenders(paths, held_out[0], timing)
    for tuner in paths:
        entry = latency[tuner].get("1")
        records[tuner]["median_ms"] = entry["median_ms"] if entry else None
    base = records["fp32"]["median_ms"]
    for r in records.values():
        r["speedup"] = round(base / r["median_ms"], 3) if base and r["median_ms"] else None
    if errors:
        print(f"  timing errors: {errors}")
    return list(records.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--calib", type=int, default=32, help="Calibration samples (the first 8 are the tuners' evaluation samples).")
    parser.add_argument("--eval", type=int, default=32, help="Held-out samples the accuracy is read on.")
    parser.add_argument("--time-budget", type=float, default=20.0, help="Seconds of interleaved timing for the fastest model.")
    parser.add_argument("--forced", action="store_true", help="Also the search restricted to int16 or fp16 (and fp32).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} on {os.cpu_count()} CPUs; 1 thread, interleaved medians", flush=True)
    rows: list[dict[str, Any]] = []
    for name in args.models:
        with tempfile.TemporaryDirectory(prefix=f"onnxq-mixed-{name}-") as tmp:
            rows += bench_model(name, args, Path(tmp))
    headers = [
        "model", "tuner", "target", "speedup vs fp32", "median ms", "accuracy", "int8 nodes", "dynamic", "int16", "fp16", "fp32 units' nodes", "evaluations",
        "convert s",
    ]
    table = []
    for r in rows:
        counts = r.get("precisions", {})
        spent = r.get("evaluations")
        evals = f"{spent['sensitivity']}+{spent['search']} ({spent['timed']} timed)" if spent else "-"
        table.append([
            r["model"], r["tuner"], r["target"], r["speedup"], r["median_ms"], r["accuracy"], r.get("int8_nodes", "-"),
            counts.get("dynamic-int8", "-"), counts.get("int16", "-"), counts.get("fp16", "-"), counts.get("fp32", "-"), evals, r.get("convert_s", "-"),
        ])
    print()
    print_table(headers, table, digits=3)
    for r in rows:
        if r.get("unmet"):
            print(f"{r['model']} {r['tuner']}: {r['unmet']}")
    if args.json:
        write_json(args.json, {"load_average": load, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
