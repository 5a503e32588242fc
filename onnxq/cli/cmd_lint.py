"""``onnxq lint``: check a Q/DQ model against a deployment target's rules (:mod:`onnxq.lint`).

Exit code 1 when a finding is an error (a model the target rejects or computes wrongly), 0
otherwise; bad input (a missing file, an unknown target) is one line and exit code 2 as everywhere.
"""

from __future__ import annotations

from typing import Any

import click

from ..lint import RULES, LintReport, lint
from ..targets import target_names
from ._app import cli
from ._common import Input, Output, RunOutputs, data_options, load_model, maybe_write_report, open_data
from ._output import echo, echo_json, table

__all__ = ["lint_cmd"]


@cli.command("lint")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(list(target_names())), default="generic", show_default=True, help="Whose rules to check.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the findings as JSON.")
@click.option("--data", help="Samples to measure quantized ranges on (shared-scale rule); default: read off the Q/DQ grids.")
@click.option("--power-of-two-scales", is_flag=True, help="The model is meant for fixed-point hardware: scales must be powers of two.")
@click.option("--rule", "rules", multiple=True, type=click.Choice(list(RULES)), help="Run only this rule (repeatable).")
@data_options
def lint_cmd(
    model: str, target: str, as_json: bool, report: str | None, data: str | None, power_of_two_scales: bool, rules: tuple[str, ...],
    samples: int | None, dims: tuple[str, ...], image_preprocess: str | None,
) -> None:
    """Explain what in MODEL's Q/DQ graph TARGET would reject, run slowly or compute wrongly, with nodes and fixes.

    Rules: unsupported-op, opset-too-new, no-int8-kernel, forbidden-zero-point, bias-overflow,
    non-power-of-two-scale (errors); qdq-breaks-fusion, qdq-around-unfusable-op, dq-shared-consumers,
    shared-scale-disparate-ranges, redundant-qdq (warnings). Exit code 1 when there are errors.
    """
    reads = [Input("input model", model, model=True), Input("--data", data, data=True)]
    with RunOutputs([Output("--report", report)], reads) as outs:
        loaded = load_model(model)
        source = open_data(data, loaded, samples=samples or 8, dims=dims, image_preprocess=image_preprocess) if data else None
        result = lint(loaded, target, data=source, power_of_two=power_of_two_scales, rules=list(rules) or None)
        maybe_write_report(outs, "--report", report, result.to_dict())
    if as_json:
        echo_json(result.to_dict())
    else:
        _print(result)
    click.get_current_context().exit(result.exit_code)


def _print(result: LintReport) -> None:
    rows: list[list[Any]] = []
    for f in result.findings:
        nodes = ", ".join(f.nodes[:3]) + (f" (+{len(f.nodes) - 3})" if len(f.nodes) > 3 else "")
        rows.append([f.severity, f.rule, nodes, f.message, f.fix])
    if rows:
        table(f"{result.model} for {result.target}", ["severity", "rule", "nodes", "what", "fix"], rows)
    for note in result.notes:
        echo(f"note: {note}", err=True)
    echo(f"{len(result.errors)} error(s), {len(result.warnings)} warning(s) for {result.target}")
