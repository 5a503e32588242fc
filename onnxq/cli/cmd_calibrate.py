"""``onnxq calibrate``: collect activation ranges once, reuse them for many quantization settings."""

from __future__ import annotations

import click

from ..api import ConversionOptions, prepare_for_calibration
from ..calibration.collector import DEFAULT_MAX_MEMORY_MB, collect_ranges
from ..calibration.observers import OBSERVERS
from ..progress import progress_enabled
from ._app import cli
from ._common import Input, Output, RunOutputs, data_options, load_for_rewrite, maybe_write_report, open_data
from ._output import echo, table


def method_options(method: str, percentile: float | None) -> dict:
    """Observer options from CLI flags (only the ones that apply to ``method``)."""
    return {"percentile": percentile} if method == "percentile" and percentile is not None else {}


@cli.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Calibration data: folder of .npz/.npy/images, an .npz/.npy file, or 'synthetic[:N]'.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the ranges (JSON).")
@click.option("--method", type=click.Choice(sorted(OBSERVERS)), default="percentile", show_default=True, help="Observer (the same default as convert).")
@click.option("--percentile", type=float, help="Percentile for --method percentile (default 99.999).")
@click.option("--per-channel-axis", type=int, help="Observe ranges per channel along this axis.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="onnxruntime threads (0: all cores).")
@click.option(
    "--max-memory",
    "max_memory",
    type=float,
    default=DEFAULT_MAX_MEMORY_MB,
    show_default=True,
    help="MB of one sample's exposed activations per pass; more are split into groups.",
)
@click.option(
    "--no-cleanup", is_flag=True, help="Calibrate the model as is, not as convert prepares it (ranges then match the raw model's tensor names)."
)
@click.option("--report", type=click.Path(dir_okay=False), help="Write run statistics as JSON.")
@data_options
def calibrate_cmd(
    model: str,
    data: str,
    output: str,
    method: str,
    percentile: float | None,
    per_channel_axis: int | None,
    threads: int,
    max_memory: float,
    no_cleanup: bool,
    report: str | None,
    samples: int | None,
    dims: tuple[str, ...],
    image_preprocess: str | None,
) -> None:
    """Run MODEL on calibration data and write the range of every float activation.

    By default the model is first prepared as `onnxq convert` prepares it for calibration (opset
    upgrade, `cleanup`, HardSwish expansion), so `onnxq convert --ranges` can reuse the file.
    """
    # The options convert would take for the same calibration: validated in one place.
    options = ConversionOptions(method=method, percentile=percentile, max_memory_mb=max_memory, threads=threads)
    outputs = [Output("-o", output), Output("--report", report)]
    with RunOutputs(outputs, [Input("input model", model, model=True), Input("--data", data, data=True)]) as outs:
        m = load_for_rewrite(model)
        if not no_cleanup:
            m, _ = prepare_for_calibration(m, options)
        source = open_data(data, m, samples=samples, dims=dims, image_preprocess=image_preprocess)
        ranges, stats = collect_ranges(
            m,
            source,
            method=method,
            options=method_options(method, percentile),
            per_channel_axis=per_channel_axis,
            max_memory_mb=max_memory,
            threads=threads,
            progress=progress_enabled(),
        )
        outs.write("-o", ranges.save_json)
        maybe_write_report(outs, "--report", report, {"model": model, "method": method, "output": output, **stats.as_dict()})
    table(
        None,
        ["tensors", "samples", "groups", "wall time", "peak RSS", "saturating", "unreachable"],
        [[len(ranges), stats.samples, stats.groups, f"{stats.seconds:.2f} s", f"{stats.peak_rss_mb:.0f} MB", len(stats.saturating), len(stats.unreachable)]],
    )
    for name in stats.saturating[:10]:
        echo(f"saturating (kept float by quantizers): {name}", err=True)
    echo(f"wrote {output}")
