"""Latency against the incumbent's best: fp32 vs onnxruntime.quantization (default and tuned
configurations) vs onnxq, side by side in one run.

For every model the same seeded calibration set feeds every quantizer; every contender is timed
interleaved on the same held-out input at 1 thread (``_harness.timing``, medians) and evaluated
against fp32 on the same held-out set (cosine of the worst output, plus the task metric of
``bench_static``: top-1 agreement, char accuracy, mask IoU).

Contenders (all through ``_harness.incumbent.quantize_static``: opset 13 + ``quant_pre_process`` first):

==================  ===============================================================================
``ort-default``     ``quantize_static(model, out, reader)``: onnxruntime's own defaults (QDQ, QInt8
                    activations and weights, per tensor, MinMax)
``ort-all``         QDQ, per_channel, reduce_range (this CPU has no VNNI: u8·s8 saturates without
                    it), QUInt8 activations / QInt8 weights, Percentile 99.999, every op type
``ort-compute``     as ``ort-all`` with ``op_types_to_quantize`` = Conv, MatMul, Gemm (no int8 glue:
                    fewest conversions) and ``QDQKeepRemovableActivations`` off
``onnxq``           ``onnxq.quantize_static`` with defaults (latency tuning at 1 thread)
``onnxq-notune``    ``onnxq convert --no-tune``: everything quantizable, islands closed
==================  ===============================================================================

"incumbent best" per model is the fastest ``ort-*`` whose accuracy metric is within 1 point (0.01)
of the best ``ort-*`` one; the table prints ``onnxq / incumbent-best`` latency.

    python benchmarks/bench_speed.py [--models cnn,ppocr-cls] [--quick] [--json out.json]

Takes ~10-15 minutes for all models on a 2-core machine; do not run it twice at once.
"""

from __future__ import annotations

import argparse
from typing import Any

from _harness import cli
from _harness.comparison import Comparison, Contender, Settings, run_all
from _harness.report import fmt, latency_median, print_heading, print_table, write_json
from _harness.timing import RunPlan, TimingSpec
from _static_models import SPECS, ModelSpec, _builder_spec
from bench_static import METRIC_LABEL, task_metric

FP32 = "fp32"
_BEST = {"per_channel": True, "reduce_range": True, "activation_type": "QUInt8", "weight_type": "QInt8"}
INCUMBENT: dict[str, dict[str, Any]] = {
    "ort-default": {"method": "MinMax", "config": {"defaults": True}},
    "ort-all": {"method": "Percentile", "config": dict(_BEST)},
    "ort-compute": {
        "method": "Percentile",
        "config": {**_BEST, "op_types_to_quantize": ["Conv", "MatMul", "Gemm"], "extra_options": {"QDQKeepRemovableActivations": False}},
    },
}
ONNXQ = ("onnxq", "onnxq-notune")

MODELS = {
    "cnn": SPECS["cnn"],
    "mobilenet": SPECS["mobilenet"],
    "yolo-detector": _builder_spec(
        "yolo-detector",
        {"input_size": 320, "width": 32, "num_classes": 80},
        {"input": (1, 3, 320, 320)},
        "cosine",
        "builder yolo-detector (SiLU) 320x320, width 32, 80 classes, batch 1",
    ),
    "transformer": SPECS["transformer"],
    "ppocr-cls": SPECS["ppocr-cls"],
    "ppocr-det": SPECS["ppocr-det"],
    "ppocr-rec": SPECS["ppocr-rec"],
}


def comparison(spec: ModelSpec, args: argparse.Namespace) -> Comparison:
    feeds = spec.feeds_for(args.calib, args.eval)
    contenders = [Contender(FP32)]
    contenders += [Contender(name, "ort-static", options, data=True) for name, options in INCUMBENT.items()]
    contenders.append(Contender("onnxq", "onnxq-static", {"data": "reader"}, data=True))
    contenders.append(Contender("onnxq-notune", "onnxq-convert", {"mode": "static", "tune": False}, data=True))
    return Comparison(spec.name, spec.description, spec.make, feeds, contenders, task_metric(spec.metric), extra={"metric": spec.metric})


def _acc(v: dict[str, Any]) -> float | None:
    return ((v.get("accuracy") or {}).get("task") or {}).get("value")


def incumbent_best(variants: dict[str, Any]) -> str | None:
    """The fastest ``ort-*`` within 0.01 of the most accurate ``ort-*`` (see the module docstring)."""
    ok = {n: v for n, v in variants.items() if n.startswith("ort-") and v.get("ok") and latency_median(v) is not None}
    if not ok:
        return None
    accs = [a for a in (_acc(v) for v in ok.values()) if a is not None]
    top = max(accs) if accs else None
    fine = [n for n, v in ok.items() if top is None or _acc(v) is None or _acc(v) >= top - 0.01]  # type: ignore[operator]
    return min(fine, key=lambda n: latency_median(ok[n]))  # type: ignore[arg-type,return-value]


def rows(res: dict[str, Any]) -> list[list[str]]:
    variants = res.get("variants") or {}
    if not variants:
        return [[res["model"], "FAILED", res.get("error", "")] + [""] * 6]
    fp = latency_median(variants.get(FP32))
    best = incumbent_best(variants)
    best_ms = latency_median(variants[best]) if best else None
    out = []
    for name, v in variants.items():
        ms = latency_median(v)
        acc = v.get("accuracy") or {}
        if not v.get("ok"):
            out.append([res["model"], name, "failed: " + str(v.get("error", ""))[:60], "", "", "", "", ""])
            continue
        ratio = fmt(ms / best_ms, ".2f") if name.startswith("onnxq") and ms and best_ms else ""
        mark = " (best)" if name == best else ""
        out.append(
            [
                res["model"],
                name + mark,
                fmt(ms, ".2f"),
                fmt(ms / fp if ms and fp else None, ".2f"),
                ratio,
                fmt(acc.get("cosine"), ".4f"),
                f"{METRIC_LABEL[res['metric']]} {fmt(_acc(v), '.4f')}",
                fmt(v.get("seconds"), ".1f"),
            ]
        )
    return out


def show(res: dict[str, Any]) -> None:
    if not print_heading(res):
        return
    print_table(["model", "variant", "ms (1 thr)", "vs fp32", "onnxq/inc-best", "cosine", "task metric", "convert s"], rows(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--keep")
    ap.add_argument("--quick", action="store_true", help="few samples and runs: a smoke test")
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--eval", type=int, default=8)
    ap.add_argument("--budget", type=float, default=1.5, help="seconds of timed runs for the fastest contender")
    args = ap.parse_args()
    names = cli.comma_list(args.models)
    cli.known_only(ap, names, list(MODELS), "model")
    if args.quick:
        args.calib, args.eval, args.budget = 4, 2, 0.3
    settings = Settings(10.0, 1200.0, eval_threads=1, timing=TimingSpec([1], RunPlan(args.budget, 10, 2000, rule="fastest"), warmup=2, reuse_sessions=False))
    print(f"onnxruntime {cli.onnxruntime_version()}, 1 thread, {args.calib} calibration / {args.eval} held-out samples")
    results = run_all([comparison(MODELS[n], args) for n in names], settings, keep=args.keep, prefix="bench-speed-", show=show)
    print("\n=== summary: latency ms at 1 thread (ratio vs fp32), onnxq / incumbent-best")
    table = []
    for res in results:
        v = res.get("variants") or {}
        best = incumbent_best(v)
        fp = latency_median(v.get(FP32))
        cells = [res["model"], fmt(fp, ".2f")]
        for name in ("ort-default", best, *ONNXQ):
            ms = latency_median(v.get(name)) if name else None
            cells.append(f"{fmt(ms, '.2f')} ({fmt(ms / fp if ms and fp else None, '.2f')}x)" + (f" [{name}]" if name == best else ""))
        best_ms = latency_median(v.get(best)) if best else None
        cells += [fmt(latency_median(v.get(q)) / best_ms if best_ms and latency_median(v.get(q)) else None, ".2f") for q in ONNXQ]
        table.append(cells)
    print_table(["model", "fp32", "ort-default", "incumbent best", "onnxq", "onnxq-notune", "onnxq/best", "notune/best"], table)
    if args.json_out:
        write_json(args.json_out, {"results": results})


if __name__ == "__main__":
    main()
