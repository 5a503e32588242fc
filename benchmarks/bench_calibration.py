"""Calibration benchmark: onnxq's streaming ``collect_ranges`` vs onnxruntime's calibrators.

Side by side in one run, same model file, same samples, same method: onnxq's
``collect_ranges(ir.load(path), samples, method=...)`` (the model as loaded, no cleanup, so tensor
names match) against onnxruntime's ``create_calibrator(path, None, augmented_model_path=<tmp>,
calibrate_method=...)`` + ``collect_data(reader)`` + ``compute_data()`` (``_harness.onnxq_api`` and
``_harness.incumbent`` hold the two calls).

Models (sample counts at ``--samples-scale 1``):

* ``rec``: the real PP-OCRv4 recogniser, 64 samples of [6, 3, 48, 320] (batch 6 like rapidocr);
* ``det``: the real PP-OCRv4 detector, 32 pages of [1, 3, 736, 736];
* ``transformer``: ``build("transformer", hidden=384, heads=12, layers=6, vocab=30522)``, 64 samples of
  batch 1, seq 128 (``--small``: hidden 64, heads 4, 1 layer, vocab 1000, for smoke tests).

OCR samples come from ``benchmarks/ocr_data.py`` (rendered text preprocessed like rapidocr), written
once to ``.npy`` files that both tools read lazily, one sample at a time; transformer samples are
generated lazily in the child (seeded per sample: [CLS] random tokens [SEP], right-padded to 128,
real length 32..128, so the additive attention mask holds float32.min). Both tools get the same
arrays.

Each (tool, model, method) run and each memory-flatness run is its own subprocess
(``_harness.isolate.run_isolated``): peak RSS is that child's VmHWM, its address space is capped with
RLIMIT_AS (``--mem-cap-gb``, default 12) and it is killed after ``--timeout`` seconds; a run that
hits the cap is reported as "out of memory at the N GB cap". Wall time is measured inside the
child from model load to ranges in hand (imports excluded), for both tools alike.

Range agreement vs the incumbent on the tensors both calibrated: MinMax must be identical (max
abs difference of min and max, expected 0); histogram methods: median relative difference of the
width of the range a quantizer uses, ``max(hi, 0) - min(lo, 0)``, and the fraction of tensors within
5% (zero is included because onnxq reports ``min = 0`` for non-negative data where the incumbent
reports the clipped data minimum; both quantizers widen to zero anyway). Method options:

* percentile 99.999 for both, the incumbent otherwise at its defaults (symmetric=True: ``|x|`` at p,
  clamped to [min, max]); onnxq is two-sided with (100-p)% cut per side. ``--matched-percentile``
  runs the incumbent two-sided (symmetric=False) at 99.998, the same tail mass per side;
* entropy with 2048 histogram bins and 128 quantized bins for both (the incumbent's default of 128
  histogram bins leaves its KL search a single candidate, i.e. the symmetric min-max range). The
  two KL searches differ (the incumbent's is over the signed histogram, onnxq's TensorRT-style
  over ``|x|``), so entropy agreement measures the methods as much as the implementations.

Memory flatness: onnxq percentile on the transformer at 64, 256 and 1024 samples (scaled by
``--samples-scale``); the peak RSS must stay flat (ratio 1024/64 printed).

Goals (PASS/FAIL computed from the measurements; SKIP where the incumbent's side is missing):
histogram methods on the detector at 32 pages under 1.5 GB peak with onnxq; on the recogniser onnxq
Percentile >= 3x faster than the incumbent's at <= 1/5 of its peak RSS; MinMax not slower than the
incumbent and ranges identical; memory flat (<= 10% growth from the smallest to the largest sample count).

    python benchmarks/bench_calibration.py [--models rec,det,transformer] [--methods minmax,entropy,percentile]
        [--samples-scale 1] [--skip-incumbent] [--skip-flatness] [--small] [--mem-cap-gb 12]
        [--incumbent-mem-cap-gb GB] [--timeout 900] [--matched-percentile] [--keep-workdir] [--json out.json]

Smoke test (a minute or two):

    python benchmarks/bench_calibration.py --samples-scale 0.1 --models transformer,rec \\
        --methods minmax,percentile --small --mem-cap-gb 6
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _calibration_runs import SEQ, TRANSFORMER, TRANSFORMER_SMALL, Samples, agreement
from _harness.goals import Goal, print_goals
from _harness.isolate import RunResult, run_isolated
from _harness.report import print_table, ratio, write_json

MODELS = ("rec", "det", "transformer")
METHODS = ("minmax", "entropy", "percentile")
SAMPLES = {"rec": 64, "det": 32, "transformer": 64}
FLAT_COUNTS = (64, 256, 1024)

#: Observer options per method (onnxq) and ``extra_options`` (onnxruntime); see the module docstring.
ONNXQ_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"bins": 2048},
    "percentile": {"percentile": 99.999, "bins": 2048},
}
INCUMBENT_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
    "percentile": {"percentile": 99.999, "num_bins": 2048, "symmetric": True},
}
#: Goals.
DET_PEAK_GOAL_MB = 1536.0
REC_SPEEDUP_GOAL = 3.0
REC_MEMORY_GOAL = 5.0
FLAT_TOLERANCE = 1.10


def _scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def _secs(r: RunResult) -> float | None:
    return r.value.get("seconds") if r.ok and isinstance(r.value, dict) else None


def _agree_text(method: str, a: Mapping[str, Any] | None) -> str:
    if not a:
        return "-"
    if "max_abs_diff" in a:
        txt = f"max|d|={a['max_abs_diff']:.3g} identical {a['identical']}/{a['common']}"
        return txt + (f" nonfinite-mismatch {a['nonfinite_mismatch']}" if a["nonfinite_mismatch"] else "")
    if "median_rel_width_diff" in a:
        return f"median rel d(width)={a['median_rel_width_diff']:.3g}, {100 * a['within_5pct']:.0f}% within 5% ({a['common']} tensors)"
    return f"no common tensors (onnxq {a['only_onnxq']}, incumbent {a['only_incumbent']})"


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Measured:
    """Everything one run measured: prepared models, the calibration runs, the flatness runs."""

    prepared: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[tuple[str, str, str], RunResult] = field(default_factory=dict)
    flat: list[tuple[int, RunResult]] = field(default_factory=list)
    agreements: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def count(self, model: str) -> int:
        return len(Samples(self.prepared[model]["samples"]))


def _run(label: str, target: str, kwargs: dict[str, Any], cap: float, timeout: float) -> RunResult:
    _progress(f"  {label} ...")
    r = run_isolated(f"_calibration_runs:{target}", kwargs, mem_cap_gb=cap, timeout_s=timeout)
    extra = f"{_secs(r):.1f} s" if _secs(r) is not None else r.describe()
    _progress(f"  {label}: {extra}, peak RSS {r.peak_rss_mb or 0:.0f} MB (process {r.wall_s:.1f} s)")
    if not r.ok and r.status == "error":
        for line in r.log_tail[-6:]:
            _progress(f"      | {line}")
    return r


# ---- goals -------------------------------------------------------------------------------------
def _scaled_note(m: Measured, model: str) -> str:
    n = m.count(model)
    return "" if n == SAMPLES[model] else f" [measured at {n} samples; the goal is stated for {SAMPLES[model]}]"


def _rec_goals(m: Measured, timeout: float) -> list[Goal]:
    q, inc = m.runs.get(("rec", "percentile", "onnxq")), m.runs.get(("rec", "percentile", "incumbent"))
    if q is None or inc is None:
        return []
    note = _scaled_note(m, "rec")
    speed_goal = f"rec percentile: onnxq >= {REC_SPEEDUP_GOAL:g}x faster than the incumbent"
    mem_goal = f"rec percentile: onnxq peak RSS <= 1/{REC_MEMORY_GOAL:g} of the incumbent's"
    if not q.ok:
        return [Goal(speed_goal, False, f"onnxq {q.describe()}")]
    if inc.ok:
        speed = _secs(inc) / _secs(q)
        goals = [Goal(speed_goal, speed >= REC_SPEEDUP_GOAL, f"{speed:.2f}x{note}")]
    elif inc.status == "timeout":
        speed = timeout / _secs(q)
        goals = [Goal(speed_goal, True if speed >= REC_SPEEDUP_GOAL else None, f">= {speed:.2f}x (incumbent timed out){note}")]
    else:
        goals = [Goal(speed_goal, None, f"incumbent {inc.describe()}{note}")]
    # A run that did not finish had at least the peak RSS seen before it died: a lower bound.
    if inc.peak_rss_mb and q.peak_rss_mb:
        mem = inc.peak_rss_mb / q.peak_rss_mb
        bound = "" if inc.ok else f" (incumbent {inc.describe()}: its figure is a lower bound)"
        verdict = True if mem >= REC_MEMORY_GOAL else (False if inc.ok else None)
        goals.append(Goal(mem_goal, verdict, f"{q.peak_rss_mb:.0f} vs {inc.peak_rss_mb:.0f} MB = 1/{mem:.2f}{bound}{note}"))
    return goals


def _minmax_goals(m: Measured) -> list[Goal]:
    goals = []
    for model in m.prepared:
        q, inc = m.runs.get((model, "minmax", "onnxq")), m.runs.get((model, "minmax", "incumbent"))
        if q is None or inc is None:
            continue
        if not (q.ok and inc.ok):
            goals.append(Goal(f"{model} minmax: not slower, ranges identical", False if not q.ok else None,
                              f"onnxq {q.describe()}, incumbent {inc.describe()}"))
            continue
        a = m.agreements[model, "minmax"]
        goals.append(Goal(f"{model} minmax: onnxq not slower", _secs(q) <= _secs(inc), f"{_secs(q):.2f} s vs {_secs(inc):.2f} s"))
        goals.append(Goal(f"{model} minmax: ranges identical", a.get("all_identical", False) and a["common"] > 0, _agree_text("minmax", a)))
    return goals


def goals(m: Measured, timeout: float) -> list[Goal]:
    """The goals computed from the measurements (see the module docstring)."""
    out = []
    for method in ("entropy", "percentile"):
        r = m.runs.get(("det", method, "onnxq"))
        if r is not None:
            ok = r.ok and r.peak_rss_mb is not None and r.peak_rss_mb < DET_PEAK_GOAL_MB
            out.append(Goal(f"det {method}: onnxq peak RSS < {DET_PEAK_GOAL_MB / 1024:g} GB", ok,
                            f"{r.peak_rss_mb or 0:.0f} MB, {r.describe()}{_scaled_note(m, 'det')}"))
    out += _rec_goals(m, timeout) + _minmax_goals(m)
    if len(m.flat) >= 2:
        (n0, r0), (n1, r1) = m.flat[0], m.flat[-1]
        goal = f"memory flat: onnxq peak RSS at {n1} vs {n0} samples <= {FLAT_TOLERANCE:g}x"
        if r0.ok and r1.ok and r0.peak_rss_mb and r1.peak_rss_mb:
            g = r1.peak_rss_mb / r0.peak_rss_mb
            out.append(Goal(goal, g <= FLAT_TOLERANCE, f"{g:.3f}x ({r0.peak_rss_mb:.0f} -> {r1.peak_rss_mb:.0f} MB)"))
        else:
            out.append(Goal(goal, False, f"{r0.describe()} / {r1.describe()}"))
    return out


# ---- main --------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma list of rec, det, transformer")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of minmax, entropy, percentile")
    ap.add_argument("--samples-scale", type=float, default=1.0, help="multiply every sample count (quick runs)")
    ap.add_argument("--skip-incumbent", action="store_true", help="run onnxq only")
    ap.add_argument("--skip-flatness", action="store_true", help="skip the memory-flatness runs")
    ap.add_argument("--small", action="store_true", help="small transformer (hidden 64, 1 layer) for smoke tests")
    ap.add_argument("--mem-cap-gb", type=float, default=12.0, help="address-space cap per child (default 12)")
    ap.add_argument("--incumbent-mem-cap-gb", type=float, help="cap for the incumbent's children (default: --mem-cap-gb)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per child (default 900)")
    ap.add_argument("--matched-percentile", action="store_true",
                    help="run the incumbent's percentile two-sided (symmetric=False) with the same tail mass per side as onnxq "
                         "(its p cuts (100-p)/2 %% per side, onnxq's (100-p) %%: 99.999 -> 99.998)")
    ap.add_argument("--json", dest="json_out", help="write every measurement to this file")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the temporary samples/model folder")
    args = ap.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in args.models if m not in MODELS] + [m for m in args.methods if m not in METHODS]
    if bad:
        ap.error(f"unknown model/method: {', '.join(bad)}")
    if args.samples_scale <= 0:
        ap.error("--samples-scale must be > 0")
    args.inc_options = {m: dict(o) for m, o in INCUMBENT_OPTIONS.items()}
    if args.matched_percentile:
        p = ONNXQ_OPTIONS["percentile"]["percentile"]
        args.inc_options["percentile"].update(percentile=round(100.0 - 2.0 * (100.0 - p), 9), symmetric=False)
    args.inc_cap = args.incumbent_mem_cap_gb if args.incumbent_mem_cap_gb is not None else args.mem_cap_gb
    return args


def _flatness(args: argparse.Namespace, workdir: Path, m: Measured) -> None:
    kw = {"model": "transformer", "n": 0, "outdir": str(workdir / "flat"), "small": args.small}
    tf = _run("prepare flatness transformer", "child_prepare", kw, args.mem_cap_gb, args.timeout)
    if not tf.ok:
        print(f"flatness: could not build the transformer: {tf.describe()}")
        return
    for count in FLAT_COUNTS:
        n = _scaled(count, args.samples_scale)
        kw = {"model_path": tf.value["model_path"], "samples": {**tf.value["samples"], "n": n}, "method": "percentile",
              "options": ONNXQ_OPTIONS["percentile"], "keep_ranges": False}
        m.flat.append((n, _run(f"flatness onnxq transformer percentile x{n}", "child_onnxq", kw, args.mem_cap_gb, args.timeout)))


def measure(args: argparse.Namespace, workdir: Path) -> Measured:
    """Prepare every model's samples, run each (model, method, tool) and the flatness runs, isolated."""
    m = Measured()
    cap, timeout = args.mem_cap_gb, args.timeout
    for model in args.models:
        n = _scaled(SAMPLES[model], args.samples_scale)
        r = _run(f"prepare {model} ({n} samples)", "child_prepare", {"model": model, "n": n, "outdir": str(workdir / model), "small": args.small}, cap, timeout)
        if r.ok:
            m.prepared[model] = r.value
        else:
            print(f"{model}: could not prepare the model/samples: {r.describe()}")
    for model, prep in m.prepared.items():
        for method in args.methods:
            kw = {"model_path": prep["model_path"], "samples": prep["samples"], "method": method}
            m.runs[model, method, "onnxq"] = _run(f"onnxq {model} {method}", "child_onnxq", {**kw, "options": ONNXQ_OPTIONS[method]}, cap, timeout)
            if not args.skip_incumbent:
                ki = {**kw, "options": args.inc_options[method], "workdir": str(workdir)}
                m.runs[model, method, "incumbent"] = _run(f"incumbent {model} {method}", "child_incumbent", ki, args.inc_cap, timeout)
    if not args.skip_flatness:
        _flatness(args, workdir, m)
    return m


def _run_rows(args: argparse.Namespace, m: Measured, report: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    rows, ratio_rows = [], []
    for model, prep in m.prepared.items():
        n, shape = m.count(model), "x".join(map(str, prep.get("shape") or [1, SEQ]))
        for method in args.methods:
            q, inc = m.runs.get((model, method, "onnxq")), m.runs.get((model, method, "incumbent"))
            agree = None
            if q is not None and inc is not None and q.ok and inc.ok:
                agree = m.agreements[model, method] = agreement(method, q.value["ranges"], inc.value["ranges"])
            for tool, r in (("onnxq", q), ("incumbent", inc)):
                if r is not None:
                    rows.append([model, method, tool, f"{n}x[{shape}]", _secs(r), r.peak_rss_mb, r.value.get("tensors") if r.ok else None, r.describe()])
                    entry = {"model": model, "method": method, "tool": tool, "samples": n, "sample_shape": prep.get("shape")}
                    report["runs"].append({**entry, **r.as_dict(), "agreement": agree if tool == "onnxq" else None})
            if inc is not None and q is not None:
                text = _agree_text(method, agree) if agree else (f"onnxq {q.describe()}" if not q.ok else f"incumbent {inc.describe()}")
                ratio_rows.append([model, method, ratio(_secs(inc), _secs(q)), ratio(inc.peak_rss_mb, q.peak_rss_mb) if inc.ok and q.ok else None, text])
    return rows, ratio_rows


def print_tables(args: argparse.Namespace, m: Measured, report: dict[str, Any]) -> None:
    caps = f"cap {args.mem_cap_gb:g} GB" + (f", incumbent {args.inc_cap:g} GB" if args.inc_cap != args.mem_cap_gb else "") + f", timeout {args.timeout:g} s"
    print(f"\nCalibration: onnxq collect_ranges vs onnxruntime create_calibrator ({caps}; samples scale {args.samples_scale:g})")
    rows, ratio_rows = _run_rows(args, m, report)
    print_table(["model", "method", "tool", "samples", "wall s", "peak RSS MB", "tensors", "outcome"], rows, digits=1)
    if ratio_rows:
        print("\nIncumbent / onnxq (higher = onnxq better) and range agreement on common tensors")
        print_table(["model", "method", "time x", "peak RSS x", "agreement"], ratio_rows, digits=2)
    if m.flat:
        print(f"\nMemory flatness: onnxq percentile, transformer, batch 1, seq {SEQ}")
        flat_rows = [[n, _secs(r), 1000 * _secs(r) / n if r.ok else None, r.peak_rss_mb, r.describe()] for n, r in m.flat]
        print_table(["samples", "wall s", "ms/sample", "peak RSS MB", "outcome"], flat_rows, digits=1)
        report["flatness"] = [{"samples": n, **r.as_dict()} for n, r in m.flat]
        (n0, r0), (n1, r1) = m.flat[0], m.flat[-1]
        if r0.ok and r1.ok and r0.peak_rss_mb:
            print(f"peak RSS ratio {n1}/{n0} samples: {r1.peak_rss_mb / r0.peak_rss_mb:.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = {k: v for k, v in vars(args).items() if k not in ("json_out", "inc_options", "inc_cap")}
    report: dict[str, Any] = {
        "config": {**config, "incumbent_mem_cap_gb": args.inc_cap, "onnxq_options": ONNXQ_OPTIONS, "incumbent_options": args.inc_options,
                   "transformer": TRANSFORMER_SMALL if args.small else TRANSFORMER, "seq": SEQ},
        "runs": [], "flatness": [], "goals": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-calibration-"))
    try:
        _progress(f"work folder {workdir}")
        measured = measure(args, workdir)
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print_tables(args, measured, report)
    lines = goals(measured, args.timeout)
    if lines:
        print_goals(lines, "Goals")
    report["goals"] = [g.as_dict() for g in lines]
    if args.json_out:
        write_json(args.json_out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
