"""``onnxq convert``: every flag is one field of :class:`~onnxq.api.ConversionOptions`.

The command holds no conversion logic: it maps flags onto options (by name: ``--activation-dtype``
is ``activation_dtype``), calls :func:`onnxq.api.convert`, writes the model and the report, and
prints what the report says.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..api import MODES, ConversionOptions, ConversionReport, convert
from ..calibration.observers import OBSERVERS
from ..data import parse_dims
from ..debug import require_matplotlib
from ..errors import ConfigError
from ..progress import progress_enabled
from ..targets import target_names
from ._app import cli
from ._common import Input, Output, RunOutputs, data_options, maybe_write_report
from ._output import echo, human_bytes, table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["convert_cmd", "parse_pass_options", "CLI_ONLY", "TARGET_NOT_MET"]

#: Exit code when ``--accuracy-target`` / ``--max-latency-ms`` / ``--min-speedup`` cannot be met:
#: the best plan found is still written (with its report), but the run did not do what was asked.
TARGET_NOT_MET = 3

#: ``convert`` parameters that are not conversion options: the model, the data and where results go
#: (the API takes the first as arguments of :func:`onnxq.api.convert` and writes the others with
#: ``ConversionResult.save`` / ``ConversionReport.to_dict`` / ``ConversionResult.write_html``).
CLI_ONLY = ("model", "output", "data", "ranges", "report", "report_html", "dims", "image_preprocess")


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


def parse_pass_options(items: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``("quantize-dynamic.min_weight_elements=0",)`` → ``{"quantize-dynamic": {"min_weight_elements": 0}}``.

    Values are read as TOML (numbers, true/false, ["lists"]); anything else is a string.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        name, dot, option = key.strip().rpartition(".")
        if not sep or not dot or not name or not option:
            raise ConfigError(f"--pass-option expects PASS.OPTION=VALUE, got '{item}'")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out.setdefault(name, {})[option] = value
    return out


def _int_choice(choices: tuple[int, ...]) -> click.Choice:
    return click.Choice([str(c) for c in choices])


def _choice_option(flag: str, choices: list[str], default: str, help: str) -> Any:
    """``--flag`` taking one of ``choices`` (default shown in --help)."""
    return click.option(flag, type=click.Choice(choices), default=default, show_default=True, help=help)


@cli.command("convert")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the converted model.")
@click.option("--data", help="Calibration data: folder of .npz/.npy/images, an .npz/.npy file, or 'synthetic[:N]'.")
@click.option("--ranges", type=click.Path(dir_okay=False), help="Reuse ranges from `onnxq calibrate` (static mode).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the conversion report (JSON, with schema_version).")
@click.option(
    "--report-html",
    type=click.Path(dir_okay=False),
    help="Write the report as an HTML page; with --data, plus the result's layer-wise error (needs onnxq[report]).",
)
@click.option("--mode", type=click.Choice(MODES), default="static", show_default=True, help="static int8, dynamic int8, weight-only int4/int8, fp16 or bf16.")
@click.option("--recipe", type=click.Path(dir_okay=False), help="TOML pipeline replacing the mode's default passes.")
@click.option("--pass-option", multiple=True, metavar="PASS.OPTION=VALUE", help="Set an option of one pass of the pipeline (repeatable).")
@click.option(
    "--method",
    type=click.Choice(sorted(OBSERVERS)),
    default="percentile",
    show_default=True,
    help="Calibration method (percentile 99.999 measured best on real models).",
)
@click.option("--percentile", type=float, help="Percentile for --method percentile.")
@click.option("--max-memory", "max_memory_mb", type=float, help="MB of activations per calibration pass (static; weight-only gptq/awq).")
@click.option(
    "--smooth", type=float, default=0.5, show_default=True, help="SmoothQuant alpha for LayerNorm→MatMul outliers with --data (static and dynamic; 0 disables)."
)
@click.option("--format", "format", type=click.Choice(["qdq", "qoperator"]), default="qdq", show_default=True, help="QDQ pairs or QLinear (QOperator) ops.")
@click.option(
    "--activation-dtype", "--activation-type", "activation_dtype", type=click.Choice(["uint8", "int8", "uint16", "int16"]), default="uint8", show_default=True
)
@click.option("--weight-dtype", "--weight-type", "weight_dtype", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True)
@click.option("--activation-symmetric", is_flag=True, help="Symmetric activation ranges.")
@click.option("--weight-symmetric/--weight-asymmetric", default=True, show_default=True, help="Symmetric weights (zero point 0).")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Per-channel weight scales.")
@click.option(
    "--reduce-range/--no-reduce-range",
    default=None,
    help="7-bit weights on every node (default: where onnxruntime's u8·s8 kernel saturates on this CPU, per node, measured).",
)
@click.option("--reduce-range-nodes", multiple=True, metavar="REGEX", help="7-bit weights for nodes whose name matches (repeatable).")
@click.option("--op-types", multiple=True, help="Quantize only these op types (comma separated / repeatable).")
@click.option("--exclude-op-types", multiple=True, help="Keep these op types float.")
@click.option("--exclude-nodes", multiple=True, metavar="REGEX", help="Keep nodes whose name matches float (repeatable).")
@click.option("--include-nodes", multiple=True, metavar="REGEX", help="Quantize only nodes whose name matches.")
@click.option("--keep-first", type=click.IntRange(min=0), default=0, help="Keep the first N compute nodes float.")
@click.option("--keep-last", type=click.IntRange(min=0), default=0, help="Keep the last N compute nodes float.")
@click.option("--quantize-activation-matmul", is_flag=True, help="Also quantize MatMul of two activations.")
@click.option("--concat-range-ratio", type=float, default=10.0, show_default=True, help="A Concat whose input ranges differ by more than this stays float.")
@click.option("--tune/--no-tune", default=True, show_default=True, help="Measure int8 vs float and keep float where int8 is slower or costs accuracy.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True, help="Threads for latency tuning / the dynamic latency guard.")
@click.option(
    "--min-agreement", type=float, default=0.98, show_default=True, help="Accuracy guard: share of decisions (top-1, whole sequences, ...) agreeing with float."
)
@click.option("--min-cosine", type=float, default=0.97, show_default=True, help="Accuracy guard: cosine with float for other outputs.")
@click.option(
    "--metric",
    "accuracy_metric",
    multiple=True,
    metavar="SPEC[>=T][@OUTPUT]",
    help="Accuracy guard: the metric guarding OUTPUT (all outputs without @), e.g. 'worst_slice_sqnr:axis=1>=25@detections', "
    "'mymodule:f1>=0.9' (repeatable; default: chosen per output from its shape and producer).",
)
@click.option("--max-accuracy-trials", type=click.IntRange(min=1), default=60, show_default=True, help="Accuracy guard: candidate plans it may evaluate.")
@click.option("--eval-samples", type=click.IntRange(min=1), default=8, show_default=True, help="Accuracy guard: calibration samples it evaluates on.")
@click.option(
    "--replay", type=click.Path(dir_okay=False, exists=True), help="Re-apply the tuning decisions of a previous --report (no timing; byte-identical output)."
)
@click.option("--weight-bits", type=_int_choice((4, 8)), default="4", show_default=True, help="weight-only: bits per weight.")
@click.option("--block-size", type=_int_choice((16, 32, 64, 128, 256)), default="32", show_default=True, help="weight-only: block along the reduction axis.")
@click.option("--symmetric", is_flag=True, help="weight-only: symmetric blocks (no zero points).")
@_choice_option("--weight-format", ["matmulnbits", "qdq"], "matmulnbits", "weight-only: onnxruntime MatMulNBits or standard opset-21 blocked DequantizeLinear.")
@_choice_option("--scale-search", ["mse", "none"], "mse", "weight-only: search each block's clipping range for least error (mse) or round to nearest (none).")
@click.option("--include-gather", is_flag=True, help="weight-only / dynamic: also quantize Gather embedding tables (GatherBlockQuantized).")
@_choice_option(
    "--algorithm", ["rtn", "gptq", "awq"], "rtn", "weight-only: round to nearest, or with --data GPTQ error compensation / AWQ activation-aware scaling."
)
@_choice_option("--dynamic-format", ["fused", "standard"], "fused", "dynamic: DynamicQuantizeMatMul or standard DynamicQuantizeLinear+MatMulInteger.")
@click.option("--keep-io-types/--no-keep-io-types", default=True, show_default=True, help="fp16/bf16: keep inputs/outputs float32.")
@click.option(
    "--target",
    type=click.Choice(list(target_names())),
    help="Deployment target: its profile sets format, types, per-channel, which ops get Q/DQ and bias; the result is validated on its runtime and linted.",
)
@click.option("--strict", is_flag=True, help="With --target: fail when the target cannot run an op, its validation fails or the linter finds errors.")
@click.option("--power-of-two-scales", is_flag=True, help="Fixed-point scales 2^-k (integer-only NPUs/DSPs); the report gives the accuracy cost.")
@click.option("--int32-bias/--float-bias", default=True, show_default=True, help="Biases as int32 (s_x·s_w) or float (TensorRT).")
@click.option(
    "--accuracy-target",
    multiple=True,
    metavar="METRIC>=T[@OUTPUT]",
    help="Mixed precision: choose int8 / dynamic int8 / fp32 per unit for the lowest measured latency meeting this target, "
    "e.g. 'cosine>=0.999', 'agreement>=0.99', 'mymodule:f1>=0.9' (repeatable; exit code 3 when it cannot be met).",
)
@click.option("--max-latency-ms", type=float, help="Mixed precision: the chosen plan's median latency bound (ms, --threads threads).")
@click.option("--min-speedup", type=float, help="Mixed precision: the chosen plan must be at least this much faster than fp32.")
@data_options
def convert_cmd(
    model: str,
    output: str,
    data: str | None,
    ranges: str | None,
    report: str | None,
    report_html: str | None,
    dims: tuple[str, ...],
    image_preprocess: str | None,
    pass_option: tuple[str, ...],
    **values: Any,
) -> None:
    """Convert MODEL (static int8 by default) and write it to OUTPUT.

    Default: cleanup → calibrate (percentile) → annotate → tune latency → QDQ with per-channel int8
    weights and uint8 activations. The report lists every node left float with its reason.
    Other modes: --mode dynamic | weight-only | fp16 | bf16. With --accuracy-target (or
    --max-latency-ms / --min-speedup) a mixed-precision search replaces the latency tuner; when
    its target cannot be met the best plan found is written and the exit code is 3.
    """
    options = ConversionOptions.from_values({**_given(values), "pass_options": parse_pass_options(pass_option)})
    reads = [Input("input model", model, model=True), Input("--data", data, data=True), Input("--ranges", ranges)]
    reads += [Input("--recipe", options.recipe), Input("--replay", options.replay)]
    if report_html:
        require_matplotlib()  # before the conversion runs, not after
    extra = _artifact_outputs(options, output)
    outputs = [Output("-o", output, model=True), Output("--report", report), Output("--report-html", report_html)] + [Output(r, p) for r, p in extra.values()]
    with RunOutputs(outputs, reads) as outs:
        result = convert(model, data, ranges=ranges, options=options, dims=parse_dims(dims), image_preprocess=image_preprocess, progress=progress_enabled())
        outs.write("-o", lambda path: result.save(path, artifacts=False))
        for suffix, (role, _) in extra.items():
            if suffix in result.artifacts:
                outs.write(role, _bytes_writer(result.artifacts[suffix]))
        result.report.output = output
        maybe_write_report(outs, "--report", report, result.report.to_dict())
        if report_html:
            sizes, bars = parse_dims(dims), progress_enabled()
            outs.write("--report-html", lambda path: result.write_html(path, model, data, dims=sizes, image_preprocess=image_preprocess, progress=bars))
    _print_summary(result.report, Path(output))
    mixed = result.report.mixed_precision
    if mixed is not None and not mixed.get("met", True):
        echo(f"target not met: {mixed['unmet']}", err=True)
        click.get_current_context().exit(TARGET_NOT_MET)


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The options the user gave on the command line (or through the environment), as API values.

    Flags left at their default are not passed: the API has the same defaults (a test checks), and a
    target profile may set only what the user did not (an explicit ``--activation-dtype uint8`` with
    ``--target tensorrt`` is refused, not replaced).
    """
    ctx = click.get_current_context()
    given = {name: value for name, value in values.items() if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
    for name in ("op_types", "exclude_op_types"):
        if name in given:
            given[name] = _split(given[name])
    for name in ("weight_bits", "block_size"):
        if name in given:
            given[name] = int(given[name])
    return given


def _bytes_writer(blob: bytes) -> Callable[[Path], int]:
    return lambda path: path.write_bytes(blob)


def _artifact_outputs(options: ConversionOptions, output: str) -> dict[str, tuple[str, Path]]:
    """The files the target's validation writes beside ``-o`` (``.ort`` ...), as ``{suffix: (role, path)}``."""
    from ..api.targets import artifact_paths, conversion_target

    profile = conversion_target(options)
    if profile is None:
        return {}
    return {suffix: (f"--target {profile.name} ({suffix})", path) for suffix, path in artifact_paths(output, profile.artifacts).items()}


def _print_target(target: dict[str, Any]) -> None:
    """One line per check of the target section, then the linter's counts."""
    validation = target.get("validation") or {}
    for check in validation.get("checks", []):
        echo(f"target {target['name']}: {'ok' if check['passed'] else 'FAILED'} {check['check']}: {check['detail']}")
    for op, why in (target.get("unsupported_ops") or {}).items():
        echo(f"target {target['name']}: cannot run {op}: {why}", err=True)
    lint = target.get("lint") or {}
    verdict = "passed" if target["passed"] else "NOT passed"
    echo(f"target {target['name']}: lint {lint.get('errors', 0)} error(s), {lint.get('warnings', 0)} warning(s) ({verdict})")


def _print_mixed(mixed: dict[str, Any]) -> None:
    """The frontier the mixed-precision search measured, then its choice."""
    rows = [
        [p["label"], "-" if p["latency_ms"] is None else f"{p['latency_ms']:.3f}", "-" if p["speedup"] is None else f"{p['speedup']:.2f}x",
         f"{p['key']} {p['value']}", p["int8_nodes"], p["dynamic_nodes"], "yes" if p["meets_accuracy"] else "no"]
        for p in mixed["frontier"]
    ]
    table("mixed precision: points measured", ["plan", "ms", "speedup", "metric", "int8", "dynamic", "meets"], rows)
    counts: dict[str, int] = {}
    for precision in mixed["precisions"].values():
        counts[precision] = counts.get(precision, 0) + 1
    spent = mixed["evaluations"]
    echo(
        f"mixed precision: chose '{mixed['chosen']}' ({', '.join(f'{n} {p}' for p, n in sorted(counts.items()))}); "
        f"{spent.get('sensitivity', 0)} sensitivity + {spent.get('search', 0)} search evaluations, {spent.get('timed', 0)} plans timed"
    )


def _print_summary(rep: ConversionReport, out: Path) -> None:
    table(None, ["pass", "seconds", "modified"], [[r.name, f"{r.seconds:.2f}", r.modified] for r in rep.passes])
    reasons = rep.float_reasons()
    if reasons:
        table("nodes left float", ["nodes", "reason"], sorted(([v, k] for k, v in reasons.items()), reverse=True))
    for note in rep.notes:
        echo(f"note: {note}", err=True)
    if rep.target is not None:
        _print_target(rep.target)
    latency = rep.latency or {}
    timed = [s for s in latency.get("steps", []) if "float_ms" in s and "int8_ms" in s]
    if rep.mixed_precision is not None:
        _print_mixed(rep.mixed_precision)
    elif timed:
        final = timed[-1]
        echo(f"latency ({latency.get('threads')} thread): float {final['float_ms']:.3f} ms, int8 {final['int8_ms']:.3f} ms ({final['step']})")
    size = rep.bytes_after or out.stat().st_size  # set by ConversionResult.save: the .onnx and its data file
    what = f"{rep.quantized_nodes} nodes quantized, {len(rep.float_nodes)} float" if rep.quantized_nodes is not None else rep.mode
    echo(f"wrote {out}: {human_bytes(rep.bytes_before)} → {human_bytes(size)} ({size / max(rep.bytes_before, 1):.3f}x), {what}, {rep.seconds:.1f} s")
