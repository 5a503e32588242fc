"""Dynamic int8, weight-only int8/int4 (block-wise) and fp16/bf16: onnxruntime's tools vs onnxq, in one run.

For every model the same fp32 file, the same calibration feeds and the same held-out feeds go to
every converter. Variants (``--variants`` filters them):

* ``fp32``: the original file.
* ``ort-dyn`` / ``ort-dyn-pc``: ``onnxruntime.quantization.quantize_dynamic`` with QInt8 weights,
  ``per_channel`` False / True, everything else at onnxruntime's defaults (no pre-processing).
* ``ort-int4-b32`` / ``ort-int4-b128``: ``MatMulNBitsQuantizer`` with ``DefaultWeightOnlyQuantConfig``
  (onnxruntime 1.32's round-to-nearest min/max quantizer: 4 bits, asymmetric, QOperator format =
  MatMulNBits; ``RTNWeightOnlyQuantConfig`` needs neural-compressor) at block 32 / 128, with
  ``accuracy_level`` = ``--ort-accuracy-level`` (default 4, the level onnxq writes, so both int4
  kernels compute alike and the comparison is about the weights).
* ``ort-fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``;
  ``occ-fp16``: the same function of ``onnxconverter_common`` when that package is installed.
* ``onnxq-dyn``: ``convert(mode="dynamic")`` without data (no smoothing, no latency guard);
  ``onnxq-dyn+smooth``: with the calibration feeds (smoothing alpha 0.5 + the latency guard).
* ``onnxq-int4-b{32,128}-{rtn,mse}``: ``mode="weight-only", weight_bits=4`` with ``scale_search`` none / mse;
  ``onnxq-int4-b32+gather``: mse, ``include_gather=True`` (models with an embedding Gather only);
  ``onnxq-int8-wo``: ``weight_bits=8`` (default block 32, mse); ``onnxq-fp16`` / ``onnxq-bf16``.

How each number is measured (``_harness``):

* conversion: each variant in its own subprocess (``_harness.isolate``): wall time and peak
  RSS of that child; a crash, timeout or exception is recorded as ``failed: <reason>``; a file
  onnxruntime cannot load or run is recorded as ``onnxruntime cannot load/fails on sample: <reason>``.
* latency: all loaded variants of one model get a CPU session (graph optimisations on, 1 thread, no
  spinning) and are timed round-robin on the same input (``_harness.timing``, rule "round"): runs
  are chosen so one round of all variants fits ``--budget`` seconds (clamped to
  ``--min-runs``..``--max-runs``; default 90 s, 30..1000 runs). Speedup = fp32 median / variant median from the same run. Other
  ``--threads`` counts are timed separately and marked noisy (2 shared cores).
* size: bytes of the written .onnx file; ratio to the fp32 file.
* accuracy on held-out feeds (never the calibration feeds): cosine between the variant's and fp32's
  main output per row (row = one sentence embedding for MiniLM, one sample for the transformers,
  one batch item for LSTM/MLP), mean and min over all rows. MiniLM also: nearest-neighbour agreement
  (for each held-out sentence, is its nearest other sentence by embedding cosine the same as fp32's?)
  and pair@1 (is it the sentence's paraphrase partner? ``SENTENCES`` come in pairs).
* MiniLM data: held-out = ``models.minilm.SENTENCES`` (64 sentences, 32 paraphrase pairs) in batches
  of 8 x 64 tokens, the timed input is the first batch; calibration = ``CALIB_SENTENCES``
  (in ``_dynamic_models.py``, written for this benchmark, disjoint from SENTENCES). Builders: seeded synthetic inputs, separate
  seeds for calibration and held-out.

    python benchmarks/bench_dynamic.py [--models transformer,minilm,lstm,matmul,mlp] [--quick]
                                       [--threads 1,2] [--json out.json] [--keep DIR]

Do not run the full benchmark on a shared machine: it times ~17 variants per model with both cores.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from _dynamic_models import SPECS, ModelSpec
from _harness import cli, incumbent, metrics
from _harness.comparison import Comparison, Contender, Settings, run_all
from _harness.goals import Goal, print_goals
from _harness.report import fmt, latency_median, print_heading, print_markdown, print_table, ratio, write_json
from _harness.timing import RunPlan, TimingSpec

FP32 = "fp32"
RUN_DEFAULTS = cli.RunDefaults(budget=(90.0, 1.0), min_runs=(30, 3), max_runs=(1000, 10), mem_cap_gb=8.0, timeout=1200.0)
#: "Equal speed" band for latency comparisons: interleaved medians of identical graphs differ by ~1-2%.
SPEED_TOL = 0.03


# ---- variants ----------------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    tool: str  # fp32 | ort | occ | onnxq
    family: str  # fp32 | int8-dyn | int8-wo | int4 | fp16 | bf16
    converter: str | None  # a name in _harness.convert.CONVERTERS (None: the fp32 file)
    options: dict[str, Any] = field(default_factory=dict)
    data: bool = False  # gets the calibration feeds
    gather_only: bool = False  # only for models with an embedding Gather


def _int4(block: int, search: str, **extra: Any) -> dict[str, Any]:
    return {"mode": "weight-only", "weight_bits": 4, "block_size": block, "scale_search": search, **extra}


VARIANTS: list[Variant] = [
    Variant(FP32, "fp32", "fp32", None),
    Variant("ort-dyn", "ort", "int8-dyn", "ort-dynamic", {"per_channel": False}),
    Variant("ort-dyn-pc", "ort", "int8-dyn", "ort-dynamic", {"per_channel": True}),
    Variant("onnxq-dyn", "onnxq", "int8-dyn", "onnxq-convert", {"mode": "dynamic"}),
    Variant("onnxq-dyn+smooth", "onnxq", "int8-dyn", "onnxq-convert", {"mode": "dynamic", "smooth": 0.5}, data=True),
    Variant("onnxq-dyn+gather", "onnxq", "int8-dyn", "onnxq-convert", {"mode": "dynamic", "smooth": 0.5, "include_gather": True},
            data=True, gather_only=True),
    Variant("onnxq-int8-wo", "onnxq", "int8-wo", "onnxq-convert", {"mode": "weight-only", "weight_bits": 8}),
    Variant("ort-int4-b32", "ort", "int4", "ort-nbits", {"block_size": 32}),
    Variant("onnxq-int4-b32-rtn", "onnxq", "int4", "onnxq-convert", _int4(32, "none")),
    Variant("onnxq-int4-b32-mse", "onnxq", "int4", "onnxq-convert", _int4(32, "mse")),
    Variant("onnxq-int4-b32+gather", "onnxq", "int4", "onnxq-convert", _int4(32, "mse", include_gather=True), gather_only=True),
    Variant("ort-int4-b128", "ort", "int4", "ort-nbits", {"block_size": 128}),
    Variant("onnxq-int4-b128-rtn", "onnxq", "int4", "onnxq-convert", _int4(128, "none")),
    Variant("onnxq-int4-b128-mse", "onnxq", "int4", "onnxq-convert", _int4(128, "mse")),
    Variant("ort-fp16", "ort", "fp16", "ort-fp16"),
    Variant("occ-fp16", "occ", "fp16", "occ-fp16"),
    Variant("onnxq-fp16", "onnxq", "fp16", "onnxq-convert", {"mode": "fp16"}),
    Variant("onnxq-bf16", "onnxq", "bf16", "onnxq-convert", {"mode": "bf16"}),
]
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}


def _contender(v: Variant, args: argparse.Namespace, occ: bool) -> Contender:
    options = dict(v.options, accuracy_level=args.ort_accuracy_level) if v.converter == "ort-nbits" else v.options
    skip = "onnxconverter_common not installed (skipped)" if v.converter == "occ-fp16" and not occ else None
    return Contender(v.name, v.converter, options, data=v.data, info={"tool": v.tool, "family": v.family, "options": v.options}, skip=skip)


def comparison(spec: ModelSpec, args: argparse.Namespace) -> Comparison:
    occ = incumbent.has_onnxconverter_common()
    contenders = [_contender(v, args, occ) for v in VARIANTS
                  if v.name in args.variants and not (v.gather_only and not spec.has_gather)]
    return Comparison(spec.name, spec.description(args.quick), lambda w: spec.make(w, args.quick),
                      lambda path: spec.data(path, args.quick, args.eval), contenders,
                      lambda path: lambda: metrics.RowCosine(neighbours=spec.minilm),
                      outputs=spec.output or "first", extra={"minilm": spec.minilm})


def settings(args: argparse.Namespace) -> Settings:
    """Accuracy at 1 thread with the sessions then timed at 1 thread; other thread counts fresh."""
    plan = RunPlan(args.budget, args.min_runs, args.max_runs, rule="round")
    return Settings(args.mem_cap_gb, args.timeout, eval_threads=1,
                    timing=TimingSpec(args.threads, plan, warmup=args.warmup, reuse_sessions=True))


# ---- reporting ---------------------------------------------------------------------------------
def _acc(v: dict[str, Any] | None, key: str) -> float | None:
    return ((v or {}).get("accuracy") or {}).get(key)


def _drift(v: dict[str, Any], threads: int) -> str:
    return fmt(((v.get("latency") or {}).get(str(threads)) or {}).get("drift_pct"), ".1f")


def _model_row(name: str, v: dict[str, Any], fp: dict[str, Any], minilm: bool, width: int) -> list[str]:
    row = [name, v["family"]]
    if not v["ok"]:
        return row + ["-"] * (width - 3) + [("" if v.get("skipped") else "FAILED: ") + v["error"]]
    m = latency_median(v, 1)
    row += [fmt(m, ".2f"), fmt(ratio(latency_median(fp, 1), m), ".2f"), _drift(v, 1),
            fmt(v["bytes"] / 1e6, ".2f"), fmt(ratio(v["bytes"], fp["bytes"]), ".3f"),
            fmt(_acc(v, "cos_mean"), ".5f"), fmt(_acc(v, "cos_min"), ".5f")]
    if minilm:
        row += [fmt(_acc(v, "nn_agree"), ".3f"), fmt(_acc(v, "pair_at_1"), ".3f")]
    notes = list(v.get("notes", []))
    if (v.get("accuracy") or {}).get("error"):
        notes.insert(0, v["accuracy"]["error"])
    if v.get("accuracy") and not v["accuracy"].get("finite", True):
        notes.insert(0, "NON-FINITE outputs")
    return row + [fmt(v.get("seconds"), ".1f"), fmt(v.get("peak_rss_mb"), ".0f"), "; ".join(notes)]


def print_model(res: dict[str, Any], threads: Sequence[int]) -> None:
    if not print_heading(res):
        return
    d = res["data"]
    print(f"  data: {d['calibration']} calibration + {d['held_out']} held-out feeds ({d['shapes']}); compared output: {res['output']}")
    variants = res["variants"]
    fp = variants[FP32]
    headers = ["variant", "family", "1t ms", "x fp32", "drift%", "MB", "x size", "cos mean", "cos min"]
    headers += (["NN agree", "pair@1"] if res["minilm"] else []) + ["conv s", "peak MB", "notes"]
    print_table(headers, [_model_row(n, v, fp, res["minilm"], len(headers)) for n, v in variants.items()])
    for t in threads:
        if t == 1:
            continue
        print(f"\n  {t} threads (NOISY: shared 2-core machine; 1 thread is the reference)")
        rows = [[n, fmt(latency_median(v, t), ".2f"), fmt(ratio(latency_median(fp, t), latency_median(v, t)), ".2f"), _drift(v, t)]
                for n, v in variants.items() if v["ok"]]
        print_table(["variant", f"{t}t ms*", f"x fp32 {t}t*", "drift%"], rows)
    for t, err in (res.get("timing_errors") or {}).items():
        print(f"  timing at {t} thread(s) failed: {err}")
    runs = {((v.get("latency") or {}).get("1") or {}).get("runs") for v in variants.values() if v["ok"]}
    print(f"  1-thread runs per variant: {', '.join(str(r) for r in runs if r)}; drift% = gap between the medians of the "
          "first and second half of the runs, relative to the median (large = unstable, rerun on a quiet machine)")


FAMILY_ORDER = {"fp32": 0, "fp16": 1, "bf16": 2, "int8-dyn": 3, "int8-wo": 4, "int4": 5}
FAMILY_LABEL = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8-dyn": "int8 dynamic", "int8-wo": "int8 weight-only",
                "int4": "int4 weight-only"}


def print_size_markdown(res: dict[str, Any]) -> None:
    """Size table of one model in Markdown (the README carries the transformer builder's)."""
    if "skipped" in res:
        return
    variants = res["variants"]
    fp = variants[FP32]
    print(f"\n=== size table ({res['model']}: {res['description']}), Markdown\n")
    rows = []
    for name, v in sorted(variants.items(), key=lambda kv: FAMILY_ORDER.get(kv[1]["family"], 9)):
        if not v["ok"]:
            rows.append([FAMILY_LABEL[v["family"]], name, "skipped" if v.get("skipped") else "failed", "", "", ""])
            continue
        rows.append([FAMILY_LABEL[v["family"]], name, f"{v['bytes'] / 1e6:.2f}", fmt(ratio(v["bytes"], fp["bytes"]), ".3f"),
                     f"{fmt(_acc(v, 'cos_mean'), '.5f')} ({fmt(_acc(v, 'cos_min'), '.5f')})",
                     f"{fmt(ratio(latency_median(fp, 1), latency_median(v, 1)), '.2f')}x"])
    print_markdown(["precision", "variant", "file MB", "x fp32", "cosine mean (min) vs fp32", "1-thread speedup"], rows,
                   align=["l", "l", "r", "r", "r", "r"])


# ---- goals -------------------------------------------------------------------------------------
class _Measured:
    def __init__(self, results: Sequence[dict[str, Any]]) -> None:
        self.by = {r["model"]: r for r in results if "skipped" not in r}

    def var(self, model: str, name: str) -> dict[str, Any] | None:
        return self.by[model]["variants"].get(name) if model in self.by else None

    def missing(self, model: str, name: str) -> str | None:
        """Why ``name`` on ``model`` has no figures (None: it has them); "... not run" when it was not asked for."""
        v = self.var(model, name)
        if model not in self.by:
            return f"{model} not run"
        if v is None:
            return f"{name} not run"
        if not v["ok"]:
            return f"{name} failed: {v['error']}"
        if latency_median(v) is None or _acc(v, "cos_mean") is None:
            return f"{name} not measured"
        return None

    def failed(self, goal: str, model: str, name: str) -> list[Goal] | None:
        """None when measured; else the goal failed (or nothing, when the variant was not asked for)."""
        why = self.missing(model, name)
        if why is None:
            return None
        return [] if "not run" in why else [Goal(goal, False, why)]


def _beats_incumbent(name: str, v: dict[str, Any], inc: dict[str, Any] | None) -> Goal:
    goal = f"minilm {name} beats ort-dyn-pc: cosine mean and min >= it, latency <= it (+{SPEED_TOL:.0%} noise band)"
    if inc is None or not inc["ok"] or latency_median(inc) is None:
        return Goal(goal, None if inc is None else True, "incumbent not measured" if inc is None else f"incumbent failed: {inc.get('error')}")
    a, b = latency_median(v), latency_median(inc)
    cm, cn = _acc(v, "cos_mean"), _acc(v, "cos_min")
    ok = cm >= _acc(inc, "cos_mean") and cn >= _acc(inc, "cos_min") and a <= b * (1 + SPEED_TOL)
    return Goal(goal, ok, (f"mean {cm:.5f} vs {_acc(inc, 'cos_mean'):.5f}, min {cn:.5f} vs {_acc(inc, 'cos_min'):.5f}, "
                           f"{a:.2f} vs {b:.2f} ms ({(a / b - 1) * 100:+.1f}%)"))


def _minilm_goals(m: _Measured) -> list[Goal]:
    out = []
    for name in ("onnxq-dyn+smooth", "onnxq-dyn"):
        goal = f"minilm {name}: >= 2.5x fp32 at 1 thread, cosine mean >= 0.995, min >= 0.99"
        why = m.missing("minilm", name)
        if why:
            out.append(Goal(goal, None if "not run" in why else False, why))
            continue
        v, fp = m.var("minilm", name), m.var("minilm", FP32)
        sp, cm, cn = latency_median(fp) / latency_median(v), _acc(v, "cos_mean"), _acc(v, "cos_min")
        out.append(Goal(goal, sp >= 2.5 and cm >= 0.995 and cn >= 0.99,
                        f"{sp:.2f}x, mean {cm:.5f}, min {cn:.5f}, NN agree {fmt(_acc(v, 'nn_agree'))}"))
        out.append(_beats_incumbent(name, v, m.var("minilm", "ort-dyn-pc")))
    return out


def _int4_goal(m: _Measured, model: str, block: int) -> list[Goal]:
    name, base = f"onnxq-int4-b{block}-mse", f"ort-int4-b{block}"
    goal = f"{model} {name}: file <= 0.2x fp32 and cosine mean >= {base} (RTN)"
    failed = m.failed(goal, model, name)
    if failed is not None:
        return failed
    v, fp, inc = m.var(model, name), m.var(model, FP32), m.var(model, base)
    size = v["bytes"] / fp["bytes"]
    if inc is None or not inc["ok"] or _acc(inc, "cos_mean") is None:
        # the size half is measured, the accuracy half is not: neither PASS nor FAIL
        return [Goal(goal, None if size <= 0.2 else False, f"size {size:.3f}x; RTN baseline {'not run' if inc is None else inc.get('error')}")]
    cm, cb = _acc(v, "cos_mean"), _acc(inc, "cos_mean")
    return [Goal(goal, size <= 0.2 and cm >= cb, (f"size {size:.3f}x (ort {inc['bytes'] / fp['bytes']:.3f}x), "
                                                  f"cosine {cm:.5f} vs {cb:.5f} (min {_acc(v, 'cos_min'):.5f} vs {_acc(inc, 'cos_min'):.5f})"))]


def _model_goals(m: _Measured, model: str) -> list[Goal]:
    out: list[Goal] = []
    fp = m.var(model, FP32)
    for name in ("onnxq-dyn", "onnxq-dyn+smooth"):
        goal = f"{model} {name} not slower than fp32 at 1 thread (<= +{SPEED_TOL:.0%} noise band)"
        failed = m.failed(goal, model, name)
        if failed is None:
            a, b = latency_median(m.var(model, name)), latency_median(fp)
            failed = [Goal(goal, a <= b * (1 + SPEED_TOL), f"{a:.2f} vs {b:.2f} ms ({b / a:.2f}x)")]
        out += failed
    return out


def _fp16_goal(m: _Measured, model: str) -> list[Goal]:
    goal = f"{model} onnxq-fp16: file <= 0.51x fp32, cosine mean >= 0.999"
    failed = m.failed(goal, model, "onnxq-fp16")
    if failed is not None:
        return failed
    v, fp = m.var(model, "onnxq-fp16"), m.var(model, FP32)
    size, cm = v["bytes"] / fp["bytes"], _acc(v, "cos_mean")
    return [Goal(goal, size <= 0.51 and cm >= 0.999, (f"size {size:.3f}x, cosine {cm:.6f} (min {_acc(v, 'cos_min'):.6f}), "
                                                      f"{latency_median(fp) / latency_median(v):.2f}x fp32 speed"))]


def goals(results: Sequence[dict[str, Any]]) -> list[Goal]:
    """The issue's goals, computed from the measurements: MiniLM dynamic int8, dynamic never slower
    than fp32, int4 size and accuracy on MatMul-dominated models, fp16."""
    m = _Measured(results)
    out = _minilm_goals(m)
    for model in m.by:
        out += _model_goals(m, model)
    for model in (mm for mm in m.by if SPECS[mm].matmul_dominated):
        out += _int4_goal(m, model, 32) + _int4_goal(m, model, 128)
    for model in m.by:
        out += _fp16_goal(m, model)
    return out


def print_failures(results: Sequence[dict[str, Any]]) -> None:
    rows = [(r["model"], n, v["error"]) for r in results if "variants" in r for n, v in r["variants"].items()
            if not v["ok"] and not v.get("skipped")]
    if rows:
        print("\n=== conversions that failed or gave a model onnxruntime cannot load/run")
        for model, name, err in rows:
            print(f"  {model} {name}: {err}")


# ---- main --------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_run_options(ap, list(SPECS), RUN_DEFAULTS, budget_help="timed seconds per model and thread count")
    ap.add_argument("--variants", default=",".join(VARIANT_BY_NAME), help="comma list of variants (fp32 is always included)")
    ap.add_argument("--eval", type=int, help="held-out feeds (builders; default 32/16/4) or sentences (MiniLM; default 64, quick 16)")
    ap.add_argument("--warmup", type=int, help="untimed rounds before timing (default 5, quick 1)")
    ap.add_argument("--ort-accuracy-level", type=int, default=4,
                    help="accuracy_level of onnxruntime's MatMulNBits (default 4 = what onnxq writes; onnxruntime's own default is unset/0)")
    args = ap.parse_args(argv)
    cli.resolve_run_options(ap, args, list(SPECS), RUN_DEFAULTS)
    args.variants = set(cli.comma_list(args.variants)) | {FP32}
    cli.known_only(ap, sorted(args.variants), list(VARIANT_BY_NAME), "variant(s)")
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime

    print(f"bench_dynamic: {cli.onnxruntime_version()}, models {','.join(args.models)}, "
          f"threads {args.threads}" + ("  [QUICK: smoke test, not a measurement]" if args.quick else ""), flush=True)
    results = run_all([comparison(SPECS[name], args) for name in args.models], settings(args), keep=args.keep,
                      prefix="bench_dynamic_", show=lambda res: print_model(res, args.threads))
    for res in results:
        if res["model"] == "transformer":
            print_size_markdown(res)
    print_failures(results)
    lines = goals(results)
    print_goals(lines, "=== goals" + ("  [QUICK smoke run: small models, few runs; NOT a measurement]" if args.quick else ""))
    if args.json_out:
        write_json(args.json_out, {"quick": args.quick, "threads": args.threads, "onnxruntime": onnxruntime.__version__,
                                   "ort_accuracy_level": args.ort_accuracy_level, "results": results,
                                   "goals": [g.as_dict() for g in lines]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
