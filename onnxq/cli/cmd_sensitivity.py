"""``onnxq sensitivity``: which quantized units cost the most accuracy, measured one by one.

The command maps its flags onto :func:`onnxq.api.sensitivity` and prints the ranked table; the
JSON report (``--json`` / ``--report``) holds every unit.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from ..api import SENSITIVITY_ENGINES, ConversionOptions, SensitivityReport, sensitivity
from ..api._sensitivity_report import Measured
from ..data import parse_dims
from ..errors import ConfigError
from ..progress import progress_enabled
from ._app import cli
from ._common import Input, Output, RunOutputs, data_options, maybe_write_report
from ._output import echo, echo_json, table

__all__ = ["sensitivity_cmd"]


@cli.command("sensitivity")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Samples: folder of .npz/.npy/images, an .npz/.npy file, or 'synthetic[:N]' (all calibrate).")
@click.option(
    "--metric",
    "metric_specs",
    multiple=True,
    metavar="SPEC[@OUTPUT]",
    help="Metric read on the outputs (repeatable), e.g. 'sqnr', 'topk:k=5@logits', 'mymodule:f1'; default: each output's accuracy guard metric.",
)
@click.option("--eval-samples", type=click.IntRange(min=1), default=8, show_default=True, help="Samples each evaluation runs on (the first ones).")
@click.option(
    "--engine",
    type=click.Choice(SENSITIVITY_ENGINES),
    default="switch",
    show_default=True,
    help="switch: one session for every evaluation (QDQ semantics); rebuild: a session per evaluation (int8 kernels).",
)
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True, help="onnxruntime threads.")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Rows of the table (the JSON report has every unit).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the report (JSON, with schema_version).")
@click.option(
    "--cache", "cache_dir", type=click.Path(file_okay=False), help="Cache folder (default: $ONNXQ_CACHE_DIR/sensitivity or ~/.cache/onnxq/sensitivity)."
)
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache.")
@click.option(
    "--budget",
    "budget_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds for the analysis; units not reached are left out (a note says so; a rerun continues from the cache).",
)
@data_options
def sensitivity_cmd(
    model: str, data: str, metric_specs: tuple[str, ...], eval_samples: int, engine: str, threads: int, top: int, as_json: bool, report: str | None,
    cache_dir: str | None, no_cache: bool, budget_s: float | None, samples: int | None, dims: tuple[str, ...], image_preprocess: str | None,
) -> None:
    """Rank the units of MODEL's static int8 plan by what quantizing each costs.

    Each quantized node (a Conv with the Relu folded into it counts as one) is evaluated with only
    it quantized and with only it kept float; results are cached, so a repeated run is instant.
    """
    if cache_dir and no_cache:
        raise click.UsageError("--cache and --no-cache exclude each other")
    _check_cache_location(cache_dir, data)
    options = ConversionOptions(samples=samples, eval_samples=eval_samples, threads=threads)
    with RunOutputs([Output("--report", report)], [Input("input model", model, model=True), Input("--data", data, data=True)]) as outs:
        result = sensitivity(
            model, data, metric=metric_specs, engine=engine, cache=cache_dir, use_cache=not no_cache, dims=parse_dims(dims),
            image_preprocess=image_preprocess, progress=progress_enabled(), options=options, budget_s=budget_s,
        )
        maybe_write_report(outs, "--report", report, result.to_dict())
    if as_json:
        echo_json(result.to_dict())
        return
    _print(result, top)


def _check_cache_location(cache_dir: str | None, data: str) -> None:
    """A cache inside the data folder would add its files to the data."""
    if not cache_dir or not Path(data).is_dir():
        return
    cache, folder = Path(cache_dir).resolve(), Path(data).resolve()
    if cache == folder or folder in cache.parents:
        raise ConfigError(f"--cache '{cache_dir}' is inside the --data folder '{data}'; put the cache elsewhere")


def _values(m: Measured) -> str:
    return " / ".join("-" if v is None else f"{v:.4g}" for v in m.values)


def _db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}"


def _print(rep: SensitivityReport, top: int) -> None:
    metric = " / ".join(g.label for g in rep.guards)
    rows = [
        [rank, u.name, "+".join(u.ops), _values(u.only_quantized), _db(u.only_quantized.worst_sqnr_db), _values(u.only_float),
         _db(u.only_float.worst_sqnr_db), f"{u.damage:.4g}", f"{u.recovery:.4g}", f"{u.seconds:.3f}"]
        for rank, u in enumerate(rep.units[:top], start=1)
    ]
    headers = ["#", "unit", "ops", "only quantized", "SQNR dB", "only float", "SQNR dB", "damage", "recovery", "cost s"]
    shown = f"top {len(rows)} of {len(rep.units)}" if len(rows) < len(rep.units) else f"{len(rep.units)}"
    table(f"{shown} units, most sensitive first; metric: {metric}", headers, rows)
    echo(f"float: {_values(rep.float_values)}; full int8 plan: {_values(rep.int8_values)}, SQNR {_db(rep.int8_values.worst_sqnr_db)} dB")
    rate = f", {rep.evaluations_per_second:.2f} evaluations/s" if rep.evaluated else ""
    echo(
        f"{rep.evaluations} evaluations: {rep.evaluated} run{rate} ({rep.engine} engine, {rep.sessions} session(s), {rep.shared} sharing a plan), "
        f"{rep.cached} cached; "
        f"setup {rep.setup_seconds:.1f} s, total {rep.seconds:.1f} s"
    )
    for note in rep.notes:
        echo(f"note: {note}", err=True)
