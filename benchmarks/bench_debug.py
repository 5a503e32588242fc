"""``onnxq debug`` on the real PP-OCRv4 detector: time and peak RSS against two plain runs of the models.

The float detector comes from the rapidocr-onnxruntime wheel (``models/zoo.py``); its int8 twin is
made once with ``onnxq convert`` (static QDQ, percentile calibration on 16 of the pages, no tuning:
the tuner's decisions do not change what debug has to do). ``--samples`` rendered OCR pages
(``benchmarks/ocr_data.py``, [1, 3, 736, 736], seeded) are written as a ``.npz`` folder, read one at a
time by both sides.

Each measured run is its own subprocess (``_harness.isolate.run_isolated``: peak RSS is the child's
VmHWM, wall time is measured inside the child from model load to result, imports excluded):

* ``plain``: onnxruntime sessions for both models (default options, as a user runs them), then
  every page through the float model and through the int8 model;
* ``debug``: :func:`onnxq.debug.compare_layers` (what ``onnxq debug FLOAT QUANT --data DIR``
  runs) at the default ``--max-memory`` (1024 MB) and at a smaller budget, to show memory follows
  the budget (streamed in groups, never all activations of all samples).

Goals: debug within 3x the time of the two plain runs; its peak RSS within the budget plus the
models' own (plain) peak and 512 MB of working memory, and lower with the smaller budget.

    python benchmarks/bench_debug.py [--samples 32] [--small-budget 256] [--threads 0] [--workdir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness.goals import Goal, check, print_goals
from _harness.isolate import RunResult, run_isolated
from _harness.report import print_table, ratio, write_json

SEED = 20240
SIZE = 736
DEFAULT_BUDGET_MB = 1024.0


def child_prepare(workdir: str, n: int) -> dict[str, Any]:
    """The float model's path, the int8 model (made once) and a folder of ``n`` pages."""
    import numpy as np
    import ocr_data

    from models.zoo import fetch

    out = Path(workdir)
    data = out / f"det-pages-{n}"
    data.mkdir(parents=True, exist_ok=True)
    for i in range(n):  # one page at a time
        path = data / f"page_{i:05d}.npz"
        if not path.exists():
            np.savez(path, x=ocr_data.det_samples(1, seed=SEED + i, size=SIZE)[0][0])
    float_path = str(fetch("ppocr-det"))
    quant_path = out / "ppocr-det.int8.onnx"
    if not quant_path.exists():
        from onnxq import convert

        convert(float_path, str(data), samples=min(16, n), tune=False).save(quant_path)
    return {"float": float_path, "quant": str(quant_path), "data": str(data)}


def child_plain(float_path: str, quant_path: str, data: str, threads: int) -> dict[str, Any]:
    """Both models run on every page, as plain onnxruntime sessions."""
    import numpy as np
    import onnxruntime as ort

    files = sorted(Path(data).glob("*.npz"))
    start = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sessions = [ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for p in (float_path, quant_path)]
    for f in files:
        with np.load(f) as z:
            feeds = {"x": z["x"]}
        for s in sessions:
            s.run(None, feeds)
    return {"seconds": time.perf_counter() - start, "samples": len(files)}


def child_debug(float_path: str, quant_path: str, data: str, threads: int, max_memory_mb: float) -> dict[str, Any]:
    """``onnxq debug``: compare_layers on every page."""
    from onnxq.debug import compare_layers

    start = time.perf_counter()
    report = compare_layers(float_path, quant_path, data, max_memory_mb=max_memory_mb, threads=threads, progress=False)
    worst = report.blame()[0]
    return {
        "seconds": time.perf_counter() - start,
        "samples": report.samples,
        "groups": report.groups,
        "matched": len(report.tensors),
        "unmatched": len(report.unmatched),
        "worst": f"{worst.layer} ({worst.tensor}): local {worst.local_sqnr:.1f} dB",
        "first_jumps": [t.tensor for t in report.first_jumps],
    }


def _row(name: str, r: RunResult, base: RunResult | None) -> list[Any]:
    seconds = r.value["seconds"] if r.ok else None
    base_s = base.value["seconds"] if base is not None and base.ok else None
    groups = r.value.get("groups", "-") if r.ok else "-"
    return [name, r.describe(), seconds, ratio(seconds, base_s) if base is not None else None, r.peak_rss_mb, groups]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--small-budget", type=float, default=256.0, help="the smaller --max-memory run (MB)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads for both sides (0: all cores)")
    parser.add_argument("--workdir", help="keep pages and the int8 model here (default: a temporary folder)")
    parser.add_argument("--mem-cap-gb", type=float, default=12.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", help="write the measurements as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-debug-") as tmp:
        workdir = args.workdir or tmp
        prep = run_isolated("bench_debug:child_prepare", {"workdir": workdir, "n": args.samples}, mem_cap_gb=args.mem_cap_gb, timeout_s=args.timeout)
        if not prep.ok:
            print(f"preparation {prep.describe()}", file=sys.stderr)
            return 1
        paths = {"float_path": prep.value["float"], "quant_path": prep.value["quant"], "data": prep.value["data"], "threads": args.threads}
        runs = {"plain": run_isolated("bench_debug:child_plain", paths, mem_cap_gb=args.mem_cap_gb, timeout_s=args.timeout)}
        for budget in (DEFAULT_BUDGET_MB, args.small_budget):
            runs[f"debug --max-memory {budget:g}"] = run_isolated(
                "bench_debug:child_debug", {**paths, "max_memory_mb": budget}, mem_cap_gb=args.mem_cap_gb, timeout_s=args.timeout
            )
    plain = runs["plain"]
    print(f"PP-OCRv4 detector, {args.samples} pages of [1, 3, {SIZE}, {SIZE}], onnxruntime threads {args.threads or 'default'}")
    print_table(["run", "outcome", "seconds", "x plain", "peak RSS MB", "groups"], [_row(k, r, plain if k != "plain" else None) for k, r in runs.items()])
    big, small = runs[f"debug --max-memory {DEFAULT_BUDGET_MB:g}"], runs[f"debug --max-memory {args.small_budget:g}"]
    if big.ok:
        v = big.value
        print(f"matched {v['matched']} tensors ({v['unmatched']} unmatched); worst: {v['worst']}; first jumps: {v['first_jumps']}")
    print_goals(_goals(plain, big, small, args.small_budget))
    if args.json:
        write_json(args.json, {"samples": args.samples, "threads": args.threads, "runs": {k: r.as_dict() for k, r in runs.items()}})
    return 0


def _goals(plain: RunResult, big: RunResult, small: RunResult, small_budget: float) -> list[Goal]:
    def seconds(r: RunResult) -> float | None:
        return r.value["seconds"] if r.ok else None

    goals = [check("debug time <= 3x two plain runs", ratio(seconds(big), seconds(plain)), lambda v: v <= 3.0, "{:.2f}x")]
    bound = (plain.peak_rss_mb or 0) + DEFAULT_BUDGET_MB + 512
    goals.append(check(f"peak RSS within budget + plain peak + 512 MB ({bound:.0f} MB)", big.peak_rss_mb, lambda v: v <= bound, "{:.0f} MB"))
    lower = ratio(small.peak_rss_mb, big.peak_rss_mb)
    goals.append(check(f"--max-memory {small_budget:g} lowers the peak", lower, lambda v: v < 1.0, "{:.2f}x of the default's"))
    return goals


if __name__ == "__main__":
    sys.exit(main())
