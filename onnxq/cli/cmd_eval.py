"""``onnxq eval`` and ``onnxq bench``: compare models on the same inputs, for accuracy and for speed."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..runtime.bench import bench_models
from ..runtime.evaluate import compare_models
from ._app import cli
from ._common import data_options, load_model, maybe_write_report, open_data
from ._output import echo_json, human_bytes, table


@cli.command("eval")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Evaluation data (same forms as --data of convert).")
@click.option("--labels", type=click.Path(dir_okay=False), help="Labels (one per sample: .npy or text) for top-1 accuracy.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the metrics as JSON.")
@data_options
def eval_cmd(
    reference: str, candidate: str, data: str, labels: str | None, threads: int, as_json: bool, report: str | None, samples: int | None,
    dims: tuple[str, ...], image_preprocess: str | None,
) -> None:
    """Compare CANDIDATE with REFERENCE on the same inputs: cosine, SQNR, errors, top-1 agreement."""
    ref = load_model(reference)
    load_model(candidate)
    source = open_data(data, ref, samples=samples, dims=dims, image_preprocess=image_preprocess, labels=labels)
    from ..progress import track

    tracked = track(source.iter_with_labels(), "evaluating", total=source.num_samples)
    result = compare_models(reference, candidate, tracked, threads=threads, with_labels=True)
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
    ratio = data_out["candidate_bytes"] / max(data_out["reference_bytes"], 1)
    click.echo(f"size: {human_bytes(data_out['reference_bytes'])} → {human_bytes(data_out['candidate_bytes'])} ({ratio:.3f}x)")


@cli.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--threads", type=int, default=1, show_default=True)
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
