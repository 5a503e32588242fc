"""``onnxq debug FLOAT QUANT --data PATH``: which layer of a quantized model loses the accuracy.

A thin mapping onto :func:`onnxq.debug.compare_layers` and :func:`onnxq.debug.write_html`: both
models run side by side on the same samples, every quantized activation is compared with its float
twin, and the table shows the layers that *add* the most error (each fed the float model's inputs)
and where the error first jumps. ``--json`` and ``--html`` write the full report (atomically).

Bad input is one line and exit code 2, like every command: models whose inputs or outputs differ,
data that does not fit (the errors ``onnxq convert`` gives), and a QUANT with nothing quantized —
an error rather than an empty report, because it almost always means the wrong file was passed (the
float model twice, or a weight-only / dynamic model, which ``onnxq eval`` compares instead).
"""

from __future__ import annotations

import click

from ..data import parse_dims
from ..debug import DEFAULT_JUMP_DB, LayerReport, compare_layers, require_matplotlib, write_html
from ..progress import progress_enabled
from ._app import cli
from ._common import Input, Output, RunOutputs, data_options, load_model
from ._output import echo, table, write_json

__all__ = ["debug_cmd"]


@cli.command("debug")
@click.argument("float_model", type=click.Path(dir_okay=False))
@click.argument("quant_model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Samples both models run on (same forms as --data of convert).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write a self-contained HTML page with plots (needs onnxq[report]).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Layers shown (and plotted in --html), worst first.")
@click.option("--jump-db", type=click.FloatRange(min=0), default=DEFAULT_JUMP_DB, show_default=True, help="A tensor this many dB below its inputs is a jump.")
@click.option(
    "--max-memory", "max_memory_mb", type=click.FloatRange(min=0), default=1024.0, show_default=True, help="MB of exposed tensors per pass over the data."
)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="onnxruntime threads (0: all cores).")
@data_options
def debug_cmd(
    float_model: str, quant_model: str, data: str, html_path: str | None, json_path: str | None, top: int, jump_db: float, max_memory_mb: float,
    threads: int, samples: int | None, dims: tuple[str, ...], image_preprocess: str | None,
) -> None:
    """Compare QUANT with FLOAT layer by layer: SQNR, cosine, errors, ranges and saturation per tensor,
    the error each layer adds on its own, and where error first jumps.

    Exit code 2 (one line) when the models do not correspond, the data does not fit them, or QUANT
    has no quantized activation.
    """
    reads = [Input("FLOAT model", float_model, model=True), Input("QUANT model", quant_model, model=True), Input("--data", data, data=True)]
    with RunOutputs([Output("--html", html_path), Output("--json", json_path)], reads) as outs:
        if html_path:
            require_matplotlib()  # before the models run, not after
        fm, qm = load_model(float_model), load_model(quant_model)
        report = compare_layers(
            fm, qm, data, samples=samples, dims=parse_dims(dims), image_preprocess=image_preprocess, max_memory_mb=max_memory_mb or None,
            jump_db=jump_db, threads=threads, progress=progress_enabled(),
        )
        if json_path:
            outs.write("--json", lambda path: write_json(path, report.to_dict(top)))
        if html_path:
            outs.write("--html", lambda path: write_html(path, report, top=top))
    _print(report, top)


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.4g}{unit}"


def _print(report: LayerReport, top: int) -> None:
    rows = []
    for t in report.blame()[:top]:
        used = f"[{t.range_used[0]:.4g}, {t.range_used[1]:.4g}]" if t.range_used else "float"
        observed = f"[{t.observed[0]:.4g}, {t.observed[1]:.4g}]" if t.observed else "-"
        clipped = "-" if t.saturation is None else f"{t.saturation * 100:.3g}%"
        jump = "yes" if t.first_jump else ""
        rows.append([t.layer, t.tensor, _num(t.local_sqnr), _num(t.sqnr), _num(t.cosine), _num(t.max_abs), used, observed, clipped, jump])
    headers = ["layer", "tensor", "local SQNR dB", "SQNR dB", "cosine", "max abs", "range used", "range observed", "clipped", "first jump"]
    table(f"{len(report.tensors)} tensors compared on {report.samples} samples, worst {len(rows)} by the error they add", headers, rows)
    jumps = report.first_jumps
    if jumps:
        echo("error jumps first at: " + ", ".join(f"{t.tensor} ({t.layer}: {_num(t.input_sqnr)} → {_num(t.sqnr)} dB)" for t in jumps[:top]))
    if report.unmatched:
        shown = ", ".join(u.tensor for u in report.unmatched[:5])
        more = f" and {len(report.unmatched) - 5} more" if len(report.unmatched) > 5 else ""
        echo(f"not matched ({len(report.unmatched)} of {report.quantized} quantized tensors; reasons in --json/--html): {shown}{more}")
    echo(f"{report.seconds:.1f} s, {report.groups} group(s), peak RSS {report.peak_rss_mb:.0f} MB")
