"""7-bit weights everywhere vs where they are measured to be needed (``choose-weight-range``), per model.

On x86 CPUs without VNNI onnxruntime's u8·s8 kernels saturate; ``reduce_range`` (7-bit weights) is
the documented cure, and costs every layer one bit. For every model and weight granularity
(per-tensor, per-channel) the same calibration and held-out feeds go to three static conversions
with ``tune=False`` (so no node is floated and the columns show the weights' grid alone):

* ``7-bit``: ``reduce_range=True`` (annotate's automatic answer on such a CPU, before this pass);
* ``measured``: ``reduce_range`` automatic: ``choose-weight-range`` picks per node (its choice and
  the saturating nodes it found are in the ``choice`` column);
* ``8-bit``: ``reduce_range=False`` (the incumbent's default: saturation left in).

Accuracy is each model's agreement with its own fp32 output on the held-out feeds, computed on
onnxruntime's int8 kernels (what ships): SQNR and cosine of the worst output, top-1 agreement where
the output is class scores. Latency: 1 thread, interleaved medians (the grid does not change the
graph, so equal latencies are expected; a shared machine makes them noisy). On a VNNI or ARM CPU the
pass has nothing to decide and the three rows of ``measured`` / ``8-bit`` agree.

    python benchmarks/bench_weight_range.py [--models mlp,cnn,mobilenet,detector,ppocr-cls] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from _harness import cli, metrics
from _harness import onnxq_api as oq
from _harness.comparison import Settings, flat_rows, side_by_side
from _harness.goals import Goal, check, print_goals
from _harness.report import Column, print_records, write_json
from _harness.timing import RunPlan, TimingSpec

REFERENCE = "fp32"
#: model → (builder options, input shape); ppocr-cls is the real PP-OCR direction classifier.
BUILDERS: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "mlp": ({}, (64, 32)),
    "cnn": ({"input_size": 96}, (1, 3, 96, 96)),
    "mobilenet": ({"input_size": 128}, (1, 3, 128, 128)),
    "detector": ({"input_size": 256}, (1, 3, 256, 256)),
}
MODELS = (*BUILDERS, "ppocr-cls")
GRIDS = {"7-bit": True, "measured": None, "8-bit": False}
COLUMNS = [Column("variant", "variant"), Column("sqnr_db", "SQNR dB", ".2f"), Column("gain_db", "vs 7-bit", "+.2f"),
           Column("cosine", "cosine", ".5f"), Column("top1", "top-1 agree", "%"), Column("latency_ms", "ms (1 thr)", ".3f"),
           Column("build_s", "convert s", ".1f"), Column("choice", "choice")]


def _model(name: str, quick: bool) -> tuple[Any, Callable[[int, int], list[dict[str, np.ndarray]]]]:
    """The fp32 model and a seeded feed maker ``(n, seed) -> feeds``."""
    if name == "ppocr-cls":  # rendered text lines, half of them rotated (benchmarks/ocr_data.py)
        from _static_models import _cls_data

        from models.zoo import fetch

        path = fetch("ppocr-cls")
        return oq.load(str(path)), lambda n, seed: _cls_data(path, n, seed)[0]
    from models import build

    options, shape = BUILDERS[name]
    if quick and len(shape) == 4:
        options, shape = {**options, "input_size": 64}, (*shape[:2], 64, 64)

    def feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        return [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]

    return oq.load(build(name, **options)), feeds


def _steps(per_channel: bool, reduce_range: bool | None) -> list[dict[str, Any]]:
    from onnxq.api import ConversionOptions
    from onnxq.api.pipelines import PipelineInputs, build_steps

    return build_steps(ConversionOptions(per_channel=per_channel, reduce_range=reduce_range, tune=False), PipelineInputs(has_data=True, has_ranges=False))


def _choice(report: dict[str, Any]) -> str:
    stats = next((p.get("stats", {}) for p in report.get("passes", []) if p["pass"] == "choose-weight-range"), None)
    if not stats:
        return ""
    if "skipped" in stats:
        return f"skipped: {stats['skipped']}"
    return f"{stats['chosen']} ({len(stats['saturating'])}/{stats['candidates']} saturate, {stats['rounds']} rounds)"


def _built(base: Any, per_channel: bool, calib: list[dict[str, np.ndarray]]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    yield REFERENCE, {"variant": REFERENCE}, base
    for label, reduce_range in GRIDS.items():
        start = time.perf_counter()
        model, report = oq.run_conversion(base, _steps(per_channel, reduce_range), calib)
        row = {"variant": label, "build_s": time.perf_counter() - start, "choice": _choice(report)}
        print(f"  {label}: converted in {row['build_s']:.1f} s {row['choice']}", flush=True)
        yield label, row, model


def bench(name: str, per_channel: bool, cfg: argparse.Namespace) -> list[dict[str, Any]]:
    base, feeds = _model(name, cfg.quick)
    res = side_by_side(
        _built(base, per_channel, feeds(8 if cfg.quick else 32, 1001)),
        reference=REFERENCE,
        feeds=feeds(4 if cfg.quick else 16, 2002),
        metric=lambda: metrics.OutputAgreement(worst=True, top1_key="top1"),
        settings=Settings(None, None, eval_threads=1, timing=TimingSpec([1], RunPlan(cfg.budget, 5, 400, rule="share"), warmup=3, reuse_sessions=True)),
        timed_feed=feeds(1, 3003)[0],
        where=f"[{name}] ",
    )
    rows = flat_rows(res)
    narrow = next(r.get("sqnr_db") for r in rows if r["variant"] == "7-bit")
    for r in rows:
        if r["variant"] != REFERENCE and r.get("sqnr_db") is not None and narrow is not None:
            r["gain_db"] = r["sqnr_db"] - narrow
    return rows


def goals(results: dict[str, list[dict[str, Any]]]) -> list[Goal]:
    """The measured choice never loses to all-7-bit by more than noise (0.5 dB) and is never worse than all-8-bit by more than that."""
    out = []
    for key, rows in results.items():
        by = {r["variant"]: r for r in rows}
        gain = by.get("measured", {}).get("gain_db")
        out.append(check(f"{key}: measured >= 7-bit - 0.5 dB", gain, lambda g: g >= -0.5, "{:+.2f} dB"))
        wide = by.get("8-bit", {}).get("gain_db")
        delta = None if gain is None or wide is None else gain - wide
        out.append(check(f"{key}: measured >= 8-bit - 0.5 dB", delta, lambda d: d >= -0.5, "{:+.2f} dB"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    cfg, names = cli.in_process_args(__doc__.splitlines()[0], MODELS, argv, budget=2.0, budget_help="seconds of interleaved timing per model and granularity")
    from onnxq.runtime.kernels import int8_products_saturate

    print(f"Static int8 QDQ, tune off; this CPU's u8·s8 kernel saturates: {int8_products_saturate('uint8', 'int8')}. Agreement with each model's fp32 output.")
    results: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        for per_channel in (False, True):
            key = f"{name} {'per-channel' if per_channel else 'per-tensor'}"
            print(f"--- {key}", flush=True)
            results[key] = bench(name, per_channel, cfg)
            print_records(f"## {key}", COLUMNS, results[key])
    found = goals(results)
    print_goals(found)
    if cfg.json:
        write_json(cfg.json, {"results": results, "goals": [g.as_dict() for g in found], "quick": cfg.quick})
    return 0 if all(g.ok for g in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
