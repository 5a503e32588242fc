"""Edge targets side by side, per runtime that runs here: OpenVINO CPU (onnxq ``--target openvino`` vs
NNCF), onnxruntime CPU (``--target ort-cpu``) and onnxruntime's ``.ort`` format (``--target ort-mobile``),
plus the accuracy cost of power-of-two scales.

Models: the CNN builders, PP-OCR det/cls/rec and MiniLM (:mod:`_edge_models`). For every model the same
fp32 file, calibration feeds and held-out feeds (never the calibration ones) go to every contender;
all conversions run in this process, one after the other. On every runtime:

* ``load ms``: wall time of opening the model (onnxruntime session creation; OpenVINO ``read_model`` +
  ``compile_model``), median of ``--loads`` openings interleaved across the contenders;
* ``ms``: latency at 1 thread, every contender of the runtime timed interleaved in one run (medians;
  ``x fp32`` is that runtime's fp32 median over the contender's, > 1 is faster);
* accuracy against the runtime's fp32 outputs on the held-out feeds: cosine of the worse output, top-1
  agreement along the first output's last axis where that is a class axis, the binarised text-mask
  IoU for the detector.

Runtimes:

* **OpenVINO CPU** (``INFERENCE_NUM_THREADS=1``, latency hint, f32 inference precision): ``fp32`` (the
  float ONNX model), ``onnxq-ov`` (``onnxq.convert(target="openvino")``; its tuner times candidates
  in OpenVINO), ``nncf`` (``nncf.quantize``, OpenVINO's own post-training quantizer, on the ONNX model
  with the same calibration feeds, default preset); ``int8 nodes`` counts the compute nodes
  (convolutions, fully connected) that ran an 8-bit kernel according to OpenVINO's ``PERF_COUNT``.
* **onnxruntime CPU** (1 thread): ``fp32`` and ``onnxq-cpu`` (``--target ort-cpu``) as ``.onnx``;
  ``fp32.ort`` and ``onnxq-mobile.ort``: onnxruntime's own ``.ort`` converter (``--target_platform arm``,
  fixed optimizations) on fp32 and on ``--target ort-mobile``'s output, loaded by this machine's full
  onnxruntime build (``x fp32`` of the ``.ort`` is against ``fp32.ort``). All four are timed in one
  interleaved run. The ``.ort`` table adds sizes and the operators a reduced build must include.
* **power-of-two scales**: ``--target generic`` with and without ``--power-of-two-scales``, both run as
  exact QDQ numerics (onnxruntime with fusions off: no int8-kernel quirk of this CPU mixes in), vs
  onnxruntime fp32 on the held-out feeds; ``cos loss`` = 1 - cosine, and its ratio power-of-two / plain.

    python benchmarks/bench_edge.py [--models cnn,mobilenet,ppocr-det,ppocr-cls,ppocr-rec,minilm] [--quick]
        [--parts openvino,onnxruntime,pow2] [--calib N] [--eval N] [--runs N] [--loads N] [--det-size S] [--json out.json]

Needs the openvino extra and nncf (``pip install 'onnxq[openvino]' nncf``); the PP-OCR models need
``rapidocr-onnxruntime`` (``python -m models.zoo fetch --install``), MiniLM its export
(``models/minilm.py``). A model whose file or package is missing is skipped with the reason. On a CPU
without VNNI (AVX2 only), int8 kernels may not beat fp32: the tables say what this machine measured,
not what a VNNI CPU or an ARM phone would. Timings on a shared machine are noisy (say so when quoting).

onnxq is called directly here (not through ``_harness.onnxq_api``) for what that adapter does not
wrap yet: ``convert``'s target section, ``onnxq.runtime.openvino`` sessions and the ``.ort`` converter.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _edge_models import CALIB_SEED, EVAL_SEED, MODELS, SPECS, EdgeModel, Feed
from _harness import cli, metrics, onnxq_api, timing
from _harness.report import fmt, one_line, print_heading, print_markdown, print_table, progress, write_json

PARTS = ("openvino", "onnxruntime", "pow2")
OV_CONTENDERS = ("fp32", "onnxq-ov", "nncf")
#: onnxruntime contender -> (file name in the work folder, the fp32 it is compared with for speed).
ORT_CONTENDERS = {"fp32": (None, None), "onnxq-cpu": ("ort-cpu.onnx", "fp32"), "fp32.ort": ("fp32.ort", "fp32"),
                  "onnxq-mobile.ort": ("ort-mobile.ort", "fp32.ort")}


# ---- contenders ---------------------------------------------------------------------------------
def _onnxq_convert(path: Path, out: Path, calib: list[Feed], **options: Any) -> dict[str, Any]:
    """``onnxq.convert`` saved to ``out`` (its target files beside it); wall seconds and the report."""
    from onnxq import convert

    start = time.perf_counter()
    result = convert(str(path), calib, samples=len(calib), eval_samples=min(len(calib), 4), **options)
    result.save(out)
    return {"seconds": time.perf_counter() - start, "report": result.report.to_dict(), "artifacts": dict(result.artifacts)}


def _nncf_quantize(path: Path, out: Path, calib: list[Feed]) -> dict[str, Any]:
    """``nncf.quantize`` on the ONNX model with the same calibration feeds; wall seconds."""
    import nncf
    import onnx

    start = time.perf_counter()
    quantized = nncf.quantize(onnx.load(str(path)), nncf.Dataset(calib), subset_size=len(calib))
    onnx.save(quantized, str(out))
    return {"seconds": time.perf_counter() - start}


def _openvino_session(path: Path, *, perf_counters: bool = False) -> Any:
    from onnxq.runtime.openvino import OpenVINOSession

    return OpenVINOSession(str(path), threads=1, perf_counters=perf_counters, where=path.name)


def _int8_compute_nodes(path: Path, feed: Feed) -> tuple[int, int]:
    """(compute nodes that ran an 8-bit kernel, all compute nodes) on one run, per OpenVINO's PERF_COUNT."""
    from onnxq.runtime.openvino import int8_nodes

    session = _openvino_session(path, perf_counters=True)
    session.run(None, feed)
    int8, other = int8_nodes(session)
    return len(int8), len(int8) + len(other)


def _accuracy(spec: EdgeModel, session: Any, held: Sequence[Feed], refs: Sequence[list[np.ndarray]]) -> dict[str, Any]:
    """Cosine (worse output), top-1 agreement (first output) or mask IoU of ``session`` against ``refs`` on ``held``."""
    agreement = metrics.OutputAgreement(worst=True, top1_key="top1" if spec.top1 else None)
    iou = metrics.MaskIoU() if spec.det else None
    for feed, ref in zip(held, refs):
        out = session.run(None, feed)
        agreement.update(out, ref, None)
        if iou is not None:
            iou.update(out, ref, None)
    res = agreement.result()
    if iou is not None:
        res["mask_iou"] = iou.result().get("value")
    return res


def _attempt(record: dict[str, Any], what: str, fn: Callable[[], dict[str, Any]]) -> bool:
    """``record.update(fn())``; a failure is kept as ``record["error"]`` (one contender never loses the others)."""
    try:
        record.update(fn())
    except Exception as e:  # noqa: BLE001 - one failing contender keeps the others
        record["error"] = f"{what}: {one_line(e)}"
        progress(f"  {what} failed: {one_line(e)}")
        return False
    return True


def _target_note(report: dict[str, Any]) -> str | None:
    """Failed target checks, and the most common reasons nodes were left float (why int8 nodes may be 0)."""
    validation = (report.get("target") or {}).get("validation") or {}
    failed = [c["check"] for c in validation.get("checks", []) if not c["passed"]]
    reasons: dict[str, int] = {}
    for d in report.get("float_nodes") or []:
        reason = one_line(d.get("reason", "?"), 90)
        reasons[reason] = reasons.get(reason, 0) + 1
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:2]
    parts = ([f"target checks failed: {', '.join(failed)}"] if failed else []) + [f"{n} float: {r}" for r, n in top]
    return "; ".join(parts) or None


def bench_openvino(spec: EdgeModel, root: Path, path: Path, calib: list[Feed], held: list[Feed], args: argparse.Namespace) -> dict[str, Any]:
    """fp32 vs onnxq ``--target openvino`` vs NNCF, all in OpenVINO at 1 thread."""
    files = {"fp32": path, "onnxq-ov": root / "onnxq-ov.onnx", "nncf": root / "nncf.onnx"}
    rows: dict[str, dict[str, Any]] = {name: {} for name in OV_CONTENDERS}
    progress("  converting onnxq --target openvino ...")
    if _attempt(rows["onnxq-ov"], "onnxq", lambda: _onnxq_convert(path, files["onnxq-ov"], calib, target="openvino")):
        report = rows["onnxq-ov"].pop("report")
        rows["onnxq-ov"].pop("artifacts")
        rows["onnxq-ov"]["note"] = _target_note(report)
        rows["onnxq-ov"]["quantized_nodes"] = report.get("quantized_nodes")
    progress("  converting nncf.quantize ...")
    _attempt(rows["nncf"], "nncf", lambda: _nncf_quantize(path, files["nncf"], calib))
    live = [n for n in OV_CONTENDERS if "error" not in rows[n]]
    progress(f"  opening {len(live)} models in OpenVINO {args.loads}x each (load time)")
    loads = timing.load_ms({n: partial(_openvino_session, files[n]) for n in live}, args.loads)
    sessions = {n: _openvino_session(files[n]) for n in live}
    refs = [sessions["fp32"].run(None, f) for f in held]
    for name in live:
        rows[name].update(_accuracy(spec, sessions[name], held, refs))
        rows[name]["int8_nodes"], rows[name]["compute_nodes"] = _int8_compute_nodes(files[name], held[0])
        rows[name]["bytes"] = files[name].stat().st_size
        rows[name]["load_ms"] = loads[name]
    progress(f"  timing {len(live)} OpenVINO models at 1 thread: {args.runs} interleaved runs")
    timings = onnxq_api.bench_sessions([sessions[n] for n in live], held[0], runs=args.runs, warmup=args.warmup)
    for name, t in zip(live, timings):
        rows[name]["median_ms"], rows[name]["p90_ms"] = t.median_ms, t.p90_ms
    return rows


def _fp32_ort(path: Path, out: Path) -> dict[str, Any]:
    """onnxruntime's ``.ort`` converter on the fp32 model, written to ``out``: size and a minimal build's ops."""
    from onnxq.targets.ort_mobile import convert_to_ort

    conversion = convert_to_ort(str(path), name="fp32")
    out.write_bytes(conversion.ort)
    return {"ort_bytes": len(conversion.ort), "op_list": conversion.minimal_build_ops()}


def _mobile_ort(path: Path, root: Path, calib: list[Feed], out: Path) -> dict[str, Any]:
    """``--target ort-mobile``: its ``.ort`` written to ``out``, with what its validation measured."""
    res = _onnxq_convert(path, root / "ort-mobile.onnx", calib, target="ort-mobile")
    out.write_bytes(res["artifacts"][".ort"])
    details = ((res["report"].get("target") or {}).get("validation") or {}).get("details") or {}
    return {"seconds": res["seconds"], "ort_bytes": len(res["artifacts"][".ort"]), "op_list": details.get("minimal_build_ops", []),
            "ort_vs_onnx": details.get("ort_vs_onnx_max_rel_diff"), "onnx_bytes": (root / "ort-mobile.onnx").stat().st_size,
            "note": _target_note(res["report"])}


def _ort_cpu(path: Path, out: Path, calib: list[Feed]) -> dict[str, Any]:
    res = _onnxq_convert(path, out, calib, target="ort-cpu")
    return {"seconds": res["seconds"], "quantized_nodes": res["report"].get("quantized_nodes"), "note": _target_note(res["report"])}


def bench_onnxruntime(spec: EdgeModel, root: Path, path: Path, calib: list[Feed], held: list[Feed], args: argparse.Namespace) -> dict[str, Any]:
    """fp32 vs ``--target ort-cpu`` (``.onnx``) and fp32 vs ``--target ort-mobile`` (``.ort``), all in onnxruntime at 1 thread."""
    files = {n: root / f if f else path for n, (f, _) in ORT_CONTENDERS.items()}
    rows: dict[str, dict[str, Any]] = {name: {} for name in ORT_CONTENDERS}
    progress("  converting onnxq --target ort-cpu ...")
    _attempt(rows["onnxq-cpu"], "onnxq ort-cpu", lambda: _ort_cpu(path, files["onnxq-cpu"], calib))
    progress("  .ort of fp32 ...")
    _attempt(rows["fp32.ort"], "fp32 .ort", lambda: _fp32_ort(path, files["fp32.ort"]))
    progress("  converting onnxq --target ort-mobile ...")
    _attempt(rows["onnxq-mobile.ort"], "onnxq ort-mobile", lambda: _mobile_ort(path, root, calib, files["onnxq-mobile.ort"]))
    live = [n for n in ORT_CONTENDERS if "error" not in rows[n]]
    progress(f"  opening {len(live)} models in onnxruntime {args.loads}x each (load time)")
    loads = timing.load_ms({n: partial(onnxq_api.make_session, files[n], threads=1) for n in live}, args.loads)
    sessions = {n: onnxq_api.make_session(files[n], threads=1, where=files[n].name) for n in live}
    refs = [onnxq_api.run_session(sessions["fp32"], f) for f in held]
    for name in live:
        rows[name].update(_accuracy(spec, sessions[name], held, refs), load_ms=loads[name], bytes=files[name].stat().st_size)
    progress(f"  timing {len(live)} onnxruntime models at 1 thread: {args.runs} interleaved runs")
    timings = onnxq_api.bench_sessions([sessions[n] for n in live], held[0], runs=args.runs, warmup=args.warmup)
    for name, t in zip(live, timings):
        rows[name]["median_ms"], rows[name]["p90_ms"] = t.median_ms, t.p90_ms
    return rows


def bench_power_of_two(spec: EdgeModel, root: Path, path: Path, calib: list[Feed], held: list[Feed]) -> dict[str, Any]:
    """Accuracy of ``--target generic`` with plain vs power-of-two scales (exact QDQ numerics vs fp32)."""
    from onnxq.runtime.backends import make_runtime_session

    fp32 = make_runtime_session(str(path), "onnxruntime", where="fp32")
    refs = [fp32.run(None, f) for f in held]
    out: dict[str, Any] = {}
    for key, p2 in (("plain", False), ("pow2", True)):
        progress(f"  converting onnxq --target generic{' --power-of-two-scales' if p2 else ''} ...")
        file = root / f"generic-{key}.onnx"
        res = _onnxq_convert(path, file, calib, target="generic", power_of_two_scales=p2)
        session = make_runtime_session(str(file), "onnxruntime-reference", where=file.name)
        notes = [n for n in res["report"].get("notes", []) if n.startswith("power-of-two")]
        out[key] = {**_accuracy(spec, session, held, refs), "seconds": res["seconds"], "note": notes[0] if notes else None}
    return out


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = SPECS[name]
    head = {"model": name, "description": spec.description}
    with cli.work_folder(args.keep and str(Path(args.keep) / name), f"bench_edge_{name}_") as root:
        path = spec.make(root)
        calib, held = spec.feeds(path, args.calib, CALIB_SEED, args), spec.feeds(path, args.eval, EVAL_SEED, args)
        result: dict[str, Any] = {**head, "data": {"calibration": len(calib), "held_out": len(held),
                                                   "shapes": {k: list(v.shape) for k, v in held[0].items()}}}
        if "openvino" in args.parts:
            result["openvino"] = bench_openvino(spec, root, path, calib, held, args)
        if "onnxruntime" in args.parts:
            result["onnxruntime"] = {}
            _attempt(result["onnxruntime"], "onnxruntime", lambda: bench_onnxruntime(spec, root, path, calib, held, args))
        if "pow2" in args.parts:
            result["pow2"] = {}
            _attempt(result["pow2"], "power-of-two", lambda: bench_power_of_two(spec, root, path, calib, held))
    return result


# ---- tables -------------------------------------------------------------------------------------
OV_HEADERS = ["model", "contender", "load ms", "ms", "x fp32", "int8 nodes", "cosine", "top-1 agree", "mask IoU", "conv s", "MB"]
ORT_HEADERS = ["model", "contender", "load ms", "ms", "x fp32", "cosine", "top-1 agree", "mask IoU", "conv s", "MB"]
MOBILE_HEADERS = ["model", "fp32 .ort KB", "int8 .ort KB", "x fp32", "fp32 ops", "int8 ops", ".ort vs .onnx"]
P2_HEADERS = ["model", "plain cos", "pow2 cos", "plain top-1", "pow2 top-1", "cos loss x plain"]


def _runtime_rows(res: dict[str, Any], section: str, baseline: Callable[[str], str | None], int8_nodes: bool) -> list[list[str]]:
    """One row per contender of a runtime section; ``x fp32`` against the contender's ``baseline``."""
    part = res.get(section) or {}
    width = len(OV_HEADERS if int8_nodes else ORT_HEADERS)
    if "error" in part or not part:
        return [[res["model"], "-", str(part.get("error", "not run"))[:60]] + ["-"] * (width - 3)]
    rows = []
    for name, r in part.items():
        if "error" in r:
            rows.append([res["model"], name, r["error"][:60]] + ["-"] * (width - 3))
            continue
        base = (part.get(baseline(name) or name) or {}).get("median_ms")
        speed = base / r["median_ms"] if base and r.get("median_ms") else None
        nodes = [fmt(f"{r['int8_nodes']}/{r['compute_nodes']}" if "int8_nodes" in r else None)] if int8_nodes else []
        rows.append([res["model"], name, fmt(r.get("load_ms"), ".0f"), fmt(r.get("median_ms"), ".2f"), fmt(speed, ".2f"), *nodes,
                     fmt(r.get("cosine"), ".5f"), fmt(r.get("top1"), ".4f"), fmt(r.get("mask_iou"), ".4f"), fmt(r.get("seconds"), ".1f"),
                     fmt(r.get("bytes", 0) / 1e6, ".2f")])
    return rows


def _ov_rows(res: dict[str, Any]) -> list[list[str]]:
    return _runtime_rows(res, "openvino", lambda name: "fp32", int8_nodes=True)


def _ort_rows(res: dict[str, Any]) -> list[list[str]]:
    return _runtime_rows(res, "onnxruntime", lambda name: ORT_CONTENDERS[name][1], int8_nodes=False)


def _mobile_rows(res: dict[str, Any]) -> list[list[str]]:
    o = res.get("onnxruntime") or {}
    f, q = o.get("fp32.ort") or {}, o.get("onnxq-mobile.ort") or {}
    if "ort_bytes" not in f or "ort_bytes" not in q:
        return [[res["model"], str(o.get("error") or f.get("error") or q.get("error") or "not run")[:60]] + ["-"] * (len(MOBILE_HEADERS) - 2)]
    return [[res["model"], fmt(f["ort_bytes"] / 1e3, ".1f"), fmt(q["ort_bytes"] / 1e3, ".1f"), fmt(q["ort_bytes"] / f["ort_bytes"], ".3f"),
             str(len(f["op_list"])), str(len(q["op_list"])), fmt(q.get("ort_vs_onnx"), ".1e")]]


def _p2_rows(res: dict[str, Any]) -> list[list[str]]:
    p = res.get("pow2") or {}
    if "error" in p or not p:
        return [[res["model"], p.get("error", "not run")[:60]] + ["-"] * (len(P2_HEADERS) - 2)]
    a, b = p["plain"], p["pow2"]
    loss_a, loss_b = 1 - a["cosine"], 1 - b["cosine"]
    return [[res["model"], fmt(a["cosine"], ".5f"), fmt(b["cosine"], ".5f"), fmt(a.get("top1"), ".4f"), fmt(b.get("top1"), ".4f"),
             fmt(loss_b / loss_a if loss_a > 0 else None, ".2f")]]


TABLES = (("OpenVINO CPU, 1 thread", OV_HEADERS, _ov_rows), ("onnxruntime CPU, 1 thread (.onnx and .ort)", ORT_HEADERS, _ort_rows),
          (".ort files (onnxruntime mobile)", MOBILE_HEADERS, _mobile_rows), ("power-of-two scales (exact QDQ numerics vs fp32)", P2_HEADERS, _p2_rows))


def show(res: dict[str, Any]) -> None:
    if not print_heading(res):
        return
    d = res["data"]
    print(f"  data: {d['calibration']} calibration + {d['held_out']} held-out feeds {d['shapes']}")
    for title, headers, rows_of in TABLES:
        print(f"\n  {title}")
        print_table(headers, rows_of(res), align=["l"] * 2 + ["r"] * (len(headers) - 2))
    for section in ("openvino", "onnxruntime"):
        for name, r in (res.get(section) or {}).items():
            if isinstance(r, dict) and r.get("note"):
                print(f"  * {name}: {r['note']}")
    for key in ("plain", "pow2"):
        note = ((res.get("pow2") or {}).get(key) or {}).get("note")
        if note:
            print(f"  * report ({key}): {note}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_options(ap, MODELS)
    ap.add_argument("--quick", action="store_true", help="few feeds and runs, small detector: a smoke test, not a measurement")
    ap.add_argument("--calib", type=int, help="calibration feeds (default 16, quick 4)")
    ap.add_argument("--eval", type=int, help="held-out feeds (default 16, quick 4)")
    ap.add_argument("--runs", type=int, help="interleaved timing runs per model and runtime (default 30, quick 5)")
    ap.add_argument("--loads", type=int, help="openings per model and runtime for the load time (default 5, quick 2)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up runs per model before timing")
    ap.add_argument("--det-size", type=int, help="detector page size (default 480, quick 320)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    args = ap.parse_args(argv)
    args.models = cli.comma_list(args.models)
    cli.known_only(ap, args.models, list(MODELS), "model(s)")
    args.parts = cli.comma_list(args.parts)
    cli.known_only(ap, args.parts, list(PARTS), "part(s)")
    pick = 1 if args.quick else 0
    args.calib = args.calib or (16, 4)[pick]
    args.eval = args.eval or (16, 4)[pick]
    args.runs = args.runs or (30, 5)[pick]
    args.loads = args.loads or (5, 2)[pick]
    args.det_size = args.det_size or (480, 320)[pick]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from onnxq.runtime.openvino import openvino_version

    quick = "  [QUICK: smoke test, not a measurement]" if args.quick else ""
    print(f"bench_edge: {cli.onnxruntime_version()}, OpenVINO {openvino_version()}, models {','.join(args.models)}, "
          f"{args.calib} calibration / {args.eval} held-out feeds, {args.runs} timing runs, {args.loads} loads{quick}", flush=True)
    results = cli.run_models(args.models, lambda n: bench(n, args), lambda n: {"model": n, "description": SPECS[n].description}, show)
    done = [r for r in results if "skipped" not in r]
    for title, headers, rows_of in TABLES:
        print(f"\n=== {title}, all models (Markdown)\n")
        print_markdown(headers, [row for r in done for row in rows_of(r)], align=["l"] * 2 + ["r"] * (len(headers) - 2))
    if args.json_out:
        write_json(args.json_out, {"quick": args.quick, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
