"""Calibration benchmark: onnxq's streaming ``collect_ranges`` vs onnxruntime's calibrators.

Side by side in one run, same model file, same samples, same method: onnxq's
``collect_ranges(ir.load(path), samples, method=...)`` (the model as loaded, no cleanup, so tensor
names match) against onnxruntime's ``create_calibrator(path, None, augmented_model_path=<tmp>,
calibrate_method=...)`` + ``collect_data(reader)`` + ``compute_data()``.

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
(``_bench_util.run_isolated``): peak RSS is that child's VmHWM, its address space is capped with
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

Goals (PASS/FAIL computed from the measurements): histogram methods on the detector at 32 pages
under 1.5 GB peak with onnxq; on the recogniser onnxq Percentile >= 3x faster than the incumbent's
at <= 1/5 of its peak RSS; MinMax not slower than the incumbent and ranges identical; memory flat
(<= 10% growth from the smallest to the largest sample count).

    python benchmarks/bench_calibration.py [--models rec,det,transformer] [--methods minmax,entropy,percentile]
        [--samples-scale 1] [--skip-incumbent] [--skip-flatness] [--small] [--mem-cap-gb 12]
        [--incumbent-mem-cap-gb GB] [--timeout 900] [--matched-percentile] [--keep-workdir] [--json out.json]

Smoke test (a minute or two):

    python benchmarks/bench_calibration.py --samples-scale 0.1 --models transformer,rec \\
        --methods minmax,percentile --small --mem-cap-gb 6
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _bench_util import RunResult, print_table, ratio, run_isolated  # noqa: E402

MODELS = ("rec", "det", "transformer")
METHODS = ("minmax", "entropy", "percentile")
SAMPLES = {"rec": 64, "det": 32, "transformer": 64}
REC_BATCH, REC_WIDTH, DET_SIZE, SEQ = 6, 320, 736, 128
FLAT_COUNTS = (64, 256, 1024)
TRANSFORMER = {"hidden": 384, "heads": 12, "layers": 6, "vocab": 30522}
TRANSFORMER_SMALL = {"hidden": 64, "heads": 4, "layers": 1, "vocab": 1000}
SEED = 20240

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
WITHIN = 0.05


# ==== child side (runs in the subprocesses; imports happen here, not at module level) =============


class Samples:
    """Re-iterable, lazy sample source: each iteration yields fresh feeds, nothing is kept.

    ``spec`` is ``{"kind": "npy", "files": [...], "input": "x"}`` or ``{"kind": "transformer", "n", "seq", "vocab", "seed"}``.
    Re-iterable (not a generator) so that onnxq re-reads rather than caches when it splits tensors
    into several groups, and both tools see bit-identical arrays.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = dict(spec)

    def __len__(self) -> int:
        return len(self.spec["files"]) if self.spec["kind"] == "npy" else int(self.spec["n"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import numpy as np

        if self.spec["kind"] == "npy":
            name = self.spec.get("input", "x")
            for path in self.spec["files"]:
                yield {name: np.load(path)}
            return
        seq, vocab, seed = int(self.spec["seq"]), int(self.spec["vocab"]), int(self.spec["seed"])
        low = min(1000, vocab // 2)
        for i in range(len(self)):
            rng = np.random.default_rng([seed, i])
            length = int(rng.integers(max(2, seq // 4), seq + 1))
            ids = np.zeros((1, seq), dtype=np.int64)
            ids[0, 1 : length - 1] = rng.integers(low, vocab, size=length - 2)
            ids[0, 0], ids[0, length - 1] = min(101, vocab - 1), min(102, vocab - 1)
            mask = np.zeros((1, seq), dtype=np.int64)
            mask[0, :length] = 1
            yield {"input_ids": ids, "attention_mask": mask}


def child_prepare(model: str, n: int, outdir: str, seed: int = SEED, small: bool = False) -> dict[str, Any]:
    """Write the model file and/or the sample files a model's runs need; returns their paths."""
    import numpy as np

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    if model == "transformer":
        import onnx

        from models import build

        cfg = TRANSFORMER_SMALL if small else TRANSFORMER
        path = out / ("transformer-small.onnx" if small else "transformer.onnx")
        onnx.save(build("transformer", **cfg), str(path))
        return {"model_path": str(path), "samples": {"kind": "transformer", "n": n, "seq": SEQ, "vocab": cfg["vocab"], "seed": seed}}
    import ocr_data

    from models.zoo import ZOO, fetch

    files = []
    for i in range(n):  # one at a time, so at most one sample is ever held
        if model == "rec":
            x = ocr_data.rec_samples(1, seed=seed + i, width=REC_WIDTH, batch=REC_BATCH)[0][0]
        else:
            x = ocr_data.det_samples(1, seed=seed + i, size=DET_SIZE)[0][0]
        path = out / f"{model}-{i:05d}.npy"
        np.save(path, np.ascontiguousarray(x, dtype=np.float32))
        files.append(str(path))
    shape = list(np.load(files[0], mmap_mode="r").shape) if files else []
    entry = ZOO[f"ppocr-{model}"]
    return {"model_path": str(fetch(entry.name)), "samples": {"kind": "npy", "files": files, "input": entry.input_name}, "shape": shape}


def child_onnxq(model_path: str, samples: dict[str, Any], method: str, options: dict[str, Any], keep_ranges: bool = True) -> dict[str, Any]:
    """onnxq: ``collect_ranges`` on the model as loaded."""
    from onnxq import ir
    from onnxq.calibration.collector import collect_ranges

    start = time.perf_counter()
    model = ir.load(model_path)
    loaded = time.perf_counter()
    ranges, stats = collect_ranges(model, Samples(samples), method=method, options=options, progress=False)
    seconds = time.perf_counter() - start
    st = stats.as_dict()
    return {
        "seconds": seconds,
        "load_s": loaded - start,
        "samples": stats.samples,
        "tensors": len(ranges),
        "groups": stats.groups,
        "saturating": len(stats.saturating),
        "unreachable": len(st["unreachable"]),
        "ranges": {name: [r.min, r.max] for name, r in ranges.items()} if keep_ranges else None,
    }


def child_incumbent(model_path: str, samples: dict[str, Any], method: str, options: dict[str, Any], workdir: str) -> dict[str, Any]:
    """onnxruntime: ``create_calibrator`` + ``collect_data`` + ``compute_data``."""
    import onnxruntime
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(Samples(samples))
            self.count = 0

        def get_next(self) -> dict[str, Any] | None:
            item = next(self.it, None)
            self.count += item is not None
            return item

    kind = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]
    tmp = tempfile.mkdtemp(prefix="incumbent-", dir=workdir)
    try:
        start = time.perf_counter()
        calibrator = create_calibrator(
            model_path,
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=kind,
            extra_options=dict(options),
        )
        created = time.perf_counter()
        reader = Reader()
        calibrator.collect_data(reader)
        collected = time.perf_counter()
        data = calibrator.compute_data()
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import numpy as np

    # MinMax gives shape-[1] arrays (ReduceMin -> Reshape [-1]), the histogram methods 0-d ones.
    ranges = {name: [float(np.min(v.range_value[0])), float(np.max(v.range_value[1]))] for name, v in data.items()}
    return {
        "seconds": seconds,
        "setup_s": created - start,
        "collect_s": collected - created,
        "compute_s": seconds - (collected - start),
        "samples": reader.count,
        "tensors": len(ranges),
        "onnxruntime": onnxruntime.__version__,
        "ranges": ranges,
    }


# ==== parent side ===================================================================================


def agreement(method: str, ours: Mapping[str, Sequence[float]], theirs: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Compare onnxq's ranges with the incumbent's on the tensors both calibrated."""
    common = sorted(set(ours) & set(theirs))
    out: dict[str, Any] = {"common": len(common), "only_onnxq": len(set(ours) - set(theirs)), "only_incumbent": len(set(theirs) - set(ours))}
    if not common:
        return out
    if method == "minmax":
        diffs, nonfinite, identical = [], 0, 0
        worst: list[tuple[float, str]] = []
        for name in common:
            (a0, a1), (b0, b1) = ours[name], theirs[name]
            identical += a0 == b0 and a1 == b1
            if all(math.isfinite(v) for v in (a0, a1, b0, b1)):
                d = max(abs(a0 - b0), abs(a1 - b1))
                diffs.append(d)
                worst.append((d, name))
            elif not (a0 == b0 and a1 == b1):
                nonfinite += 1
        worst.sort(reverse=True)
        out.update(
            max_abs_diff=max(diffs) if diffs else 0.0,
            identical=identical,
            nonfinite_mismatch=nonfinite,
            all_identical=identical == len(common),
            worst=[{"tensor": n, "abs_diff": d, "onnxq": ours[n], "incumbent": theirs[n]} for d, n in worst[:5] if d > 0],
        )
        return out
    rel: list[tuple[float, str]] = []
    for name in common:
        wa, wb = _quant_width(ours[name]), _quant_width(theirs[name])
        if not (math.isfinite(wa) and math.isfinite(wb)):
            r = 0.0 if wa == wb else math.inf
        elif wa == wb:
            r = 0.0
        else:
            r = abs(wa - wb) / max(abs(wb), abs(wa), 1e-30) if wb == 0 else abs(wa - wb) / abs(wb)
        rel.append((r, name))
    values = [r for r, _ in rel]
    rel.sort(reverse=True)
    out.update(
        median_rel_width_diff=statistics.median(values),
        within_5pct=sum(r <= WITHIN for r in values) / len(values),
        worst=[{"tensor": n, "rel_width_diff": r, "onnxq": ours[n], "incumbent": theirs[n]} for r, n in rel[:5]],
    )
    return out


def _quant_width(r: Sequence[float]) -> float:
    """Width of the range a quantizer uses: ``[min(lo, 0), max(hi, 0)]`` (both tools' quantizers widen so).

    onnxq's histogram methods already return ``min = 0`` for non-negative data while the incumbent
    returns the clipped data minimum (e.g. [0.36, 1.39] for a positive tensor); widening both to
    include zero compares what quantization actually gets.
    """
    return max(r[1], 0.0) - min(r[0], 0.0)


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


def _run(label: str, target: str, kwargs: dict[str, Any], cap: float, timeout: float) -> RunResult:
    _progress(f"  {label} ...")
    r = run_isolated(target, kwargs, mem_cap_gb=cap, timeout_s=timeout)
    extra = f"{_secs(r):.1f} s" if _secs(r) is not None else r.describe()
    _progress(f"  {label}: {extra}, peak RSS {r.peak_rss_mb or 0:.0f} MB (process {r.wall_s:.1f} s)")
    if not r.ok and r.status == "error":
        for line in r.log_tail[-6:]:
            _progress(f"      | {line}")
    return r


def _goals(
    prepared: Mapping[str, Any],
    runs: Mapping[tuple[str, str, str], RunResult],
    agreements: Mapping[tuple[str, str], dict[str, Any]],
    flat: Sequence[tuple[int, RunResult]],
    timeout: float,
) -> list[tuple[str, str, str]]:
    """(verdict, goal, detail) lines computed from the measurements."""
    goals: list[tuple[str, str, str]] = []

    def count(model: str) -> int:
        return len(Samples(prepared[model]["samples"]))

    def scaled_note(model: str) -> str:
        n = count(model)
        return "" if n == SAMPLES[model] else f" [measured at {n} samples; the goal is stated for {SAMPLES[model]}]"

    for method in ("entropy", "percentile"):
        r = runs.get(("det", method, "onnxq"))
        if r is not None:
            ok = r.ok and r.peak_rss_mb is not None and r.peak_rss_mb < DET_PEAK_GOAL_MB
            goal = f"det {method}: onnxq peak RSS < {DET_PEAK_GOAL_MB / 1024:g} GB"
            goals.append(("PASS" if ok else "FAIL", goal, f"{r.peak_rss_mb or 0:.0f} MB, {r.describe()}{scaled_note('det')}"))
    q, inc = runs.get(("rec", "percentile", "onnxq")), runs.get(("rec", "percentile", "incumbent"))
    if q is not None and inc is not None:
        note = scaled_note("rec")
        speed_goal = f"rec percentile: onnxq >= {REC_SPEEDUP_GOAL:g}x faster than the incumbent"
        mem_goal = f"rec percentile: onnxq peak RSS <= 1/{REC_MEMORY_GOAL:g} of the incumbent's"
        if not q.ok:
            goals.append(("FAIL", speed_goal, f"onnxq {q.describe()}"))
        else:
            if inc.ok:
                speed = _secs(inc) / _secs(q)
                goals.append(("PASS" if speed >= REC_SPEEDUP_GOAL else "FAIL", speed_goal, f"{speed:.2f}x{note}"))
            elif inc.status == "timeout":
                speed = timeout / _secs(q)
                verdict = "PASS" if speed >= REC_SPEEDUP_GOAL else "N/A"
                goals.append((verdict, speed_goal, f">= {speed:.2f}x (incumbent timed out){note}"))
            else:
                goals.append(("N/A", speed_goal, f"incumbent {inc.describe()}{note}"))
            # A run that did not finish had at least the peak RSS seen before it died: a lower bound.
            if inc.peak_rss_mb and q.peak_rss_mb:
                mem = inc.peak_rss_mb / q.peak_rss_mb
                bound = "" if inc.ok else f" (incumbent {inc.describe()}: its figure is a lower bound)"
                verdict = "PASS" if mem >= REC_MEMORY_GOAL else ("FAIL" if inc.ok else "N/A")
                detail = f"{q.peak_rss_mb:.0f} vs {inc.peak_rss_mb:.0f} MB = 1/{mem:.2f}{bound}{note}"
                goals.append((verdict, mem_goal, detail))
    for model in prepared:
        q, inc = runs.get((model, "minmax", "onnxq")), runs.get((model, "minmax", "incumbent"))
        if q is None or inc is None:
            continue
        if not (q.ok and inc.ok):
            detail = f"onnxq {q.describe()}, incumbent {inc.describe()}"
            goals.append(("FAIL" if not q.ok else "N/A", f"{model} minmax: not slower, ranges identical", detail))
            continue
        a = agreements[model, "minmax"]
        faster = _secs(q) <= _secs(inc)
        goals.append(("PASS" if faster else "FAIL", f"{model} minmax: onnxq not slower", f"{_secs(q):.2f} s vs {_secs(inc):.2f} s"))
        same = a.get("all_identical", False) and a["common"] > 0
        goals.append(("PASS" if same else "FAIL", f"{model} minmax: ranges identical", _agree_text("minmax", a)))
    if len(flat) >= 2:
        (n0, r0), (n1, r1) = flat[0], flat[-1]
        goal = f"memory flat: onnxq peak RSS at {n1} vs {n0} samples <= {FLAT_TOLERANCE:g}x"
        if r0.ok and r1.ok and r0.peak_rss_mb and r1.peak_rss_mb:
            g = r1.peak_rss_mb / r0.peak_rss_mb
            goals.append(("PASS" if g <= FLAT_TOLERANCE else "FAIL", goal, f"{g:.3f}x ({r0.peak_rss_mb:.0f} -> {r1.peak_rss_mb:.0f} MB)"))
        else:
            goals.append(("FAIL", goal, f"{r0.describe()} / {r1.describe()}"))
    return goals


def main(argv: Sequence[str] | None = None) -> int:
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
    ap.add_argument(
        "--matched-percentile",
        action="store_true",
        help="run the incumbent's percentile two-sided (symmetric=False) with the same tail mass per side as onnxq "
        "(its p cuts (100-p)/2 %% per side, onnxq's (100-p) %%: 99.999 -> 99.998)",
    )
    ap.add_argument("--json", dest="json_out", help="write every measurement to this file")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the temporary samples/model folder")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in models if m not in MODELS] + [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown model/method: {', '.join(bad)}")
    if args.samples_scale <= 0:
        ap.error("--samples-scale must be > 0")
    inc_options = {m: dict(o) for m, o in INCUMBENT_OPTIONS.items()}
    if args.matched_percentile:
        p = ONNXQ_OPTIONS["percentile"]["percentile"]
        inc_options["percentile"].update(percentile=round(100.0 - 2.0 * (100.0 - p), 9), symmetric=False)
    cap = args.mem_cap_gb
    inc_cap = args.incumbent_mem_cap_gb if args.incumbent_mem_cap_gb is not None else cap
    me = Path(__file__).stem
    workdir = Path(tempfile.mkdtemp(prefix="bench-calibration-"))
    report: dict[str, Any] = {
        "config": {
            **{k: v for k, v in vars(args).items() if k != "json_out"},
            "incumbent_mem_cap_gb": inc_cap,
            "onnxq_options": ONNXQ_OPTIONS,
            "incumbent_options": inc_options,
            "transformer": TRANSFORMER_SMALL if args.small else TRANSFORMER,
            "seq": SEQ,
        },
        "runs": [],
        "flatness": [],
        "goals": [],
    }
    prepared: dict[str, dict[str, Any]] = {}
    runs: dict[tuple[str, str, str], RunResult] = {}
    flat: list[tuple[int, RunResult]] = []
    try:
        _progress(f"work folder {workdir}")
        for model in models:
            n = _scaled(SAMPLES[model], args.samples_scale)
            kw = {"model": model, "n": n, "outdir": str(workdir / model), "small": args.small}
            r = _run(f"prepare {model} ({n} samples)", f"{me}:child_prepare", kw, cap, args.timeout)
            if r.ok:
                prepared[model] = r.value
            else:
                print(f"{model}: could not prepare the model/samples: {r.describe()}")
        for model, prep in prepared.items():
            for method in methods:
                kw = {"model_path": prep["model_path"], "samples": prep["samples"], "method": method}
                label = f"{model} {method}"
                kq = {**kw, "options": ONNXQ_OPTIONS[method]}
                runs[model, method, "onnxq"] = _run(f"onnxq {label}", f"{me}:child_onnxq", kq, cap, args.timeout)
                if not args.skip_incumbent:
                    ki = {**kw, "options": inc_options[method], "workdir": str(workdir)}
                    runs[model, method, "incumbent"] = _run(f"incumbent {label}", f"{me}:child_incumbent", ki, inc_cap, args.timeout)
        if not args.skip_flatness:
            kw = {"model": "transformer", "n": 0, "outdir": str(workdir / "flat"), "small": args.small}
            tf = _run("prepare flatness transformer", f"{me}:child_prepare", kw, cap, args.timeout)
            if not tf.ok:
                print(f"flatness: could not build the transformer: {tf.describe()}")
            for count in FLAT_COUNTS if tf.ok else ():
                n = _scaled(count, args.samples_scale)
                kw = {
                    "model_path": tf.value["model_path"],
                    "samples": {**tf.value["samples"], "n": n},
                    "method": "percentile",
                    "options": ONNXQ_OPTIONS["percentile"],
                    "keep_ranges": False,
                }
                flat.append((n, _run(f"flatness onnxq transformer percentile x{n}", f"{me}:child_onnxq", kw, cap, args.timeout)))
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    # ---- tables ---------------------------------------------------------------------------------
    caps = f"cap {cap:g} GB" + (f", incumbent {inc_cap:g} GB" if inc_cap != cap else "") + f", timeout {args.timeout:g} s"
    print(f"\nCalibration: onnxq collect_ranges vs onnxruntime create_calibrator ({caps}; samples scale {args.samples_scale:g})")
    rows, ratio_rows = [], []
    agreements: dict[tuple[str, str], dict[str, Any]] = {}
    for model, prep in prepared.items():
        n = len(Samples(prep["samples"]))
        shape = "x".join(map(str, prep.get("shape") or [1, SEQ]))
        for method in methods:
            q, inc = runs.get((model, method, "onnxq")), runs.get((model, method, "incumbent"))
            agree = None
            if q is not None and inc is not None and q.ok and inc.ok:
                agree = agreements[model, method] = agreement(method, q.value["ranges"], inc.value["ranges"])
            for tool, r in (("onnxq", q), ("incumbent", inc)):
                if r is None:
                    continue
                tensors = r.value.get("tensors") if r.ok else None
                rows.append([model, method, tool, f"{n}x[{shape}]", _secs(r), r.peak_rss_mb, tensors, r.describe()])
                entry = {"model": model, "method": method, "tool": tool, "samples": n, "sample_shape": prep.get("shape")}
                report["runs"].append({**entry, **r.as_dict(), "agreement": agree if tool == "onnxq" else None})
            if inc is not None and q is not None:
                if agree:
                    text = _agree_text(method, agree)
                else:
                    text = f"onnxq {q.describe()}" if not q.ok else f"incumbent {inc.describe()}"
                m_ratio = ratio(inc.peak_rss_mb, q.peak_rss_mb) if inc.ok and q.ok else None
                ratio_rows.append([model, method, ratio(_secs(inc), _secs(q)), m_ratio, text])
    print_table(["model", "method", "tool", "samples", "wall s", "peak RSS MB", "tensors", "outcome"], rows, digits=1)
    if ratio_rows:
        print("\nIncumbent / onnxq (higher = onnxq better) and range agreement on common tensors")
        print_table(["model", "method", "time x", "peak RSS x", "agreement"], ratio_rows, digits=2)
    if flat:
        print(f"\nMemory flatness: onnxq percentile, transformer, batch 1, seq {SEQ}")
        flat_rows = [[n, _secs(r), 1000 * _secs(r) / n if r.ok else None, r.peak_rss_mb, r.describe()] for n, r in flat]
        print_table(["samples", "wall s", "ms/sample", "peak RSS MB", "outcome"], flat_rows, digits=1)
        report["flatness"] = [{"samples": n, **r.as_dict()} for n, r in flat]
        (n0, r0), (n1, r1) = flat[0], flat[-1]
        if r0.ok and r1.ok and r0.peak_rss_mb:
            print(f"peak RSS ratio {n1}/{n0} samples: {r1.peak_rss_mb / r0.peak_rss_mb:.3f}")

    goals = _goals(prepared, runs, agreements, flat, args.timeout)
    if goals:
        print("\nGoals")
        for verdict, what, detail in goals:
            print(f"{verdict:4}  {what}: {detail}")
    report["goals"] = [{"verdict": v, "goal": w, "detail": d} for v, w, d in goals]
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1, default=str))
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
