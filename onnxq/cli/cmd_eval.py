"""``onnxq eval`` and ``onnxq bench``: compare models on the same inputs, for accuracy and for speed."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from .. import ir
from ..metrics import Guard, choose_guards
from ..runtime.bench import bench_models
from ..runtime.evaluate import EvalResult, compare_models, metrics_per_output
from ._app import cli
from ._common import Input, Output, RunOutputs, data_options, load_model, maybe_write_report, open_data
from ._output import echo, echo_json, human_bytes, table


@cli.command("eval")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Evaluation data (same forms as --data of convert).")
@click.option("--labels", type=click.Path(dir_okay=False), help="Labels (one per sample: .npy or text) for top-1 accuracy.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the metrics as JSON.")
@click.option(
    "--metric",
    "metric_specs",
    multiple=True,
    metavar="SPEC[@OUTPUT]",
    help="Also report this metric (repeatable), e.g. 'worst_slice_sqnr:axis=1', 'topk:k=5@logits', 'mymodule:f1'; "
    "with a bar ('sequence_agreement>=0.95') it replaces the output's default guard.",
)
@data_options
def eval_cmd(
    reference: str, candidate: str, data: str, labels: str | None, threads: int, as_json: bool, report: str | None, metric_specs: tuple[str, ...],
    samples: int | None, dims: tuple[str, ...], image_preprocess: str | None,
) -> None:
    """Compare CANDIDATE with REFERENCE on the same inputs: cosine, SQNR, errors, top-1 agreement,
    each output's guard (the metric onnxq convert's tuner would check, with its verdict) and any --metric."""
    from ..progress import track

    reads = [Input("reference model", reference, model=True), Input("candidate model", candidate, model=True)]
    reads += [Input("--data", data, data=True), Input("--labels", labels)]
    with RunOutputs([Output("--report", report)], reads) as outs:
        ref = load_model(reference)
        load_model(candidate)
        metrics, guards = _metrics_and_guards(ref, metric_specs)
        source = open_data(data, ref, samples=samples, dims=dims, image_preprocess=image_preprocess, labels=labels)
        tracked = track(source.iter_with_labels(), "evaluating", total=source.num_samples)
        result = compare_models(reference, candidate, tracked, threads=threads, with_labels=True, metrics=metrics, guards=guards)
        data_out = {
            "reference": reference,
            "candidate": candidate,
            "reference_bytes": Path(reference).stat().st_size,
            "candidate_bytes": Path(candidate).stat().st_size,
            **result.as_dict(),
        }
        maybe_write_report(outs, "--report", report, data_out)
    if as_json:
        echo_json(data_out)
        return
    _print_table(result)
    ratio = data_out["candidate_bytes"] / max(data_out["reference_bytes"], 1)
    echo(f"size: {human_bytes(data_out['reference_bytes'])} → {human_bytes(data_out['candidate_bytes'])} ({ratio:.3f}x)")


def _metrics_and_guards(ref: ir.Model, specs: tuple[str, ...]) -> tuple[list[str], list[Guard]]:
    """Split ``--metric`` specs into metrics to report and guards (specs with a bar), checked now:
    a bad spec fails before any model runs."""
    bars = [s for s in specs if ">=" in s or "<=" in s]
    plain = [s for s in specs if s not in bars]
    metrics_per_output([t.name for t in ref.graph.outputs], plain)
    return plain, choose_guards(ref, bars)


def _print_table(result: EvalResult) -> None:
    extra = sorted({k for o in result.outputs for k in o.metrics})
    rows = []
    for o in result.outputs:
        guard = "; ".join(f"{g['metric']} {_num(g['value'])} {'meets' if g['meets'] else 'misses'} {g['threshold']:g}" for g in o.guards)
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
                guard or "-",
                *(_num(o.metrics.get(k)) for k in extra),
            ]
        )
    headers = ["output", "cosine", "min cosine", "SQNR dB", "max abs", "mean abs", "top-1 agree", "top-1 acc", "guard", *extra]
    table(f"{result.samples} samples", headers, rows)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@cli.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--data", help="Inputs (first sample is used); default: synthetic from the first model's signature.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--report", type=click.Path(dir_okay=False))
@data_options
def bench_cmd(
    models: tuple[str, ...], threads: int, runs: int, warmup: int, data: str | None, as_json: bool, report: str | None, samples: int | None,
    dims: tuple[str, ...], image_preprocess: str | None,
) -> None:
    """Time MODELS interleaved on the same inputs; report median, p90 and the ratio to the first."""
    reads = [Input(f"model #{i + 1}", p, model=True) for i, p in enumerate(models)] + [Input("--data", data, data=True)]
    with RunOutputs([Output("--report", report)], reads) as outs:
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
        maybe_write_report(outs, "--report", report, data_out)
    if as_json:
        echo_json(data_out)
    else:
        table(f"{threads} thread(s), {runs} interleaved runs", ["model", "median ms", "p90 ms", "speedup vs first", "size"], rows)
