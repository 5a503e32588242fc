"""Static quantization: fp32 vs onnxruntime's ``quantize_static`` vs onnxq, in one run.

For every model (builders from ``models/`` at benchmark sizes, the PP-OCR zoo models, and the
MiniLM export) the same calibration set (seeded synthetic for builders, rendered text for OCR
via ``benchmarks/ocr_data.py``) feeds every quantizer, and a separate held-out set measures:

* latency median at 1 thread: all variants' sessions timed round-robin on the same input
  (``_harness.timing``, rule "fastest": runs chosen so the fastest model still gets ``--budget``
  seconds); other ``--threads`` counts are reported separately and marked noisy;
* output SQNR and cosine vs fp32 on the held-out set (worst output), and the task metric:
  rec character accuracy vs ground truth (greedy CTC), cls top-1 vs labels, det mean and worst
  page mask IoU vs fp32's mask, builders top-1 agreement with fp32 (class scores) or cosine;
* file size, conversion wall time (measured inside the child around the whole conversion: for
  onnxruntime opset upgrade + quant_pre_process + quantize_static; for onnxq quantize_static +
  save) and peak RSS: each conversion runs in its own subprocess (``_harness.isolate``: peak = the
  child's VmHWM; ``--mem-cap-gb`` is an RLIMIT_AS cap, a conversion hitting it is reported as out
  of memory; ``--timeout`` kills it).

Variants: ``fp32`` (the original file); ``ort-minmax`` / ``ort-percentile``: onnxruntime
``quantize_static`` (QDQ, per_channel=True, QUInt8 activations, QInt8 weights) after what a user
needs to make it load (``_harness.incumbent``: opset 13 when older, then ``quant_pre_process``),
with onnxruntime's default calibration options (Percentile 99.999 like onnxq's default).
``onnxq``: ``onnxq.quantize.quantize_static`` with defaults (percentile, latency tuning at 1
thread). Every quantizer reads the same calibration set through the same streaming ``get_next()``
reader over a folder of .npz files (``--onnxq-data folder`` gives onnxq the folder path instead,
as ``onnxq convert --data DIR`` does).

A conversion that crashes, or an output that onnxruntime cannot load or run, is a result: it is
printed as ``failed: <reason>`` and the benchmark goes on.

    python benchmarks/bench_static.py [--models cnn,ppocr-rec] [--quick] [--threads 1,2]
                                      [--json out.json] [--keep DIR]

Do not run the full benchmark on a shared machine: it takes minutes per model and uses both cores.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _harness import cli, metrics
from _harness.comparison import Comparison, Contender, Settings, run_all
from _harness.goals import Goal, check, print_goals, print_losses
from _harness.report import fmt, latency_median, print_heading, print_table, write_json
from _harness.timing import RunPlan, TimingSpec
from _static_models import SPECS, ModelSpec

GB = 1e9

FP32 = "fp32"
ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile"}
ONNXQ = "onnxq"
RUN_DEFAULTS = cli.RunDefaults(budget=(2.0, 0.3), min_runs=(10, 3), max_runs=(3000, 3000), mem_cap_gb=10.0, timeout=1800.0)

METRIC_LABEL = {"rec": "char acc", "cls": "top-1 (labels)", "det": "mask IoU mean", "top1": "top-1 agree", "cosine": "cosine"}


# ---- the comparison ----------------------------------------------------------------------------
def task_metric(kind: str) -> Callable[[Path], metrics.Metric]:
    """SQNR and cosine of the worst output, and the task metric under ``task``."""

    def make(path: Path) -> metrics.Metric:
        if kind == "rec":
            import ocr_data

            dictionary = ocr_data.rec_dictionary(path)
            task: metrics.Metric = lambda: metrics.CharAccuracy(dictionary)  # noqa: E731
        else:
            task = {"cls": metrics.ClsTop1, "det": metrics.MaskIoU, "top1": metrics.Top1Agreement,
                    "cosine": lambda: metrics.Renamed(metrics.OutputAgreement(), {"cosine": "value"})}[kind]
        return metrics.combine(metrics.OutputAgreement, task=task)

    return make


def comparison(spec: ModelSpec, args: argparse.Namespace) -> Comparison:
    feeds = spec.feeds_for(args.calib, args.eval)
    contenders = [Contender(FP32)]
    contenders += [Contender(f"ort-{m}", "ort-static", {"method": ORT_METHODS[m]}, data=True) for m in args.incumbent]
    contenders.append(Contender(ONNXQ, "onnxq-static", {"data": args.onnxq_data}, data=True))
    return Comparison(spec.name, spec.description, spec.make, feeds, contenders, task_metric(spec.metric), extra={"metric": spec.metric})


def settings(args: argparse.Namespace) -> Settings:
    """Accuracy at the highest thread count; every thread count times fresh sessions."""
    plan = RunPlan(args.budget, args.min_runs, args.max_runs, rule="fastest")
    return Settings(args.mem_cap_gb, args.timeout, eval_threads=max(args.threads),
                    timing=TimingSpec(args.threads, plan, warmup=2, reuse_sessions=False))


# ---- reporting ---------------------------------------------------------------------------------
def _acc(v: dict[str, Any]) -> float | None:
    return ((v.get("accuracy") or {}).get("task") or {}).get("value")


#: Extra task columns per metric: (header, key in ``accuracy.task``, format).
TASK_COLUMNS = {"rec": [("exact lines", "exact_lines", ".3f")], "cls": [("agree fp32", "agree_fp32", ".4f")],
                "det": [("IoU worst", "worst", ".4f")]}


def _onnxq_note(v: dict[str, Any]) -> list[str]:
    if v.get("quantized_nodes") is None:
        return []
    slow = [f"{p} {t:.1f}s" for p, t in (v.get("pass_seconds") or {}).items() if t >= 0.5]
    return [f"{v['quantized_nodes']} quantized, {v['float_nodes']} float" + (f" ({', '.join(slow)})" if slow else "")]


def _model_row(name: str, v: dict[str, Any], base: dict[int, float | None], metric: str, width: int) -> list[str]:
    if not v["ok"]:
        return [name, "FAILED"] + [""] * (width - 6) + ["", fmt(v.get("seconds"), ".1f"), fmt(v.get("peak_rss_mb"), ".0f"), f"failed: {v['error']}"]
    row = [name]
    for t, b in base.items():
        m = latency_median(v, t)
        row += [fmt(m, ".2f"), fmt(b / m if m and b else None, ".2f")]
    acc = v.get("accuracy", {})
    task = acc.get("task", {})
    row += [fmt(acc.get("sqnr_db"), ".1f"), fmt(acc.get("cosine"), ".5f")]
    if metric != "cosine":
        row.append(fmt(task.get("value"), ".4f"))
    row += [fmt(task.get(key), spec) for _, key, spec in TASK_COLUMNS.get(metric, [])]
    notes = (_onnxq_note(v) if name == ONNXQ else []) + list(v.get("notes", []))
    return row + [fmt(v["bytes"] / 1e6 if v.get("bytes") else None, ".2f"), fmt(v.get("seconds"), ".1f"),
                  fmt(v.get("peak_rss_mb"), ".0f"), "; ".join(notes)]


def print_model(res: dict[str, Any], threads: Sequence[int]) -> None:
    if not print_heading(res):
        return
    d = res["data"]
    print(f"  data: {d['calibration']} calibration + {d['held_out']} held-out samples, input {d['shapes']}")
    variants, metric = res["variants"], res["metric"]
    headers = ["variant"]
    for t in threads:
        headers += ["1t ms", "x fp32"] if t == 1 else [f"{t}t ms*", f"x fp32 {t}t*"]
    headers += ["SQNR dB", "cosine"] + ([] if metric == "cosine" else [METRIC_LABEL[metric]])
    headers += [h for h, _, _ in TASK_COLUMNS.get(metric, [])] + ["MB", "conv s", "peak MB", "notes"]
    base = {t: latency_median(variants[FP32], t) for t in threads}
    print_table(headers, [_model_row(name, v, base, metric, len(headers)) for name, v in variants.items()])
    if any(t != 1 for t in threads):
        print("  * medians at more than 1 thread are noisy (the machine has 2 cores, shared); 1 thread is the reference")
    for t, err in (res.get("timing_errors") or {}).items():
        print(f"  timing at {t} thread(s) failed: {err}")
    onnxq = variants.get(ONNXQ, {})
    if onnxq.get("ok") and onnxq.get("float_reasons"):
        print("  onnxq float nodes by reason: " + "; ".join(f"{n}x {r}" for r, n in onnxq["float_reasons"].items()))


def _summary_cell(x: dict[str, Any], fp: dict[str, Any]) -> tuple[str, str, str]:
    if not x.get("ok"):
        return "failed", "-", "-"
    m = latency_median(x, 1)
    sp = fmt(latency_median(fp, 1) / m if m else None, ".2f")
    return f"{fmt(m, '.2f')} ({sp}x)", fmt(_acc(x), ".4f"), f"{fmt(x.get('seconds'), '.1f')}s/{fmt(x.get('peak_rss_mb'), '.0f')}MB"


def print_summary(results: Sequence[dict[str, Any]]) -> None:
    print("\n=== summary (1 thread; accuracy = each model's task metric)")
    rows = []
    for res in results:
        if "skipped" in res:
            rows.append([res["model"]] + ["-"] * 7 + [f"skipped: {res['skipped']}"])
            continue
        v = res["variants"]
        fp = v[FP32]
        incs = {n: _summary_cell(x, fp) for n, x in v.items() if n.startswith("ort-")}
        oq = _summary_cell(v.get(ONNXQ, {"ok": False}), fp)
        rows.append([res["model"], METRIC_LABEL[res["metric"]], fmt(latency_median(fp, 1), ".2f"), fmt(_acc(fp), ".4f"),
                     " | ".join(f"{n}: {c[0]}" for n, c in incs.items()), " | ".join(c[1] for c in incs.values()), oq[0], oq[1],
                     " | ".join(c[2] for c in incs.values()) + f" || onnxq {oq[2]}"])
    print_table(["model", "metric", "fp32 ms", "fp32 acc", "incumbent ms (speedup)", "inc acc", "onnxq ms (speedup)",
                 "onnxq acc", "conversion time/peak"], rows)


# ---- goals -------------------------------------------------------------------------------------
class _Measured:
    """Look-ups into the results for the goals: onnxq's variant, speedups, task metrics."""

    def __init__(self, results: Sequence[dict[str, Any]]) -> None:
        self.by = {r["model"]: r for r in results if "skipped" not in r}

    def onnxq(self, name: str) -> dict[str, Any]:
        v = self.by[name]["variants"].get(ONNXQ) if name in self.by else None
        return v if v and v.get("ok") else {}

    def fp32_acc(self, name: str) -> float | None:
        return _acc(self.by[name]["variants"][FP32]) if name in self.by else None

    def speedup(self, name: str) -> float | None:
        fp = latency_median(self.by[name]["variants"][FP32], 1) if name in self.by else None
        m = latency_median(self.onnxq(name), 1)
        return fp / m if fp and m else None

    def check(self, goal: str, name: str, value: float | None, ok: Callable[[float], bool], shown: str) -> Goal:
        error = (self.by[name]["variants"].get(ONNXQ, {}).get("error")) if name in self.by else None
        return check(goal, value, ok, shown, not_run=None if name in self.by else f"{name} not run", failed=f"onnxq failed: {error}")


def _model_goals(m: _Measured) -> list[Goal]:
    rec_acc, rec_fp = _acc(m.onnxq("ppocr-rec")), m.fp32_acc("ppocr-rec")
    cls_v, det_v = m.onnxq("ppocr-cls"), m.onnxq("ppocr-det")
    det_worst = fmt(det_v.get("accuracy", {}).get("task", {}).get("worst"), ".4f")
    return [
        m.check("ppocr-rec onnxq >= 1.5x fp32 at 1 thread", "ppocr-rec", m.speedup("ppocr-rec"), lambda s: s >= 1.5, "{:.2f}x"),
        m.check("ppocr-rec char accuracy >= 0.99", "ppocr-rec", rec_acc, lambda a: a >= 0.99, "{:.4f} (fp32 " + fmt(rec_fp, ".4f") + ")"),
        m.check("ppocr-rec char accuracy within 0.005 of fp32", "ppocr-rec", None if rec_acc is None or rec_fp is None else rec_fp - rec_acc,
                lambda g: g <= 0.005, "fp32 - onnxq = {:+.4f}"),
        m.check("ppocr-rec conversion peak RSS < 1.5 GB", "ppocr-rec", m.onnxq("ppocr-rec").get("peak_rss_mb"),
                lambda p: p * 2**20 < 1.5 * GB, "{:.0f} MB"),
        m.check("ppocr-cls onnxq >= 1.0x fp32", "ppocr-cls", m.speedup("ppocr-cls"), lambda s: s >= 1.0, "{:.2f}x"),
        m.check("ppocr-cls onnxq >= 1.3x fp32 (aim)", "ppocr-cls", m.speedup("ppocr-cls"), lambda s: s >= 1.3, "{:.2f}x"),
        m.check("ppocr-cls top-1 vs labels >= 0.99", "ppocr-cls", _acc(cls_v) if cls_v else None, lambda a: a >= 0.99,
                "{:.4f} (fp32 " + fmt(m.fp32_acc("ppocr-cls"), ".4f") + ")"),
        m.check("ppocr-cls top-1 agreement with fp32 >= 0.99", "ppocr-cls",
                cls_v.get("accuracy", {}).get("task", {}).get("agree_fp32") if cls_v else None, lambda a: a >= 0.99, "{:.4f}"),
        m.check("ppocr-det onnxq >= 1.6x fp32 at 1 thread", "ppocr-det", m.speedup("ppocr-det"), lambda s: s >= 1.6, "{:.2f}x"),
        m.check("ppocr-det mean mask IoU vs fp32 >= 0.95", "ppocr-det", _acc(det_v) if det_v else None, lambda a: a >= 0.95,
                "{:.4f} (worst page " + det_worst + ")"),
        m.check("cnn onnxq >= 2x fp32 at 1 thread", "cnn", m.speedup("cnn"), lambda s: s >= 2.0, "{:.2f}x"),
    ]


def _versus_incumbent(name: str, metric: str, mine: dict[str, Any], inc_name: str, inc: dict[str, Any], tolerance: float) -> list[Goal]:
    what = f"{name}: onnxq vs {inc_name}"
    if not mine.get("ok"):
        return [Goal(what, False, f"onnxq failed: {mine.get('error')}")]
    if not inc.get("ok"):
        return [Goal(what, True, f"incumbent failed: {inc.get('error')}")]
    a, b = latency_median(mine, 1), latency_median(inc, 1)
    tie = " (a tie within --latency-tolerance)" if b < a <= b * (1 + tolerance) else ""
    goals = [Goal(f"{name}: onnxq latency <= {inc_name}", a <= b * (1 + tolerance), f"{a:.2f} vs {b:.2f} ms ({(a / b - 1) * 100:+.1f}%){tie}")]
    a, b = _acc(mine), _acc(inc)
    goals.append(Goal(f"{name}: onnxq {METRIC_LABEL[metric]} >= {inc_name}", a >= b, f"{a:.4f} vs {b:.4f} ({a - b:+.4f})"))
    a, b = mine["seconds"], inc["seconds"]
    goals.append(Goal(f"{name}: onnxq conversion faster than {inc_name}", a < b, f"{a:.1f} vs {b:.1f} s ({a / b:.2f}x)"))
    return goals


def goals(results: Sequence[dict[str, Any]], tolerance: float = 0.0) -> list[Goal]:
    """The issue's goals from the measurements, then onnxq against each incumbent on every model.

    ``tolerance``: onnxq's 1-thread median may exceed an incumbent's by this fraction and still count
    as "<=" (two medians of the same graph differ by about 1% run to run); the line says so.
    """
    m = _Measured(results)
    out = _model_goals(m)
    for name, r in m.by.items():
        v = r["variants"]
        for inc_name, inc in ((n, x) for n, x in v.items() if n.startswith("ort-")):
            out += _versus_incumbent(name, r["metric"], v.get(ONNXQ, {}), inc_name, inc, tolerance)
    return out


# ---- main --------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_run_options(ap, list(SPECS), RUN_DEFAULTS, budget_help="timed seconds for the fastest model per thread count")
    ap.add_argument("--incumbent", default="minmax,percentile", help="onnxruntime calibration methods: minmax,percentile")
    ap.add_argument("--calib", type=int, help="calibration samples (default 64, quick 8)")
    ap.add_argument("--eval", type=int, help="held-out samples (default 64, quick 8)")
    ap.add_argument("--onnxq-data", choices=("reader", "folder"), default="reader",
                    help="how onnxq gets the calibration set: the same get_next() reader onnxruntime gets (default) "
                         "or the .npz folder path, as `onnxq convert --data DIR` reads it")
    ap.add_argument("--latency-tolerance", type=float, default=0.02,
                    help="onnxq latency within this fraction above the incumbent's counts as a tie (default 0.02)")
    args = ap.parse_args(argv)
    cli.resolve_run_options(ap, args, list(SPECS), RUN_DEFAULTS)
    args.incumbent = cli.comma_list(args.incumbent)
    bad = [m for m in args.incumbent if m not in ORT_METHODS]
    if bad:
        ap.error(f"--incumbent takes {', '.join(ORT_METHODS)}, got {', '.join(bad)}")
    quick = args.quick
    args.calib = args.calib or (8 if quick else 64)
    args.eval = args.eval or (8 if quick else 64)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"bench_static: {cli.onnxruntime_version()}, models {','.join(args.models)}, "
          f"{args.calib} calibration / {args.eval} held-out samples, threads {args.threads}"
          + ("  [QUICK: smoke test, not a measurement]" if args.quick else ""), flush=True)
    results = run_all([comparison(SPECS[name], args) for name in args.models], settings(args), keep=args.keep,
                      prefix="bench_static_", show=lambda res: print_model(res, args.threads))
    print_summary(results)
    lines = goals(results, args.latency_tolerance)
    print_goals(lines)
    print_losses(lines, ": onnxq", "where onnxq loses to the incumbent (measured gap)")
    if args.json_out:
        write_json(args.json_out, {"quick": args.quick, "threads": args.threads, "calibration": args.calib, "held_out": args.eval,
                                   "results": results, "goals": [g.as_dict() for g in lines]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
