"""``onnxq convert``, ``onnxq eval`` and ``onnxq bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from .. import ir
from ..calibration.observers import OBSERVERS
from ..calibration.ranges import RangeSet
from ..errors import ConfigError
from ..progress import progress_enabled
from ..quantize import MODES, mode_pipeline, run_conversion, static_pipeline
from ..runtime.bench import bench_models
from ..runtime.evaluate import compare_models
from ._app import cli
from ._common import check_output_path, data_options, load_model, maybe_write_report, open_data
from ._output import echo_json, human_bytes, table


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


@cli.command("convert")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the converted model.")
@click.option("--data", help="Calibration data: folder of .npz/.npy/images, an .npz/.npy file, or 'synthetic[:N]'.")
@click.option("--ranges", "ranges_file", type=click.Path(dir_okay=False), help="Reuse ranges from `onnxq calibrate`.")
@click.option("--method", type=click.Choice(sorted(OBSERVERS)), default="percentile", show_default=True, help="Calibration method (percentile 99.999 measured best on real models).")
@click.option("--percentile", type=float, help="Percentile for --method percentile.")
@click.option("--format", "fmt", type=click.Choice(["qdq", "qoperator"]), default="qdq", show_default=True)
@click.option("--recipe", type=click.Path(dir_okay=False), help="TOML pipeline replacing the default steps.")
@click.option("--activation-type", type=click.Choice(["uint8", "int8", "uint16", "int16"]), default="uint8", show_default=True)
@click.option("--weight-type", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True)
@click.option("--activation-symmetric", is_flag=True, help="Symmetric activation ranges.")
@click.option("--weight-asymmetric", is_flag=True, help="Asymmetric weights (zero point != 0).")
@click.option("--per-tensor", is_flag=True, help="Per-tensor weight scales (default: per channel).")
@click.option("--reduce-range", is_flag=True, help="7-bit weights (CPUs without VNNI).")
@click.option("--op-types", multiple=True, help="Quantize only these op types (comma separated / repeatable).")
@click.option("--exclude-op-types", multiple=True, help="Keep these op types float.")
@click.option("--exclude-nodes", multiple=True, metavar="REGEX", help="Keep nodes whose name matches float (repeatable).")
@click.option("--include-nodes", multiple=True, metavar="REGEX", help="Quantize only nodes whose name matches.")
@click.option("--keep-first", type=click.IntRange(min=0), default=0, help="Keep the first N compute nodes float.")
@click.option("--keep-last", type=click.IntRange(min=0), default=0, help="Keep the last N compute nodes float.")
@click.option("--quantize-activation-matmul", is_flag=True, help="Also quantize MatMul of two activations.")
@click.option("--tune/--no-tune", default=True, show_default=True, help="Measure int8 vs float and keep float where int8 is slower.")
@click.option("--threads", type=int, default=1, show_default=True, help="Threads for latency tuning.")
@click.option("--min-agreement", type=float, default=0.98, show_default=True, help="Accuracy guard: top-1 agreement with float for class-score outputs.")
@click.option("--min-cosine", type=float, default=0.97, show_default=True, help="Accuracy guard: cosine with float for other outputs.")
@click.option("--replay", type=click.Path(dir_okay=False, exists=True), help="Re-apply the tuning decisions of a previous --report (no timing; byte-identical output).")
@click.option("--max-memory", type=float, help="MB of activations per calibration pass.")
@click.option("--mode", type=click.Choice(MODES), default="static", show_default=True, help="static int8, dynamic int8, weight-only int4/int8, fp16 or bf16.")
@click.option("--weight-bits", type=click.Choice(["4", "8"]), default="4", show_default=True, help="weight-only: bits per weight.")
@click.option("--block-size", type=click.Choice(["16", "32", "64", "128", "256"]), default="32", show_default=True, help="weight-only: block along the reduction axis.")
@click.option("--symmetric", is_flag=True, help="weight-only: symmetric blocks (no zero points).")
@click.option("--weight-format", type=click.Choice(["matmulnbits", "qdq"]), default="matmulnbits", show_default=True, help="weight-only: onnxruntime MatMulNBits or standard opset-21 blocked DequantizeLinear.")
@click.option("--include-gather", is_flag=True, help="weight-only / dynamic: also quantize Gather embedding tables (GatherBlockQuantized).")
@click.option("--dynamic-format", type=click.Choice(["fused", "standard"]), default="fused", show_default=True, help="dynamic: DynamicQuantizeMatMul or standard DynamicQuantizeLinear+MatMulInteger.")
@click.option("--smooth", type=float, default=0.5, show_default=True, help="SmoothQuant alpha for LayerNorm→MatMul outliers with --data (static and dynamic; 0 disables).")
@click.option("--keep-io-types/--no-keep-io-types", default=True, show_default=True, help="fp16/bf16: keep inputs/outputs float32.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the conversion report (JSON).")
@data_options
def convert_cmd(model: str, output: str, data: str | None, ranges_file: str | None, method: str, percentile: float | None, fmt: str, recipe: str | None, **opts: Any) -> None:
    """Quantize MODEL (static int8 by default) and write it to OUTPUT.

    Default: cleanup → calibrate (percentile) → annotate → tune latency → QDQ with per-channel int8
    weights and uint8 activations. The report lists every node left float with its reason.
    Other modes: --mode dynamic | weight-only | fp16 | bf16.
    """
    out = check_output_path(model, output)
    mode = opts["mode"]
    if mode == "static" and data is None and ranges_file is None:
        raise ConfigError("convert needs --data (calibration samples) or --ranges FILE")
    m = load_model(model)
    source = open_data(data, m, samples=opts["samples"], dims=opts["dims"], image_preprocess=opts["image_preprocess"]) if data else None
    if mode != "static":
        _convert_other_mode(m, mode, source, recipe, out, opts)
        return
    ranges = RangeSet.load_json(ranges_file) if ranges_file else None
    quant_options = {
        "activation_dtype": opts["activation_type"],
        "weight_dtype": opts["weight_type"],
        "activation_symmetric": opts["activation_symmetric"],
        "weight_symmetric": not opts["weight_asymmetric"],
        "per_channel": not opts["per_tensor"],
        "reduce_range": opts["reduce_range"],
        "op_types": _split(opts["op_types"]),
        "exclude_op_types": _split(opts["exclude_op_types"]),
        "exclude_nodes": tuple(opts["exclude_nodes"]),
        "include_nodes": tuple(opts["include_nodes"]),
        "keep_first": opts["keep_first"],
        "keep_last": opts["keep_last"],
        "quantize_activation_matmul": opts["quantize_activation_matmul"],
    }
    if recipe:
        from ..pipeline import load_pipeline_specs

        steps = load_pipeline_specs(recipe)
    else:
        steps = static_pipeline(
            method=method,
            method_options={"percentile": percentile} if percentile is not None and method == "percentile" else {},
            format=fmt,
            tune=opts["tune"],
            tune_threads=opts["threads"],
            tune_options={"min_agreement": opts["min_agreement"], "min_cosine": opts["min_cosine"], **({"replay": opts["replay"]} if opts["replay"] else {})},
            max_memory_mb=opts["max_memory"],
            quant_options=quant_options,
            min_opset=21 if opts["activation_type"] in ("int16", "uint16") else 17,
            # smoothing rewrites weights, so ranges computed on the unsmoothed model would not fit
            smooth=opts["smooth"] if opts["smooth"] > 0 and ranges is None else None,
        )
    result = run_conversion(m, steps, data=source, ranges=ranges, progress=progress_enabled())
    ir.save(result.model, out)
    rep = result.report
    rep["output"] = str(out)
    table(None, ["pass", "seconds", "modified"], [[p["pass"], f"{p['seconds']:.2f}", p["modified"]] for p in rep["passes"]])
    floats = rep.get("float_nodes", [])
    if floats:
        reasons: dict[str, int] = {}
        for d in floats:
            reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
        table("nodes left float", ["nodes", "reason"], sorted(([v, k] for k, v in reasons.items()), reverse=True))
    for note in rep.get("notes", []):
        click.echo(f"note: {note}", err=True)
    timed = [s for s in rep.get("latency", {}).get("steps", []) if "float_ms" in s and "int8_ms" in s]
    if timed:
        final = timed[-1]
        click.echo(f"latency ({rep['latency']['threads']} thread): float {final['float_ms']:.3f} ms, int8 {final['int8_ms']:.3f} ms ({final['step']})")
    click.echo(f"wrote {out}: {human_bytes(rep['bytes_before'])} → {human_bytes(out.stat().st_size)}, {rep.get('quantized_nodes', 0)} nodes quantized, {len(floats)} float, {rep['seconds']:.1f} s")
    maybe_write_report(opts["report"], rep)


def _mode_options(mode: str, opts: dict[str, Any], has_data: bool) -> dict[str, Any]:
    """Pass options of a non-static mode from CLI flags."""
    if mode == "dynamic":
        options: dict[str, Any] = {
            "per_channel": not opts["per_tensor"],
            "format": opts["dynamic_format"],
            "exclude_nodes": tuple(opts["exclude_nodes"]),
            "reduce_range": opts["reduce_range"],
            "threads": opts["threads"],
        }
        if has_data and opts["smooth"] > 0:
            options["smooth"] = opts["smooth"]
        if opts["include_gather"]:
            options["include_gather"] = True
        return options
    if mode == "weight-only":
        return {
            "bits": int(opts["weight_bits"]),
            "block_size": int(opts["block_size"]),
            "symmetric": opts["symmetric"],
            "format": opts["weight_format"],
            "include_gather": opts["include_gather"],
            "exclude_names": tuple(opts["exclude_nodes"]),
        }
    return {"keep_io_types": opts["keep_io_types"]}


def _convert_other_mode(m: ir.Model, mode: str, source: Any, recipe: str | None, out: Path, opts: dict[str, Any]) -> None:
    if recipe:
        from ..pipeline import load_pipeline_specs

        steps = [dict(s) for s in load_pipeline_specs(recipe)]
    else:
        steps = mode_pipeline(mode, **_mode_options(mode, opts, source is not None))
    result = run_conversion(m, steps, data=source, progress=progress_enabled())
    ir.save(result.model, out)
    rep = result.report
    rep["output"] = str(out)
    rep["mode"] = mode
    table(None, ["pass", "seconds", "modified"], [[p["pass"], f"{p['seconds']:.2f}", p["modified"]] for p in rep["passes"]])
    skipped: dict[str, str] = {}
    for p in rep["passes"]:
        skipped.update(p["stats"].get("skipped", {}) if isinstance(p["stats"].get("skipped"), dict) else {})
    if skipped:
        reasons: dict[str, int] = {}
        for r in skipped.values():
            reasons[r] = reasons.get(r, 0) + 1
        table("nodes left float", ["nodes", "reason"], sorted(([v, k] for k, v in reasons.items()), reverse=True))
    for note in rep.get("notes", []):
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {out}: {human_bytes(rep['bytes_before'])} → {human_bytes(out.stat().st_size)} ({out.stat().st_size / max(rep['bytes_before'], 1):.3f}x), {mode}, {rep['seconds']:.1f} s")
    maybe_write_report(opts["report"], rep)


@cli.command("eval")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Evaluation data (same forms as --data of convert).")
@click.option("--labels", type=click.Path(dir_okay=False), help="Labels (one per sample: .npy or text) for top-1 accuracy.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the metrics as JSON.")
@data_options
def eval_cmd(reference: str, candidate: str, data: str, labels: str | None, threads: int, as_json: bool, report: str | None, samples: int | None, dims: tuple[str, ...], image_preprocess: str | None) -> None:
    """Compare CANDIDATE with REFERENCE on the same inputs: cosine, SQNR, errors, top-1 agreement."""
    ref = load_model(reference)
    load_model(candidate)
    source = open_data(data, ref, samples=samples, dims=dims, image_preprocess=image_preprocess, labels=labels)
    from ..progress import track

    samples = track(source.iter_with_labels(), "evaluating", total=source.num_samples)
    result = compare_models(reference, candidate, samples, threads=threads, with_labels=True)
    data_out = {
        "reference": reference,
        "candidate": candidate,
        "reference_bytes": Path(reference).stat().st_size,
        "candidate_bytes": Path(candidate).stat().st_size,
        **result.as_dict(),
    }
    maybe_write_report(report, data_out)
    if as_json:
        echo_json(data_out)
        return
    rows = []
    for o in result.outputs:
        rows.append(
            [
                o.name,
                f"{o.cosine:.6f}",
                f"{o.cosine_min:.6f}",
                f"{o.sqnr_db:.2f}",
                f"{o.max_abs:.4g}",
                f"{o.mean_abs:.4g}",
                "-" if o.top1_agreement is None else f"{o.top1_agreement:.4f}",
                "-" if o.top1_accuracy_candidate is None else f"{o.top1_accuracy_reference:.4f} → {o.top1_accuracy_candidate:.4f}",
            ]
        )
    table(f"{result.samples} samples", ["output", "cosine", "min cosine", "SQNR dB", "max abs", "mean abs", "top-1 agree", "top-1 acc"], rows)
    click.echo(f"size: {human_bytes(data_out['reference_bytes'])} → {human_bytes(data_out['candidate_bytes'])} ({data_out['candidate_bytes'] / max(data_out['reference_bytes'], 1):.3f}x)")


@cli.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--data", help="Inputs (first sample is used); default: synthetic from the first model's signature.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--report", type=click.Path(dir_okay=False))
@data_options
def bench_cmd(models: tuple[str, ...], threads: int, runs: int, warmup: int, data: str | None, as_json: bool, report: str | None, samples: int | None, dims: tuple[str, ...], image_preprocess: str | None) -> None:
    """Time MODELS interleaved on the same inputs; report median, p90 and the ratio to the first."""
    loaded = [load_model(p) for p in models]
    source = open_data(data or "synthetic:1", loaded[0], samples=1, dims=dims, image_preprocess=image_preprocess)
    feeds = next(iter(source))
    timings = bench_models(list(models), feeds, threads=threads, runs=runs, warmup=warmup)
    base = timings[0].median_ms
    rows = []
    out = []
    for path, t in zip(models, timings):
        ratio = base / t.median_ms if t.median_ms else float("nan")
        rows.append([path, f"{t.median_ms:.3f}", f"{t.p90_ms:.3f}", f"{ratio:.2f}x", human_bytes(Path(path).stat().st_size)])
        out.append({"model": path, **t.as_dict(), "speedup_vs_first": round(ratio, 4), "bytes": Path(path).stat().st_size})
    data_out = {"threads": threads, "runs": runs, "inputs": {k: list(np.shape(v)) for k, v in feeds.items()}, "models": out}
    maybe_write_report(report, data_out)
    if as_json:
        echo_json(data_out)
    else:
        table(f"{threads} thread(s), {runs} interleaved runs", ["model", "median ms", "p90 ms", "speedup vs first", "size"], rows)
