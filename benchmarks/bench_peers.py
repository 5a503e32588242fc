"""Accuracy recovery against the peers: onnxruntime ``quantize_static``, Intel NNCF and AMD Quark, side by side.

Every contender gets the same fp32 file, the same calibration feeds (seeded, batch 1) and is measured
on the same held-out feeds (another seed, never the calibration ones) against that model's own fp32
output: top-1 agreement, SQNR (dB) and cosine of the logits, and latency at 1 thread in
onnxruntime's CPU EP (all contenders of a model timed interleaved on one batch-1 input; ``x fp32`` =
fp32's median / the contender's, > 1 is faster). Random weights: agreement, not accuracy.

Parts (``--models``):

  mobilenetv2  part 1, **per-channel** weights: ``build("mobilenetv2")`` (width 0.5, 128x128, 100
               classes) with trained-like BN statistics (bench_compensation's
               ``trained_like_batchnorm``) and its classifier bias centred on seeded data (a random
               head otherwise picks the same class for every input, and top-1 would say nothing).
               Hard on purpose: after 17 random blocks and the global pool, the input-dependent part of
               the logits is small, so a systematic (same for every input) int8 error flips top-1 --
               what bias correction exists to remove
  mobilenet    part 2, **per-tensor** weights: the MobileNetV3-like builder as bench_compensation builds it
               (96x96, or 224x224 with ``--full-size``)
  separable    part 2, per-tensor: bench_compensation's depthwise-separable CNN with trained-like BN
               statistics (64x64, or 128x128 with ``--full-size``)

Contenders (the ``config`` column of each table says the same):

  ort-<method>   ``quantize_static`` as ``_harness.incumbent`` runs it (QDQ, U8 activations, S8 weights,
                 ``quant_pre_process``) with calibration MinMax, Percentile 99.999 or Entropy; the best
                 of the three by SQNR is the incumbent's "best calibration method" (Entropy at its
                 defaults, 128 histogram bins = 128 quantized bins, returned the min-max ranges on
                 these models: its rows equal MinMax's)
  nncf           ``nncf.quantize`` on the ONNX model after onnxruntime's ``quant_pre_process`` (which folds
                 BN: NNCF leaves it in place, and onnxruntime then cannot fuse Conv -> BN into int8 kernels),
                 fast bias correction on (its default), preset ``performance`` (its default: symmetric
                 activations) and ``mixed`` (asymmetric ones)
  quark-cle      Quark ``ModelQuantizer``: U8 asymmetric activations (Percentile, Quark's default
                 method), S8 symmetric weights (MinMax), float scales, QDQ, with CLE; ``quark-cle-ar``
                 adds AdaRound (MinMSE activations gave -7 dB on the separable CNN: not used)
  onnxq-*        onnxq's ``fast`` (plain min-max) and ``accurate`` recipes; ``accurate-noguard`` is
                 ``accurate`` without tune-latency (its guard may keep a model float when int8 is slower)

Goals: part 1, onnxq ``accurate`` top-1 agreement >= the best peer's at >= 2x fp32 speed; part 2,
onnxq ``accurate`` SQNR >= the best peer's + 3 dB.

    python benchmarks/bench_peers.py [--models mobilenetv2,mobilenet,separable] [--calib 32] [--eval 64]
        [--no-adaround] [--quark-site DIR] [--json out.json]

AMD Quark (``pip install amd-quark``) pins an older onnx than this project; ``--quark-site DIR``
(default: ``$ONNXQ_QUARK_SITE``) names a ``pip install --no-deps --target DIR amd-quark`` folder put
on the Quark child's ``PYTHONPATH`` only. A tool that is not installed, or fails, is a row saying why.
On a CPU without VNNI (AVX2 only) int8 convolutions are often no faster than fp32.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _harness import cli, metrics
from _harness import onnxq_api as oq
from _harness.comparison import Settings, side_by_side
from _harness.data import save_feeds
from _harness.goals import Goal, check, print_goals
from _harness.isolate import run_isolated
from _harness.report import Column, one_line, print_records, progress, write_json
from _harness.timing import RunPlan, TimingSpec
from bench_compensation import _model as compensation_model
from bench_compensation import variants

MODELS = ("mobilenetv2", "mobilenet", "separable")
REFERENCE = "fp32"
ORT_METHODS = ("MinMax", "Percentile", "Entropy")
GOAL_SPEEDUP, GOAL_DB = 2.0, 3.0
CALIB_SEED, EVAL_SEED, TIMED_SEED, HEAD_SEED = 1001, 2002, 3003, 4004
COLUMNS = [Column("variant", "contender"), Column("top1", "top-1 agree", "%"), Column("sqnr_db", "SQNR dB", ".2f"),
           Column("cosine", "cosine", ".5f"), Column("latency_ms", "ms (1 thr)", ".3f"), Column("speedup", "x fp32", "x"),
           Column("int8", "int8 conv/gemm", "s"), Column("convert_s", "convert s", ".1f"), Column("config", "config")]
Feed = dict[str, np.ndarray]


# ---- peers, run in isolated children ------------------------------------------------------------
def _nncf(source: str, output: str, calib: list[Feed], per_channel: bool, preset: str) -> list[str]:
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # NNCF leaves BatchNormalization in the graph: Conv -> BN between Q/DQ is not fused into QLinearConv
    # by onnxruntime (measured 3-4x slower than fp32). Fold it first, as the ort contenders' pre-processing does.
    folded = str(Path(output).with_suffix(".pre.onnx"))
    quant_pre_process(source, folded)
    advanced = AdvancedQuantizationParameters(weights_quantization_params=QuantizationParameters(per_channel=per_channel))
    quantized = nncf.quantize(onnx.load(folded), nncf.Dataset(calib), preset=getattr(nncf.QuantizationPreset, preset.upper()),
                              subset_size=len(calib), fast_bias_correction=True, advanced_parameters=advanced)
    onnx.save(quantized, output)
    return [f"nncf {nncf.__version__}"]


def _quark(source: str, output: str, calib: str, per_channel: bool, adaround: dict[str, Any] | None) -> list[str]:
    import quark
    from _harness.data import NpzReader
    from quark.onnx import ModelQuantizer
    from quark.onnx.quantization.config.algorithm import AdaRoundConfig, CLEConfig
    from quark.onnx.quantization.config.config import QConfig
    from quark.onnx.quantization.config.spec import CalibMethod, Int8Spec, QLayerConfig, QuantGranularity, UInt8Spec

    weight = Int8Spec(calibration_method=CalibMethod.MinMax,
                      quant_granularity=QuantGranularity.Channel if per_channel else QuantGranularity.Tensor)
    algos: list[Any] = [CLEConfig()]
    if adaround is not None:
        algos.append(AdaRoundConfig(**adaround))
    config = QConfig(global_config=QLayerConfig(activation=UInt8Spec(calibration_method=CalibMethod.Percentile), weight=weight),
                     algo_config=algos)
    ModelQuantizer(config).quantize_model(source, output, NpzReader(calib))
    return [f"amd-quark {getattr(quark, '__version__', '?')}"]


def peer_job(tool: str, source: str, output: str, calib: str, per_channel: bool, options: dict[str, Any]) -> dict[str, Any]:
    """Isolated-child entry point: one NNCF or Quark conversion, timed from the call to the written file."""
    from _harness.data import load_feeds

    os.chdir(Path(output).parent)  # both tools write scratch files into the working directory
    start = time.perf_counter()
    if tool == "nncf":
        notes = _nncf(source, output, load_feeds(calib), per_channel, options["preset"])
    elif tool == "quark":
        notes = _quark(source, output, calib, per_channel, options.get("adaround"))
    else:
        raise ValueError(f"unknown peer {tool!r}")
    return {"seconds": time.perf_counter() - start, "notes": notes}


def _isolated(target: str, job: dict[str, Any], output: Path, cfg: argparse.Namespace, env: dict[str, str] | None = None) -> dict[str, Any]:
    r = run_isolated(target, job, mem_cap_gb=cfg.mem_cap_gb, timeout_s=cfg.timeout, env=env)
    record = dict(r.value) if r.ok and isinstance(r.value, dict) else {}
    record["wall_s"] = r.wall_s
    if not r.ok:
        record["error"] = one_line(r.describe().removeprefix("failed: "), 300)
    elif not output.is_file():
        record["error"] = "converter wrote no file"
    return record


# ---- contenders ---------------------------------------------------------------------------------
def _peer_specs(per_channel: bool, cfg: argparse.Namespace) -> list[tuple[str, str, dict[str, Any], str]]:
    """``(name, target, job options, config text)`` of every peer."""
    gran = "per-channel" if per_channel else "per-tensor"
    specs = [(f"ort-{m.lower()}", "ort", {"method": m}, f"quantize_static QDQ U8/S8 {gran}, calib {m}" + (" 99.999" if m == "Percentile" else ""))
             for m in ORT_METHODS]
    for preset in ("performance", "mixed"):
        specs.append((f"nncf-{preset}", "nncf", {"preset": preset}, f"quant_pre_process + nncf.quantize {gran}, preset {preset}, fast BC"))
    specs.append(("quark-cle", "quark", {}, f"Quark QDQ U8 Percentile act / S8 MinMax weights {gran}, CLE"))
    if cfg.adaround:
        ar = {"num_iterations": cfg.adaround_iterations, "batch_size": 1, "num_batches": cfg.calib, "learning_rate": 0.1}
        specs.append(("quark-cle-ar", "quark", {"adaround": ar}, f"as quark-cle + AdaRound {cfg.adaround_iterations} it x {cfg.calib} batches"))
    return specs


def _peer(name: str, kind: str, options: dict[str, Any], per_channel: bool, source: Path, calib: Path, cfg: argparse.Namespace) -> dict[str, Any]:
    output = source.parent / f"{name}.onnx"
    if kind == "ort":
        config = {"per_channel": per_channel}
        job = {"converter": "ort-static", "source": str(source), "output": str(output), "options": {"method": options["method"], "config": config},
               "calib": str(calib)}
        return {**_isolated("_harness.convert:run_job", job, output, cfg), "path": output}
    env = None
    if kind == "quark":
        if not cfg.quark_site and not _importable("quark"):
            return {"error": "amd-quark is not installed (pip install amd-quark, or --quark-site DIR)"}
        env = {"PYTHONPATH": cfg.quark_site} if cfg.quark_site else None
    elif not _importable("nncf"):
        return {"error": "nncf is not installed (pip install nncf)"}
    job = {"tool": kind, "source": str(source), "output": str(output), "calib": str(calib), "per_channel": per_channel, "options": options}
    return {**_isolated("bench_peers:peer_job", job, output, cfg, env), "path": output}


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _onnxq_pipelines(per_channel: bool) -> dict[str, tuple[list[dict[str, Any]], str]]:
    if per_channel:
        from bench_compensation import _recipe

        accurate = _recipe("accurate", {})
        return {"onnxq-fast": (_recipe("fast", {}), "onnxq --recipe fast (min-max), per-channel"),
                "onnxq-accurate": (accurate, "onnxq --recipe accurate, per-channel"),
                "onnxq-accurate-noguard": ([s for s in accurate if s["pass"] != "tune-latency"], "accurate without tune-latency, per-channel")}
    steps = variants()
    return {"onnxq-minmax": (steps["min-max"], "onnxq --recipe fast (plain min-max), per-tensor"),
            "onnxq-accurate": (steps["accurate"], "onnxq --recipe accurate, per_channel=false"),
            "onnxq-accurate-noguard": (steps["accurate-noguard"], "accurate without tune-latency, per_channel=false")}


def _int8_count(model: Any) -> str:
    """``quantized/all`` Conv, Gemm and MatMul nodes (weight fed by a DequantizeLinear, or a QLinear/Integer op)."""
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else onnx.load_from_string(oq.proto_bytes(model))
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    compute = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")]
    done = sum(1 for n in compute if n.op_type not in ("Conv", "Gemm", "MatMul") or producers.get(n.input[1]) == "DequantizeLinear")
    return f"{done}/{len(compute)}"


def _contenders(base: Any, source: Path, calib_feeds: list[Feed], per_channel: bool, cfg: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """fp32, the peers (isolated children), then onnxq's recipes (in process); a failure is a row with ``error``."""
    yield REFERENCE, {"variant": REFERENCE, "config": "onnxruntime fp32", "int8": _int8_count(source)}, source
    calib = source.parent / "calib"
    save_feeds(calib_feeds, calib)
    for name, kind, options, text in _peer_specs(per_channel, cfg):
        progress(f"  converting {name} ...")
        record = _peer(name, kind, options, per_channel, source, calib, cfg)
        row = {"variant": name, "config": text, "convert_s": record.get("seconds"), "notes": record.get("notes")}
        if record.get("error"):
            row["error"] = record["error"]
            yield name, row, None
            continue
        row["int8"] = _int8_count(record["path"])
        yield name, row, record["path"]
    for name, (steps, text) in _onnxq_pipelines(per_channel).items():
        progress(f"  converting {name} ...")
        row = {"variant": name, "config": text}
        start = time.perf_counter()
        try:
            model, _report = oq.run_conversion(base, steps, calib_feeds)
        except Exception as e:  # noqa: BLE001 - a failing conversion is a result
            row["error"] = one_line(f"{type(e).__name__}: {e}", 300)
            yield name, row, None
            continue
        row.update(convert_s=time.perf_counter() - start, int8=_int8_count(model))
        yield name, row, model


# ---- models -------------------------------------------------------------------------------------
def _feeds(n: int, seed: int, size: int, batch: int) -> list[Feed]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((batch, 3, size, size)).astype(np.float32)} for _ in range(n)]


def centre_head(proto: Any, size: int) -> Any:
    """The classifier Gemm's bias minus ``W @ mean(features)`` over seeded inputs: logits centred per
    class, so the top class changes from input to input as a trained classifier's does."""
    import onnx
    from onnx import numpy_helper

    gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(gemm.input[0]))
    features = oq.run_session(oq.make_session(probe), _feeds(1, HEAD_SEED, size, 16)[0], [gemm.input[0]])[0]
    inits = {t.name: t for t in proto.graph.initializer}
    weight, bias = numpy_helper.to_array(inits[gemm.input[1]]), numpy_helper.to_array(inits[gemm.input[2]])
    centred = (bias - weight @ features.mean(0)).astype(np.float32)
    inits[gemm.input[2]].CopyFrom(numpy_helper.from_array(centred, gemm.input[2]))
    return proto


def _model(name: str, size: int, full_size: bool) -> tuple[Any, int]:
    if name != "mobilenetv2":
        return compensation_model(name, quick=not full_size)
    from models import build
    from tests.passes.quantization._separable_model import trained_like_batchnorm

    proto = trained_like_batchnorm(build("mobilenetv2", input_size=size, num_classes=100), size=size, batch=8)
    return centre_head(proto, size), size


def bench(name: str, cfg: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    import onnx

    per_channel = name == "mobilenetv2"
    proto, size = _model(name, cfg.size, cfg.full_size)
    workdir = root / name
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "fp32.onnx"
    onnx.save(proto, str(source))
    calib = _feeds(cfg.calib, CALIB_SEED, size, 1)
    held_out = _feeds(max(1, cfg.eval // 8), EVAL_SEED, size, 8)
    timing = TimingSpec([1], RunPlan(cfg.budget, 5, 400, rule="share"), warmup=3, reuse_sessions=True)
    res = side_by_side(_contenders(oq.load(proto), source, calib, per_channel, cfg), reference=REFERENCE, feeds=held_out,
                       metric=lambda: metrics.OutputAgreement(worst=False, top1_key="top1"),
                       settings=Settings(None, None, eval_threads=1, timing=timing), timed_feed=_feeds(1, TIMED_SEED, size, 1)[0],
                       where=f"[{name}] ")
    rows = []
    for record in res["variants"].values():
        row = {k: v for k, v in record.items() if k not in ("ok", "accuracy", "latency")}
        row.update(record.get("accuracy") or {})
        row["latency_ms"] = ((record.get("latency") or {}).get("1") or {}).get("median_ms")
        rows.append(row)
    base_ms = rows[0].get("latency_ms")
    for r in rows:
        if base_ms and r.get("latency_ms"):
            r["speedup"] = base_ms / r["latency_ms"]
    return rows


# ---- goals and main -----------------------------------------------------------------------------
def _best(rows: Sequence[dict[str, Any]], prefix: tuple[str, ...], key: str) -> dict[str, Any]:
    found = [r for r in rows if r["variant"].startswith(prefix) and r.get(key) is not None and not r.get("error")]
    return max(found, key=lambda r: r[key]) if found else {}


def goals(results: dict[str, list[dict[str, Any]]]) -> list[Goal]:
    """Part 1: accurate's top-1 >= the best peer's at >= 2x fp32; part 2: accurate's SQNR >= best peer + 3 dB."""
    out = []
    peers = ("ort-", "nncf", "quark")
    for name, rows in results.items():
        variants = ("onnxq-accurate", "onnxq-accurate-noguard")
        mines = [next((r for r in rows if r["variant"] == v and not r.get("error")), {}) for v in variants]
        if name == "mobilenetv2":
            peer = _best(rows, peers, "top1")
            for variant, mine in zip(variants, mines):
                gap = mine.get("top1", 0) - peer["top1"] if mine and peer else None
                out.append(check(f"{name}: {variant} top-1 >= best peer ({peer.get('variant')}, {peer.get('top1', 0):.1%})", gap,
                                 lambda g: g >= 0, "{:+.1%}" + f" ({mine.get('int8')} int8)"))
                out.append(check(f"{name}: {variant} >= {GOAL_SPEEDUP:g}x fp32 at 1 thread", mine.get("speedup"), lambda s: s >= GOAL_SPEEDUP, "{:.2f}x"))
        else:
            peer = _best(rows, peers, "sqnr_db")
            # Checked on accurate-noguard too: where the guard keeps the model float, accurate passes without int8.
            for variant, mine in zip(variants, mines):
                gap = mine["sqnr_db"] - peer["sqnr_db"] if mine.get("sqnr_db") is not None and peer else None
                out.append(check(f"{name}: {variant} SQNR >= best peer ({peer.get('variant')}, {peer.get('sqnr_db', 0):.2f} dB) + {GOAL_DB:g} dB",
                                 gap, lambda g: g >= GOAL_DB, "{:+.2f} dB" + f" ({mine.get('int8')} int8)"))
    return out


def _versions(quark_site: str | None) -> str:
    from importlib.metadata import distributions

    parts = [cli.onnxruntime_version()]
    for package, path in (("nncf", None), ("amd-quark", quark_site)):
        found = [d.version for d in (distributions(path=[path]) if path else distributions()) if d.metadata["Name"] == package]
        parts.append(f"{package} {found[0]}" if found else f"{package} not installed")
    return ", ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_common_options(ap, MODELS)
    ap.add_argument("--size", type=int, default=128, help="input size of mobilenetv2 (a multiple of 32)")
    ap.add_argument("--full-size", action="store_true", help="part 2 at bench_compensation's full sizes (224 / 128; default its quick 96 / 64)")
    ap.add_argument("--calib", type=int, default=32, help="calibration samples (batch 1)")
    ap.add_argument("--eval", type=int, default=64, help="held-out samples (batches of 8)")
    ap.add_argument("--budget", type=float, default=4.0, help="seconds of interleaved timing per model (all contenders)")
    ap.add_argument("--no-adaround", dest="adaround", action="store_false", help="skip Quark's AdaRound contender")
    ap.add_argument("--adaround-iterations", type=int, default=100, help="AdaRound iterations per layer in Quark")
    ap.add_argument("--quark-site", default=os.environ.get("ONNXQ_QUARK_SITE"), help="folder holding amd-quark (see the docstring)")
    ap.add_argument("--mem-cap-gb", type=float, default=8.0, help="address-space cap of each peer's conversion child")
    ap.add_argument("--timeout", type=float, default=480.0, help="seconds before a peer's conversion is killed")
    args = ap.parse_args(argv)
    args.models = cli.comma_list(args.models)
    cli.known_only(ap, args.models, MODELS, "model(s)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    print(f"Peers side by side: {_versions(cfg.quark_site)}. Agreement with each model's own fp32 output; QDQ models on onnxruntime CPU.")
    results: dict[str, list[dict[str, Any]]] = {}
    with cli.work_folder(cfg.keep, "bench-peers-") as root:
        for name in cfg.models:
            print(f"\n--- {name}", flush=True)
            results[name] = bench(name, cfg, root)
            weights = "per-channel" if name == "mobilenetv2" else "per-tensor"
            print_records(f"{name}: {weights} weights, {cfg.calib} calibration / {cfg.eval} held-out samples", COLUMNS, results[name])
    found = goals(results)
    print_goals(found)
    if cfg.json_out:
        write_json(cfg.json_out, {"versions": _versions(cfg.quark_site), "results": results, "goals": [g.as_dict() for g in found]})
    return 0 if all(g.ok for g in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
