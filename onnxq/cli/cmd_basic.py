"""``onnxq inspect``, ``onnxq optimize``, ``onnxq passes`` and ``onnxq models``."""

from __future__ import annotations

import dataclasses
import time

import click

from .. import ir
from ..api._loading import check_output
from ..errors import ConfigError
from ..inspect import summarize
from ..pass_base import config_fields, registered_passes
from ..pass_manager import PassManager
from ..pipeline import load_pipeline, parse_pass_list, pipeline_from_data
from ._app import cli
from ._common import Input, Output, RunOutputs, load_for_rewrite, load_model, maybe_write_report, parse_shapes
from ._output import echo, echo_json, human_bytes, table


@cli.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--layers", is_flag=True, help="Also list per-layer weight sparsity.")
@click.option("--shape", "shapes", multiple=True, metavar="INPUT=D0,D1,...", help="Input shape for FLOPs (repeatable), e.g. --shape x=1,3,48,320.")
def inspect_cmd(model: str, as_json: bool, layers: bool, shapes: tuple[str, ...]) -> None:
    """Summarize MODEL: opset, I/O, op histogram, parameters, quantization state, sparsity, FLOPs."""
    m = load_model(model)
    summary = summarize(m, shapes=_checked_shapes(m, parse_shapes(shapes)))
    if as_json:
        echo_json(summary)
        return
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in summary["opsets"].items())
    echo(f"{model}: IR {summary['ir_version']}, opsets {opsets}, producer {summary['producer'] or '-'}")
    table("inputs", ["name", "dtype", "shape"], [[t["name"], t["dtype"], t["shape"]] for t in summary["inputs"]])
    table("outputs", ["name", "dtype", "shape"], [[t["name"], t["dtype"], t["shape"]] for t in summary["outputs"]])
    table(f"ops ({summary['nodes']} nodes)", ["op", "count"], list(summary["ops"].items()))
    p = summary["parameters"]
    table(
        f"parameters: {p['count']:,} ({human_bytes(p['bytes'])})",
        ["dtype", "count", "bytes"],
        [[k, f"{v['count']:,}", human_bytes(v["bytes"])] for k, v in p["by_dtype"].items()],
    )
    q = summary["quantization"]
    echo("quantization: " + (", ".join(f"{k} {v}" for k, v in q["ops"].items()) if q["quantized"] else "none (float model)"))
    s = summary["sparsity"]
    echo(f"weight sparsity: {s['overall']:.2%} of {s['weights']:,} Conv/Gemm/MatMul weights")
    if layers and s["layers"]:
        table("per-layer sparsity", ["layer", "zeros"], [[k, f"{v:.2%}"] for k, v in s["layers"].items()])
    f = summary.get("flops", {})
    if f:
        unknown = f" ({f['nodes_with_unknown_shapes']} nodes with unknown shapes not counted)" if f["nodes_with_unknown_shapes"] else ""
        assumed = ", ".join(f"{k}={v}" for k, v in f["assumed_dims"].items())
        echo(f"FLOPs: {f['total'] / 1e9:.4f} G{unknown}" + (f" assuming {assumed}" if assumed else ""))


def _checked_shapes(model: ir.Model, shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    """Refuse ``--shape`` values that name no input or contradict its declared rank or static dims."""
    declared = {t.name: t.shape for t in model.graph.inputs}
    for name, dims in shapes.items():
        if name not in declared:
            raise ConfigError(f"--shape {name}=...: the model has no input '{name}'; its inputs: {', '.join(repr(n) for n in declared)}")
        shape = declared[name]
        if shape is not None and len(shape) != len(dims):
            raise ConfigError(f"--shape {name}={','.join(map(str, dims))}: rank {len(dims)}, but input '{name}' has rank {len(shape)} {list(shape)}")
        for axis, size in enumerate(dims):
            want = shape[axis] if shape is not None else None
            if size < 1:
                raise ConfigError(f"--shape {name}: axis {axis} is {size}; sizes must be >= 1")
            if isinstance(want, int) and want >= 0 and size != want:
                raise ConfigError(f"--shape {name}: axis {axis} is {size}, but input '{name}' declares {want} (shape {list(shape or [])})")
    return shapes


def _build_pipeline(pipeline: str | None, passes: str | None) -> PassManager:
    if pipeline and passes:
        raise ConfigError("give --pipeline or --passes, not both")
    if pipeline:
        return load_pipeline(pipeline)
    return pipeline_from_data(parse_pass_list(passes or "cleanup"), where="--passes")


@cli.command("optimize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the optimized model.")
@click.option("--pipeline", type=click.Path(dir_okay=False), help="TOML pipeline file ([[passes]] tables).")
@click.option("--passes", help="Comma-separated pass names (default: cleanup).")
@click.option("--check/--no-check", "check_each", default=False, help="Run the ONNX checker after every pass.")
@click.option("--external-data", is_flag=True, help="Write weights to a data file beside OUTPUT (OUTPUT.<digest>.data).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write a JSON report of the passes that ran.")
def optimize_cmd(model: str, output: str, pipeline: str | None, passes: str | None, check_each: bool, external_data: bool, report: str | None) -> None:
    """Run cleanup / fusion passes on MODEL and write the result."""
    outputs = [Output("-o", output, model=True), Output("--report", report)]
    with RunOutputs(outputs, [Input("input model", model, model=True), Input("--pipeline", pipeline)]) as outs:
        manager = _build_pipeline(pipeline, passes)
        manager.check = check_each or manager.check
        start = time.perf_counter()
        m = load_for_rewrite(model)
        nodes_before = sum(1 for _ in ir.iter_nodes(m.graph))
        result = manager.run(m)
        check_output(result.model, model, "optimized model")
        size = ir.stored_size(outs.write("-o", lambda path: ir.save(result.model, path, external_data=external_data or None)))
        nodes_after = sum(1 for _ in ir.iter_nodes(result.model.graph))
        seconds = time.perf_counter() - start
        summary = {"input": model, "output": output, "nodes_before": nodes_before, "nodes_after": nodes_after}
        sizes = {"bytes_before": ir.stored_size(model), "bytes_after": size, "seconds": seconds}
        maybe_write_report(outs, "--report", report, {**summary, **sizes, "passes": [r.as_dict() for r in result.records]})
    table(None, ["pass", "modified", "seconds", "stats"], [[r.name, r.modified, f"{r.seconds:.3f}", _short_stats(r.stats)] for r in result.records])
    echo(f"wrote {output} ({human_bytes(size)}): {nodes_before} → {nodes_after} nodes in {seconds:.2f}s")


def _short_stats(stats: dict) -> str:
    parts = [f"{k}={v}" for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v]
    return ", ".join(parts[:6])


@cli.command("passes")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def passes_cmd(as_json: bool) -> None:
    """List registered passes with their one-line doc and options."""
    rows = []
    data = []
    for name, cls in registered_passes().items():
        fields = config_fields(cls.Config)
        opts = ", ".join(f"{n}: {t} = {d!r}" if d is not dataclasses.MISSING else f"{n}: {t} (required)" for n, t, d in fields)
        rows.append([name, cls.summary(), opts or "-"])
        data.append(
            {
                "name": name,
                "doc": cls.summary(),
                "options": [{"name": n, "type": t, "default": None if d is dataclasses.MISSING else d} for n, t, d in fields],
            }
        )
    if as_json:
        echo_json(data)
    else:
        table("passes", ["name", "what it does", "options"], rows)


@cli.command("models")
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where to write the model.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Builder parameter (repeatable), e.g. --set width=32.")
def models_cmd(name: str | None, output: str | None, seed: int, settings: tuple[str, ...]) -> None:
    """Write a bundled test model (or list them when NAME is omitted)."""
    from ..models import BUILDERS, build

    if not name:
        table("bundled models", ["name", "what it is"], [[k, (v.__doc__ or "").strip().splitlines()[0]] for k, v in BUILDERS.items()])
        return
    if not output:
        raise ConfigError("onnxq models NAME needs -o OUTPUT.onnx")
    kwargs = dict(_parse_setting(s) for s in settings)
    with RunOutputs([Output("-o", output, model=True)], []) as outs:
        try:
            proto = build(name, seed=seed, **kwargs)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"models {name}: {e}") from e
        size = outs.write("-o", lambda path: ir.save(ir.load(proto), path)).stat().st_size
    echo(f"wrote {output} ({human_bytes(size)})")


def _parse_setting(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got '{text}'")
    value: object = raw
    for convert in (int, float):
        try:
            value = convert(raw)
            break
        except ValueError:
            continue
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    return key.strip(), value
