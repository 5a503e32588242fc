"""``onnxq profile``: where one model's time goes, or how it moves between two (fp32 → int8).

A thin face of :func:`onnxq.runtime.profile_models`: the first sample of ``--data`` (default one
synthetic sample, shaped by ``--shape`` / ``--dim``) feeds both models, checked against each.
"""

from __future__ import annotations

from collections.abc import Sequence

import click
import numpy as np

from .. import ir
from ..data import InputSpec, input_specs, open_source, parse_dims, validate_sample
from ..errors import CalibrationDataError, ConfigError
from ..runtime.profile import CATEGORIES, CATEGORY_LABELS, FLOAT_ISLAND_GOAL, ModelProfile, ProfileReport, profile_models
from ._app import cli
from ._common import Input, Output, RunOutputs, load_model, maybe_write_report, parse_shapes
from ._output import echo, echo_json, table


@cli.command("profile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("model2", required=False, type=click.Path(dir_okay=False))
@click.option("--data", help="Inputs (the first sample is used); default: one synthetic sample from the first model's signature.")
@click.option("--shape", "shapes", multiple=True, metavar="INPUT=D0,D1,...", help="Input shape for synthetic data (repeatable), e.g. --shape x=1,3,224,224.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE", help="Size of a symbolic input dim (repeatable), e.g. --dim batch=1.")
@click.option("--image-preprocess", metavar="SPEC", help="Image pipeline for image --data, e.g. 'size=224x224'.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs per model (medians per node).")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True, help="Slowest nodes to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the profile as JSON.")
def profile_cmd(
    model: str, model2: str | None, data: str | None, shapes: tuple[str, ...], dims: tuple[str, ...], image_preprocess: str | None,
    threads: int, runs: int, warmup: int, top: int, as_json: bool, report: str | None,
) -> None:
    """onnxruntime's per-node profile of MODEL (and MODEL2, interleaved): time in int8 compute, float
    compute, conversions (Q/DQ/Cast), layout and the rest; the slowest nodes; per op type, and for two
    models the change between them; float islands and whether the NHWC int8 layout kicked in."""
    from ..progress import status

    paths = [model] + ([model2] if model2 else [])
    reads = [Input(f"model #{i + 1}", p, model=True) for i, p in enumerate(paths)] + [Input("--data", data, data=True)]
    with RunOutputs([Output("--report", report)], reads) as outs:
        loaded = [load_model(p) for p in paths]
        feeds = _sample(loaded, paths, data, parse_shapes(shapes), dims, image_preprocess)
        with status(f"profiling {' and '.join(paths)} ({runs} runs)"):
            result = profile_models(paths, feeds, threads=threads, runs=runs, warmup=warmup)
        data_out = result.as_dict(top)
        maybe_write_report(outs, "--report", report, data_out)
    if as_json:
        echo_json(data_out)
    else:
        _print(result, top)


def _sample(models: Sequence[ir.Model], paths: Sequence[str], data: str | None, shapes: dict[str, list[int]], dims: tuple[str, ...],
            image_preprocess: str | None) -> dict[str, np.ndarray]:  # fmt: skip
    """The first sample of ``--data`` (or synthetic), checked against every model's inputs."""
    specs = [_shaped(input_specs(ir.to_proto(m, weights=False)), shapes, first=i == 0, synthetic=data is None) for i, m in enumerate(models)]
    source = open_source(data or "synthetic:1", specs[0], dims=parse_dims(dims), samples=1, image_preprocess=image_preprocess)
    feeds = next(iter(source), None)
    if feeds is None:
        raise CalibrationDataError(f"--data '{data}' holds no sample")
    for i, (path, other) in enumerate(zip(paths[1:], specs[1:]), start=2):
        declared = {s.name for s in other}
        validate_sample({k: v for k, v in feeds.items() if k in declared}, other, f"model #{i} '{path}'")
    return dict(feeds)


def _shaped(specs: list[InputSpec], shapes: dict[str, list[int]], *, first: bool, synthetic: bool) -> list[InputSpec]:
    """``specs`` with ``--shape`` applied (checked against the declared rank and static dims); the
    first model (whose signature shapes synthetic data) must have every input ``--shape`` names and
    a shape for each of its inputs when the data is synthetic."""
    names = [s.name for s in specs]
    for name in shapes:
        if first and name not in names:
            raise ConfigError(f"--shape {name}=...: the model has no input '{name}'; its inputs: {', '.join(repr(n) for n in names)}")
    out = []
    for spec in specs:
        dims = shapes.get(spec.name)
        if dims is None:
            if first and synthetic and spec.shape is None:
                raise CalibrationDataError(f"input '{spec.name}' has no shape in the model: pass --shape {spec.name}=D0,D1,... or --data")
            out.append(spec)
            continue
        text = f"--shape {spec.name}={','.join(map(str, dims))}"
        if spec.shape is not None and len(spec.shape) != len(dims):
            raise ConfigError(f"{text}: rank {len(dims)}, but input '{spec.name}' has rank {len(spec.shape)} {spec.shape_text()}")
        for axis, size in enumerate(dims):
            want = spec.shape[axis] if spec.shape is not None else None
            if size < 1 or (isinstance(want, int) and want != size):
                raise ConfigError(f"{text}: axis {axis} is {size}, but input '{spec.name}' is {spec.shape_text()}")
        out.append(InputSpec(spec.name, spec.dtype, tuple(dims)))
    return out


def _print(result: ProfileReport, top: int) -> None:
    models = result.models
    inputs = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in result.inputs.items())
    how = "interleaved " if len(models) == 2 else ""
    echo(f"onnxruntime profile: {result.threads} thread(s), {result.runs} {how}runs after {result.warmup} warm-up; inputs {inputs}")
    columns = ["category"] + [c for m in models for c in (f"{_short(m)} ms", "share")]
    rows = []
    for c in CATEGORIES:
        rows.append([CATEGORY_LABELS[c], *(v for m in models for v in (f"{m.categories()[c]:.3f}", f"{_share(m.categories()[c], m.total_ms)}"))])
    rows.append(["total (sum of nodes)", *(v for m in models for v in (f"{m.total_ms:.3f}", "100%"))])
    rows.append(["whole run (with overhead)", *(v for m in models for v in (f"{m.run_ms:.3f}", "-"))])
    table("time per category (median ms per run)", columns, rows)
    for m in models:
        nodes = [[n.name, n.op_type, CATEGORY_LABELS[n.category], f"{n.ms:.3f}", _share(n.ms, m.total_ms)] for n in m.nodes[:top]]
        table(f"{m.model}: top {min(top, len(m.nodes))} of {len(m.nodes)} nodes", ["node", "op type", "category", "ms", "share"], nodes)
    if len(models) == 1:
        m = models[0]
        ops = [[op, CATEGORY_LABELS[c], k, f"{ms:.3f}", _share(ms, m.total_ms)] for op, (c, k, ms) in m.op_types().items()]
        table("per op type", ["op type", "category", "nodes", "ms", "share"], ops)
    else:
        a, b = (_short(m) for m in models)
        delta = result.op_type_delta()
        rows = [[r["op_type"], CATEGORY_LABELS[r["category"]], f"{r['ms'][0]:.3f}", f"{r['ms'][1]:.3f}", f"{r['delta_ms']:+.3f}"] for r in delta]
        table(f"per op type: {a} → {b}", ["op type", "category", f"{a} ms", f"{b} ms", "change ms"], rows)
    for m in models:
        for line in _findings(m):
            echo(f"{m.model}: {line}")


def _findings(m: ModelProfile) -> list[str]:
    lines = []
    if m.nhwc is not None and m.nhwc["applied"]:
        lines.append(f"NHWC: onnxruntime runs all {m.nhwc['qlinear_conv']} QLinearConv channels-last")
    if m.island_ms is not None and m.islands is not None:
        share = m.island_ms / m.total_ms if m.total_ms > 0 else 0.0
        verdict = "meets" if share < FLOAT_ISLAND_GOAL else "misses"
        lines.append(f"float islands: {len(m.islands)} ({m.island_ms:.3f} ms, {share:.1%} of the run; {verdict} the goal < {FLOAT_ISLAND_GOAL:.0%})")
    return lines + m.notes


def _short(m: ModelProfile) -> str:
    return m.model.replace("\\", "/").rsplit("/", 1)[-1]


def _share(ms: float, total: float) -> str:
    return f"{ms / total:.1%}" if total > 0 else "-"
