"""Pruning and weight compression on ONNX graphs: size, FLOPs, latency and agreement.

Models
  cnn   ResNet-style builder (``build("cnn")``, random weights), default width 64, 2 blocks per stage,
        128x128 input, 1000 classes: about 10-50 ms per fp32 run at 1 thread.
  det   real PP-OCRv4 detector (``models.zoo.fetch("ppocr-det")``) on rendered pages
        (``benchmarks/ocr_data.py det_samples``) at ``--det-size`` (default 640).
  tfm   BERT-style builder (hidden 384, 12 heads, 6 layers, vocab 30522), sequence 128 (low-rank only).

Sections (``--sections``, default all)
  channel    prune-channels 10/30/50 % (criterion l1; on the CNN also mean-activation from
             collect_channel_stats, and l1 with round_to=8): FLOPs, params, file size, 1-thread latency
             (every variant of a model timed interleaved in one run; ratio vs unpruned), agreement.
  magnitude  prune-magnitude 50 % / 80 %: weight sparsity, file size, deflate size, agreement.
  nm         prune-nm 2:4: the same, plus the layers that were skipped and why.
  lowrank    factorize-lowrank energy 0.9 / flop_ratio 0.5 on tfm: FLOPs, latency, cosine.
  cluster    cluster-weights 4 / 8 bits: file size, deflate size, agreement.
  combo      fp32, pruned fp32 (prune-channels 30 % l1), int8 (static QDQ) and pruned+int8 (ONE
             pipeline: upgrade-opset, cleanup, prune-channels, calibrate, annotate, tune-latency,
             insert-qdq) timed side by side; agreement of each vs fp32.

Agreement is always against the unpruned fp32 model on the same inputs (the CNN and transformer
have random weights, so these are not task accuracies): cosine and SQNR (dB) of the output, top-1
agreement of the CNN's logits, mean mask IoU of the detector's binarised (thresh 0.3) text maps.
Variants are built in-process by onnxq passes; the harness (``_harness.comparison.side_by_side``)
evaluates them against fp32 and times them interleaved (run plan "share"); each section runs in
its own memory-capped subprocess.

Goals (computed from the measurements): 30 % l1 channel pruning gives >= 1.3x lower latency on the
CNN; the pruned+int8 pipeline runs and is faster than both pruned fp32 and int8 (each model).

    python benchmarks/bench_pruning.py [--quick] [--json out.json] [--sections channel,combo] [--det-size 640]
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from _harness import onnxq_api as oq
from _harness.goals import Goal, print_goals
from _harness.isolate import run_isolated
from _harness.report import Column, fmt, print_records, write_json
from _pruning_models import Build, Subject, error_text, make_cnn, make_det, make_tfm, measure

SECTIONS = ("channel", "magnitude", "nm", "lowrank", "cluster", "combo")
CNN_GOAL_SPEEDUP = 1.3

HEADER = (
    "NOTE: the CNN and transformer builders have random (untrained) weights, and no model is fine-tuned\n"
    "after pruning: every accuracy column is AGREEMENT WITH THE UNPRUNED fp32 MODEL on the same inputs\n"
    "(cosine, SQNR dB, top-1 agreement; det: mean IoU of the binarised text mask), not task accuracy.\n"
    "Latency: onnxruntime CPU, 1 thread, median of interleaved runs; 'x' = unpruned median / this median."
)

Steps = list[tuple[str, dict[str, Any]]]


def _skipped_count(st: dict[str, Any]) -> int:
    """A pass's ``skipped`` stat: the count (the skip records hold the reasons), or ``{layer: reason}``."""
    skipped = st.get("skipped") or 0
    return skipped if isinstance(skipped, int) else len(skipped)


def _reasons(skipped: dict[str, str] | int, limit: int = 4) -> str:
    """``{layer: reason}`` summarised as 'count x reason' for the most common reasons."""
    if isinstance(skipped, int):
        return "reasons in the skip records"
    counts: dict[str, int] = {}
    for reason in skipped.values():
        key = reason if len(reason) < 140 else reason[:137] + "..."
        counts[key] = counts.get(key, 0) + 1
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    text = "; ".join(f"{n}x {r}" for r, n in items[:limit])
    return text + (f"; +{len(items) - limit} other reasons" if len(items) > limit else "")


# ---- tables ------------------------------------------------------------------------------------
COLUMNS = {c.key: c for c in (
    Column("variant", "variant"), Column("flops", "GFLOPs", "g"), Column("flops_ratio", "FLOPs x", "x"),
    Column("params", "params M", "m"), Column("file_bytes", "file MB", "mb"), Column("latency_ms", "ms", ".2f"),
    Column("speedup", "latency x", "x"), Column("sparsity", "sparsity", "%"), Column("layers", "layers", "d"),
    Column("layers_skipped", "skipped", "d"), Column("file_ratio", "file x", "x"), Column("deflate_bytes", "deflate MB", "mb"),
    Column("deflate_ratio", "deflate x", "x"), Column("quantized_nodes", "int8 nodes", "d"),
    Column("cosine", "cosine", ".5f"), Column("sqnr_db", "SQNR dB", ".1f"), Column("top1", "top-1 agr", "%"),
    Column("mask_iou", "mask IoU", ".4f"), Column("mask_iou_min", "IoU min", ".4f"),
)}
AGREEMENT = {"cnn": ["cosine", "sqnr_db", "top1"], "det": ["cosine", "sqnr_db", "mask_iou", "mask_iou_min"], "tfm": ["cosine", "sqnr_db"]}


def _table(out: dict[str, Any], title: str, keys: Sequence[str | Column], kind: str, rows: list[dict[str, Any]]) -> None:
    columns = [COLUMNS[k] if isinstance(k, str) else k for k in [*keys, *AGREEMENT[kind]]]
    out["tables"].append({"title": title, "columns": [[c.key, c.header, c.spec] for c in columns], "rows": rows})


def render_table(table: dict[str, Any]) -> None:
    print_records(table["title"], [Column(*c) for c in table["columns"]], table["rows"])


# ---- sections ----------------------------------------------------------------------------------
def _passes(sub: Subject, steps: Steps, channel_stats: Any = None) -> Build:
    return lambda: oq.run_passes(sub.base, steps, channel_stats=channel_stats)


def _prune(sub: Subject, ratio: float, **options: Any) -> Build:
    return _passes(sub, [("prune-channels", {"ratio": ratio, **options})])


def _channel_describe(_m: Any, st: dict[str, Any]) -> dict[str, Any]:
    if not st:
        return {}
    d = {"groups_pruned": st.get("pruned_groups"), "channels_removed": st.get("channels_removed")}
    if st.get("skipped"):
        d["note"] = f"{_skipped_count(st)} group(s) left unpruned: {_reasons(st['skipped'])}"
    return d


def _channel_variants(sub: Subject, cfg: argparse.Namespace, key: str) -> list[tuple[str, Build]]:
    ratios = (0.1, 0.3, 0.5)
    variants = [(f"l1 {int(r * 100)}%", _prune(sub, r, criterion="l1")) for r in ratios]
    if key == "cnn":
        stats: dict[str, Any] = {}

        def data_driven(r: float) -> tuple[Any, dict[str, Any]]:
            if "stats" not in stats:
                stats["stats"] = oq.channel_stats(sub.base, sub.calib_samples)
            return _passes(sub, [("prune-channels", {"ratio": r, "criterion": cfg.data_criterion})], stats["stats"])()

        variants += [(f"{cfg.data_criterion} {int(r * 100)}%", lambda r=r: data_driven(r)) for r in ratios]
        variants += [(f"l1 {int(r * 100)}% round_to=8", _prune(sub, r, round_to=8)) for r in ratios]
    return variants


def section_channel(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    for key in (k for k in ("cnn", "det") if k in subjects):
        sub = subjects[key]
        rows = measure(sub, _channel_variants(sub, cfg, key), cfg, latency=True, describe=_channel_describe)
        _table(out, f"channel pruning - {sub.name}", ["variant", "flops", "flops_ratio", "params", "file_bytes", "latency_ms", "speedup"], sub.kind, rows)
        if key == "cnn":
            row = next((r for r in rows if r["variant"] == "l1 30%"), None)
            sp = row.get("speedup") if row else None
            detail = f"measured {sp:.2f}x" if sp is not None else f"no measurement ({row.get('error') if row else 'row missing'})"
            r8 = next((r for r in rows if r["variant"] == "l1 30% round_to=8"), {})
            extra = f" [informative: l1 30% with round_to=8 gives {r8['speedup']:.2f}x]" if r8.get("speedup") else ""
            out["goals"].append(Goal(f"30% l1 channel pruning gives >= {CNN_GOAL_SPEEDUP}x lower latency on the CNN",
                                     sp is not None and sp >= CNN_GOAL_SPEEDUP, detail + extra).as_dict())


def _sparse_describe(_m: Any, st: dict[str, Any]) -> dict[str, Any]:
    if not st:
        return {}
    layers = st.get("pruned_layers", st.get("clustered", st.get("factorized")))
    d: dict[str, Any] = {"layers": layers, "layers_skipped": _skipped_count(st)}
    if "bytes_after" in st:
        d["weight_bytes_ratio"] = st["bytes_before"] / max(st["bytes_after"], 1)
    if st.get("skipped"):
        d["note"] = f"{_skipped_count(st)} layer(s) skipped: {_reasons(st['skipped'])}"
    return d


def _sparse_section(name: str, label_steps: Sequence[tuple[str, Steps]], subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    for sub in (subjects[k] for k in ("cnn", "det") if k in subjects):
        rows = measure(sub, [(label, _passes(sub, steps)) for label, steps in label_steps], cfg, latency=False, describe=_sparse_describe)
        keys = ["variant", "sparsity", "layers", "layers_skipped", "file_bytes", "file_ratio", "deflate_bytes", "deflate_ratio"]
        _table(out, f"{name} - {sub.name}", keys, sub.kind, rows)


def section_magnitude(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    _sparse_section("magnitude", [(f"magnitude {int(s * 100)}%", [("prune-magnitude", {"sparsity": s})]) for s in (0.5, 0.8)], subjects, cfg, out)


def section_nm(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    _sparse_section("nm", [("2:4", [("prune-nm", {"n": 2, "m": 4})])], subjects, cfg, out)


def section_cluster(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    _sparse_section("cluster", [(f"cluster {b}-bit", [("cluster-weights", {"bits": b})]) for b in (4, 8)], subjects, cfg, out)


def _lowrank_describe(_m: Any, st: dict[str, Any]) -> dict[str, Any]:
    if not st:
        return {}
    layers = st.get("layers") or {}
    d: dict[str, Any] = {"layers": st.get("factorized"), "layers_skipped": _skipped_count(st)}
    if layers:
        d["mean_rel_error"] = float(np.mean([v.get("relative_error", np.nan) for v in layers.values()]))
    if st.get("skipped"):
        d["note"] = f"{_skipped_count(st)} layer(s) not factorized: {_reasons(st['skipped'], 2)}"
    return d


def section_lowrank(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    sub = subjects["tfm"]
    variants = [("energy 0.9", _passes(sub, [("factorize-lowrank", {"energy": 0.9})])),
                ("flop_ratio 0.5", _passes(sub, [("factorize-lowrank", {"flop_ratio": 0.5})]))]
    rows = measure(sub, variants, cfg, latency=True, describe=_lowrank_describe)
    keys = ["variant", Column("layers", "factorized", "d"), Column("layers_skipped", "kept", "d"), Column("mean_rel_error", "W rel err", ".3f"),
            "flops", "flops_ratio", "params", "latency_ms", "speedup"]
    _table(out, f"low-rank factorization - {sub.name} (cosine of last_hidden_state)", keys, sub.kind, rows)


def _int8(sub: Subject, cfg: argparse.Namespace, prune_ratio: float | None, round_to: int = 1) -> Build:
    """onnxq's static int8 pipeline, with prune-channels after cleanup (BN folded), before calibration."""
    def build() -> tuple[Any, dict[str, Any]]:
        steps = oq.static_steps(tune=cfg.tune_budget_s > 0, tune_budget_s=max(cfg.tune_budget_s, 1.0))
        if prune_ratio is not None:
            at = next(i for i, s in enumerate(steps) if s["pass"] == "cleanup") + 1
            steps.insert(at, {"pass": "prune-channels", "ratio": prune_ratio, "criterion": "l1", "round_to": round_to})
        model, rep = oq.run_conversion(sub.raw, steps, data=list(sub.calib_samples))
        return model, {"quantized_nodes": rep.get("quantized_nodes"), "float_nodes": len(rep.get("float_nodes") or []),
                       "pipeline": [s["pass"] for s in rep.get("pipeline", [])]}

    return build


def _combo_goal(sub: Subject, rows: list[dict[str, Any]]) -> Goal:
    by = {r["variant"]: r for r in rows}
    both, pruned, int8 = by["pruned 30% + int8 (one pipeline)"], by["pruned 30% fp32"], by["int8"]
    if both.get("error") or "latency_ms" not in both:
        return Goal(f"pruning + int8 in one pipeline on {sub.name}", False, f"did not run ({both.get('error')})")
    others = {n: r["latency_ms"] for n, r in (("pruned fp32", pruned), ("int8", int8)) if "latency_ms" in r}
    ok = bool(others) and all(both["latency_ms"] < v for v in others.values())
    detail = ", ".join(f"{n} {v:.2f} ms" for n, v in others.items())
    r8, r8q = by["pruned 30% round_to=8 fp32"], by["pruned 30% round_to=8 + int8"]
    extra = ""
    if "latency_ms" in r8q:
        beats = "beats" if all(r8q["latency_ms"] < v for v in (r8.get("latency_ms", np.inf), int8.get("latency_ms", np.inf))) else "does not beat"
        extra = (f" [informative, round_to=8: pruned+int8 {r8q['latency_ms']:.2f} ms {beats} pruned fp32 {fmt(r8.get('latency_ms'), '.2f')} ms"
                 f" and int8 {fmt(int8.get('latency_ms'), '.2f')} ms]")
    return Goal(f"pruning + int8 in one pipeline runs and beats either alone on {sub.name}", ok, f"{both['latency_ms']:.2f} ms vs {detail}{extra}")


def section_combo(subjects: dict[str, Subject], cfg: argparse.Namespace, out: dict[str, Any]) -> None:
    def describe(_m: Any, st: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in st.items() if k in ("quantized_nodes", "float_nodes", "pipeline")}

    for sub in (subjects[k] for k in ("cnn", "det") if k in subjects):
        variants = [
            ("pruned 30% fp32", _prune(sub, 0.3, criterion="l1")),
            ("int8", _int8(sub, cfg, None)),
            ("pruned 30% + int8 (one pipeline)", _int8(sub, cfg, 0.3)),
            # The same with kept channel counts rounded up to multiples of 8 (kernel-friendly widths).
            ("pruned 30% round_to=8 fp32", _prune(sub, 0.3, round_to=8)),
            ("pruned 30% round_to=8 + int8", _int8(sub, cfg, 0.3, 8)),
        ]
        rows = measure(sub, variants, cfg, latency=True, describe=describe)
        keys = ["variant", "flops", "file_bytes", "quantized_nodes", "latency_ms", "speedup"]
        _table(out, f"pruning + int8 (one pipeline) - {sub.name}", keys, sub.kind, rows)
        out["goals"].append(_combo_goal(sub, rows).as_dict())


SECTION_FUNCS: dict[str, Callable[[dict[str, Subject], argparse.Namespace, dict[str, Any]], None]] = {
    "channel": section_channel,
    "magnitude": section_magnitude,
    "nm": section_nm,
    "lowrank": section_lowrank,
    "cluster": section_cluster,
    "combo": section_combo,
}


# ---- main --------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small CNN/transformer, det at 320, few samples and runs")
    ap.add_argument("--json", dest="json_out", help="write every measurement to this file")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--det-size", type=int, default=None, help="detector input side (multiple of 32; default 640, 320 with --quick)")
    ap.add_argument("--no-det", action="store_true", help="skip the real PP-OCR detector")
    ap.add_argument("--data-criterion", default="mean-activation", choices=("mean-activation", "apoz"))
    ap.add_argument("--runs", type=int, default=0, help="timed runs per model (default: from --bench-budget)")
    ap.add_argument("--bench-budget", dest="bench_budget_s", type=float, default=None, help="seconds per latency table")
    ap.add_argument("--tune-budget", dest="tune_budget_s", type=float, default=None, help="tune-latency budget in s (0: no tuning)")
    ap.add_argument("--no-isolate", action="store_true", help="run the sections in this process (debugging)")
    ap.add_argument("--mem-cap-gb", type=float, default=12.0, help="address-space cap of each section's subprocess")
    ap.add_argument("--section-timeout", dest="section_timeout_s", type=float, default=None, help="seconds per section (default 3600, 600 with --quick)")
    ap.add_argument("--cnn-width", type=int, default=None)
    ap.add_argument("--cnn-size", type=int, default=None)
    ap.add_argument("--cnn-blocks", type=int, default=None)
    args = ap.parse_args(argv)
    q = args.quick
    pick = lambda v, full, quick: v if v is not None else (quick if q else full)  # noqa: E731
    args.det_size = pick(args.det_size, 640, 320)
    if args.det_size % 32:
        ap.error("--det-size must be a multiple of 32")
    args.cnn_width, args.cnn_size, args.cnn_blocks = pick(args.cnn_width, 64, 32), pick(args.cnn_size, 128, 64), pick(args.cnn_blocks, 2, 1)
    args.bench_budget_s, args.tune_budget_s = pick(args.bench_budget_s, 25.0, 2.0), pick(args.tune_budget_s, 30.0, 3.0)
    args.section_timeout_s = pick(args.section_timeout_s, 3600.0, 600.0)
    args.min_runs, args.warmup = (5, 1) if q else (30, 5)
    args.eval_n, args.calib_n, args.det_eval_n, args.det_calib_n = (4, 4, 2, 2) if q else (64, 32, 16, 16)
    tfm = (128, 4, 2, 1000, 32, 2) if q else (384, 12, 6, 30522, 128, 8)
    args.tfm_hidden, args.tfm_heads, args.tfm_layers, args.tfm_vocab, args.tfm_seq, args.tfm_eval_n = tfm
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = sorted(set(args.sections) - set(SECTIONS))
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}; valid: {', '.join(SECTIONS)}")
    return args


def run_section(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One section with its own models (the subprocess entry point): tables, goals, errors."""
    ns = argparse.Namespace(**cfg)
    out: dict[str, Any] = {"tables": [], "goals": [], "errors": {}, "models": {}}
    makers = [("tfm", make_tfm)] if name == "lowrank" else [("cnn", make_cnn)] + ([] if ns.no_det else [("det", make_det)])
    subjects: dict[str, Subject] = {}
    for key, maker in makers:
        t0 = time.perf_counter()
        try:
            sub = subjects[key] = maker(ns)
        except Exception as e:  # noqa: BLE001 - e.g. the zoo package or the font is missing
            out["errors"][f"model {key}"] = f"skipped: {error_text(e)}"
            continue
        out["models"][key] = (
            f"{sub.name}: {oq.node_count(sub.base)} nodes after cleanup, {oq.parameter_count(sub.base) / 1e6:.2f} M params, "
            f"{fmt(oq.flops(sub.base, sub.shapes, sub.bench_feeds), 'g')} GFLOPs, prepared in {time.perf_counter() - t0:.1f} s"
        )
    if not subjects or name == "lowrank" and "tfm" not in subjects:
        out["errors"][name] = "skipped: its models could not be prepared"
        return out
    try:
        SECTION_FUNCS[name](subjects, ns, out)
    except Exception as e:  # noqa: BLE001 - report what was measured before the failure
        out["errors"][name] = f"{error_text(e)} | {traceback.format_exc(limit=3).splitlines()[-3:]}"
    return out


def _run_section_isolated(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """``run_section`` in a fresh, memory-capped subprocess, so that an onnxruntime crash on one
    pruned model or a runaway allocation ends that section only."""
    r = run_isolated("bench_pruning:run_section", {"name": name, "cfg": cfg}, mem_cap_gb=cfg["mem_cap_gb"], timeout_s=cfg["section_timeout_s"])
    if r.ok:
        return {**r.value, "peak_rss_mb": r.peak_rss_mb, "wall_s": round(r.wall_s, 1)}
    tail = " | ".join(r.log_tail[-3:])
    return {"tables": [], "goals": [], "models": {}, "errors": {name: f"section {r.describe()}; log: {tail}"}, "wall_s": round(r.wall_s, 1)}


def _show_section(name: str, res: dict[str, Any], report: dict[str, Any], seen_models: set[str]) -> None:
    for line in res.get("models", {}).values():
        if line.split(":")[0] not in seen_models:
            seen_models.add(line.split(":")[0])
            print(f"model {line}")
    for table in res.get("tables", []):
        render_table(table)
    for where, msg in res.get("errors", {}).items():
        report["errors"][f"{name}/{where}" if where != name else name] = msg
        print(f"ERROR in {where}: {msg}")
    report["goals"] += res.get("goals", [])
    rss = f", peak RSS {res['peak_rss_mb']:.0f} MB" if res.get("peak_rss_mb") else ""
    print(f"(section {name}: {res.get('wall_s', '-')} s{rss})", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    import onnxruntime

    smoke = "  [--quick: SMOKE RUN - small models, few samples and runs; figures are not meaningful]" if cfg.quick else ""
    print("# onnxq pruning / compression benchmark" + smoke)
    print(HEADER)
    where = "in this process" if cfg.no_isolate else f"each in its own subprocess ({cfg.mem_cap_gb:g} GB cap, {cfg.section_timeout_s:g} s timeout)"
    print(f"onnxruntime {onnxruntime.__version__}; sections {','.join(cfg.sections)}, {where}")
    child_cfg = {k: v for k, v in vars(cfg).items() if k != "json_out"}
    report: dict[str, Any] = {"config": child_cfg, "sections": {}, "goals": [], "errors": {}}
    seen_models: set[str] = set()
    for name in cfg.sections:
        print(f"\n# section {name}", flush=True)
        t0 = time.perf_counter()
        res = run_section(name, child_cfg) if cfg.no_isolate else _run_section_isolated(name, child_cfg)
        res.setdefault("wall_s", round(time.perf_counter() - t0, 1))
        report["sections"][name] = res
        _show_section(name, res, report, seen_models)
    print_goals(
        [Goal.from_dict(g) for g in report["goals"]],
        "# goals" + (" (SMOKE RUN: small models, few runs - not the real verdict)" if cfg.quick else ""),
        empty="(no goal measured by the selected sections)",
    )
    if cfg.json_out:
        write_json(cfg.json_out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
