"""``onnxq prune``: magnitude / N:M / channel pruning, low-rank factorization and weight clustering.

The command only maps options onto one pass config (``prune-magnitude``, ``prune-nm``,
``prune-channels``, ``factorize-lowrank``, ``cluster-weights``); with ``--max-drop`` it hands the pass
factory to :func:`onnxq.passes.pruning.prune_until`, which raises the strength step by step while the
metric against the original model stays within the bound.
"""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from .. import ir
from ..api._loading import check_output
from ..data import open_source
from ..data import parse_dims as parse_data_dims
from ..errors import ConfigError
from ..pass_base import PassContext, Skip, make_pass
from ..pass_manager import PassManager
from ..runtime.evaluate import compare_models
from ._app import cli
from ._common import Input, Output, RunOutputs, load_for_rewrite, maybe_write_report
from ._output import echo, human_bytes, table

PASSES = {"magnitude": "prune-magnitude", "nm": "prune-nm", "channel": "prune-channels", "lowrank": "factorize-lowrank", "cluster": "cluster-weights"}
#: Which value options each method accepts (others are refused rather than silently ignored).
ACCEPTS = {
    "magnitude": {"sparsity", "global_sparsity", "threshold", "normalize", "layers"},
    "nm": {"nm", "layers"},
    "channel": {"sparsity", "criterion", "round_to", "min_channels"},
    "lowrank": {"rank", "energy", "flop_ratio", "layers"},
    "cluster": {"bits", "min_params", "layers"},
}
DEFAULT_STEPS = {"magnitude": 0.9, "channel": 0.7, "lowrank": 0.9}
DATA_CRITERIA = ("mean-activation", "apoz")


def _given(values: dict[str, Any]) -> set[str]:
    defaults = {"normalize": "none", "nm": "2:4", "criterion": "l1", "round_to": 8, "min_channels": 1, "layers": ()}
    return {k for k, v in values.items() if v is not None and v != defaults.get(k)}


def _parse_nm(text: str) -> tuple[int, int]:
    n, sep, m = text.partition(":")
    if not sep or not n.strip().isdigit() or not m.strip().isdigit():
        raise ConfigError(f"--nm expects N:M (e.g. 2:4), got '{text}'")
    return int(n), int(m)


def _options(method: str, v: dict[str, Any], exclude: tuple[str, ...], exclude_ops: tuple[str, ...], skip_first_last: bool) -> dict[str, Any]:
    """The pass options for ``method`` from the CLI values ``v``."""
    unknown = sorted(_given(v) - ACCEPTS[method] - {"search_budget_s"})  # the search's own option: checked in _prune
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise ConfigError(f"{flags} does not apply to --method {method}")
    opts: dict[str, Any] = {"exclude_names": list(exclude)}
    if method != "channel":
        opts.update(exclude_ops=list(exclude_ops), skip_first_last=skip_first_last, layers=list(v["layers"]))
    elif exclude_ops or skip_first_last:
        raise ConfigError("--exclude-op and --skip-first-last do not apply to --method channel; use --exclude")
    if method == "magnitude":
        opts.update({k: v[k] for k in ("sparsity", "global_sparsity", "threshold") if v[k] is not None}, normalize=v["normalize"])
    elif method == "nm":
        opts["n"], opts["m"] = _parse_nm(v["nm"])
    elif method == "channel":
        opts.update(criterion=v["criterion"], round_to=v["round_to"], min_channels=v["min_channels"])
        if v["sparsity"] is not None:
            opts["ratio"] = v["sparsity"]
    elif method == "lowrank":
        opts.update({k: v[k] for k in ("rank", "energy", "flop_ratio") if v[k] is not None})
    else:
        opts.update({k: v[k] for k in ("bits", "min_params") if v[k] is not None})
    return opts


def _search_axis(method: str, v: dict[str, Any]) -> tuple[str, float, Any]:
    """(option the steps drive, largest default step, step → option value) for ``--max-drop``."""
    if method == "magnitude":
        key = "global_sparsity" if v["global_sparsity"] is not None else "sparsity"
        if v["threshold"] is not None:
            raise ConfigError("--max-drop with --method magnitude steps the sparsity; drop --threshold")
        return key, v[key] if v[key] is not None else DEFAULT_STEPS[method], float
    if method == "channel":
        return "ratio", v["sparsity"] if v["sparsity"] is not None else DEFAULT_STEPS[method], float
    if method == "lowrank":
        if v["rank"] is not None or v["energy"] is not None:
            raise ConfigError("--max-drop with --method lowrank steps the fraction of FLOPs removed; drop --rank/--energy")
        top = 1.0 - v["flop_ratio"] if v["flop_ratio"] is not None else DEFAULT_STEPS[method]
        return "flop_ratio", top, lambda s: 1.0 - s
    raise ConfigError(f"--max-drop works with --method magnitude, channel or lowrank, not {method}")


def _steps(text: str | None, top: float) -> list[float]:
    if text:
        try:
            return [float(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--steps expects comma-separated numbers, got '{text}'") from None
    return [round(0.1 * i, 2) for i in range(1, 10) if 0.1 * i <= top + 1e-9]


def _layer_rows(method: str, stats: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-layer table for ``method``'s pass statistics."""
    layers = stats.get("layers", {})
    if method in ("magnitude", "nm"):
        columns = ["layer", "op", "params", "zeros before", "zeros after"]
        return columns, [[k, e["op"], e["params"], f"{e['before']:.1%}", f"{e['after']:.1%}"] for k, e in layers.items()]
    if method == "channel":
        return ["layer", "channels before", "channels after"], [[k, e["out_before"], e["out_after"]] for k, e in layers.items()]
    if method == "lowrank":
        columns = ["layer", "K x N", "rank", "params before", "params after", "energy kept"]
        rows = [[k, "x".join(map(str, e["shape"])), e["rank"], e["params_before"], e["params_after"], f"{e['energy_kept']:.4f}"] for k, e in layers.items()]
        return columns, rows
    columns = ["layer", "mode", "clusters", "bytes before", "bytes after", "rel. error"]
    rows = [
        [k, e["mode"], e["clusters"], human_bytes(e["bytes_before"]), human_bytes(e["bytes_after"]), f"{e['relative_error']:.4f}"]
        for k, e in layers.items()
    ]
    return columns, rows


def _open_samples(data: str | None, reference: Any, samples: int | None, dims: tuple[str, ...], needed: bool, criterion: str) -> Any:
    """The data source for metrics / search / statistics (synthetic, announced, when no --data)."""
    if not needed:
        return None
    if data is None and criterion in DATA_CRITERIA:
        raise ConfigError(f"--criterion {criterion} ranks channels by their activations and needs --data")
    if data is None:
        echo(f"note: no --data given: metrics use {samples or 8} synthetic (random) samples, not real data")
    return open_source(data or "synthetic", reference, samples=samples or (None if data else 8), dims=parse_data_dims(dims))


def _search(m: ir.Model, method: str, name: str, options: dict[str, Any], values: dict[str, Any], source: Any, *,
            metric: str, max_drop: float, steps: str | None, channel_stats: Any) -> tuple[ir.Model, dict[str, Any], list[Skip], dict[str, Any]]:  # fmt: skip
    """Run :func:`prune_until`; return (best model, its pass stats, its skip records, the search report)."""
    from ..passes.pruning import prune_until

    key, top, to_value = _search_axis(method, values)
    plan = _steps(steps, top)
    found = prune_until(m, lambda s: make_pass(name, {**options, key: to_value(s)}), plan, source, metric=metric, tolerance=max_drop,
                        ctx_factory=lambda s: PassContext(channel_stats=channel_stats), budget_s=values.get("search_budget_s"))  # fmt: skip
    rows = [[c["step"], c["metric"], c["ok"], f"{c['sparsity']:.1%}", c["params"]] for c in found.curve]
    table(f"search ({metric}, max drop {max_drop})", ["step", metric, "ok", "weight sparsity", "float params"], rows)
    if found.best_model is None:
        first = found.curve[0]
        raise ConfigError(f"no step kept {metric} within {max_drop}: the first step ({first['step']}) gave {first['metric']:.6g}; try smaller --steps")
    echo(f"best step: {key} = {to_value(found.best_step)}" + (f" (time budget spent after {len(found.curve)} step(s))" if found.cut_short else ""))
    best = next(c for c in found.curve if c["step"] == found.best_step)
    curve = [{k: v for k, v in c.items() if k not in ("stats", "skips")} for c in found.curve]
    report = {"option": key, "steps": plan, "best_step": found.best_step, "curve": curve, "seconds": round(found.seconds, 3), "cut_short": found.cut_short}
    return found.best_model, best["stats"], best["skips"], report


def _evaluate(reference: Any, model: ir.Model, source: Any) -> tuple[dict[str, Any] | None, str]:
    """Compare with the original on ``source``: the metrics and a line to print (None, "" without data)."""
    if source is None:
        return None, ""
    evaluation = compare_models(reference, model, source)
    top1 = evaluation.output().top1_agreement
    line = f"vs original on {evaluation.samples} samples: cosine {evaluation.worst('cosine'):.6f}, SQNR {evaluation.worst('sqnr_db'):.2f} dB"
    return evaluation.as_dict(), line + (f", top-1 agreement {top1:.4f}" if top1 is not None else "")


@cli.command("prune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the pruned model.")
@click.option("--method", type=click.Choice(sorted(PASSES)), required=True, help="magnitude | nm | channel | lowrank | cluster.")
@click.option("--sparsity", type=float, help="magnitude: per-layer fraction of zeros; channel: fraction of channels removed per group.")
@click.option("--global-sparsity", type=float, help="magnitude: fraction of zeros over all layers (one ranking).")
@click.option("--threshold", type=float, help="magnitude: zero every |w| below this.")
@click.option("--normalize", type=click.Choice(["none", "l2", "mean"]), default="none", show_default=True,
              help="magnitude: per-layer normalization before the global ranking.")
@click.option("--nm", default="2:4", show_default=True, help="nm: N:M pattern (at most N non-zeros in M consecutive weights).")
@click.option("--rank", type=int, help="lowrank: rank of the factors.")
@click.option("--energy", type=float, help="lowrank: fraction of the squared singular values kept.")
@click.option("--flop-ratio", type=float, help="lowrank: target fraction of each layer's FLOPs.")
@click.option("--bits", type=int, help="cluster: codebook of 2**bits values (2..8, default 4).")
@click.option("--min-params", type=int, help="cluster: skip layers with fewer weights.")
@click.option("--criterion", type=click.Choice(["l1", "l2", *DATA_CRITERIA]), default="l1", show_default=True, help="channel: ranking.")
@click.option("--round-to", type=int, default=8, show_default=True, help="channel: keep channel counts multiples of this (1: exact ratio).")
@click.option("--min-channels", type=int, default=1, show_default=True, help="channel: never keep fewer channels.")
@click.option("--exclude", multiple=True, metavar="REGEX", help="Leave layers whose node name matches (repeatable).")
@click.option("--exclude-op", "exclude_ops", multiple=True, metavar="OP", help="Leave layers of this op type (repeatable).")
@click.option("--layer", "layers", multiple=True, metavar="NAME", help="Only these layers (repeatable).")
@click.option("--skip-first-last", is_flag=True, help="Leave the first and the last weight layer.")
@click.option("--data", help="Samples for metrics, the search and data-driven criteria: folder/.npz/.npy or 'synthetic[:N]'.")
@click.option("--samples", type=click.IntRange(min=1), help="Use at most N samples (default 8 synthetic ones without --data).")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE", help="Size of a symbolic input dim for synthetic data.")
@click.option("--max-drop", type=float,
              help="Search: raise the strength while the metric stays within this (cosine/top1: drop from 1; sqnr: minimum dB).")
@click.option("--metric", type=click.Choice(["cosine", "sqnr", "top1"]), default="cosine", show_default=True)
@click.option("--steps", help="Search steps, e.g. 0.1,0.2,0.3 (default: 0.1 up to --sparsity / 0.9).")
@click.option("--search-budget", "search_budget_s", type=click.FloatRange(min=0, min_open=True),
              help="Search: seconds after which no further step starts (the report says whether it cut the search).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write a JSON report (per-layer stats, search curve, metrics).")
def prune_cmd(
    model: str, output: str, method: str, exclude: tuple[str, ...], exclude_ops: tuple[str, ...], skip_first_last: bool, data: str | None,
    samples: int | None, dims: tuple[str, ...], max_drop: float | None, metric: str, steps: str | None, report: str | None, **values: Any,
) -> None:
    """Prune or compress MODEL's weights and write the result.

    Examples: `--method magnitude --sparsity 0.5`, `--method nm --nm 2:4`,
    `--method channel --sparsity 0.3`, `--method lowrank --energy 0.95`,
    `--method cluster --bits 4`, `--method magnitude --max-drop 0.01 --data calib/`.
    """
    reads = [Input("input model", model, model=True), Input("--data", data, data=True)]
    with RunOutputs([Output("-o", output, model=True), Output("--report", report)], reads) as outs:
        m = load_for_rewrite(model)
        reference = ir.clone(m)  # shares the weights: passes replace constants, never edit them
        name = PASSES[method]
        options = _options(method, values, exclude, exclude_ops, skip_first_last)
        criterion = values["criterion"]
        needed = max_drop is not None or data is not None or criterion in DATA_CRITERIA
        source = _open_samples(data, ir.to_proto(reference, weights=False), samples, dims, needed, criterion)
        before = _flops_and_sparsity(m, source)  # passes edit the model in place: measure first
        result_model, stats, skips, search = _prune(m, method, name, options, values, source, max_drop=max_drop, metric=metric, steps=steps)
        check_output(result_model, model, "pruned model")
        size_out = ir.stored_size(outs.write("-o", lambda path: ir.save(result_model, path)))
        metrics, metrics_line = _evaluate(reference, result_model, source)
        after = _flops_and_sparsity(result_model, source)
        size_in = ir.serialized_size(reference)
        summary = {"input": model, "output": output, "method": method, "pass": name, "options": options}
        sizes = {"bytes_before": size_in, "bytes_after": size_out}
        unchanged = [s.as_dict() for s in skips]
        results = {"before": before, "after": after, "stats": stats, "unchanged": unchanged, "search": search, "metrics": metrics}
        maybe_write_report(outs, "--report", report, {**summary, **sizes, **results})
    table(f"{name} per layer", *_layer_rows(method, stats))
    if skips:
        table("left unchanged", ["layer / group", "reason"], [[s.node, s.reason] for s in skips])
    if metrics_line:
        echo(metrics_line)
    echo(
        f"FLOPs {before['flops'] / 1e9:.4f} G → {after['flops'] / 1e9:.4f} G, weight sparsity {before['sparsity']:.1%} → {after['sparsity']:.1%}"
        + (" (FLOPs of nodes with unknown shapes not counted)" if after["unknown"] else "")
    )
    echo(f"wrote {output} ({human_bytes(size_in)} → {human_bytes(size_out)})")


def _prune(m: ir.Model, method: str, name: str, options: dict[str, Any], values: dict[str, Any], source: Any, *,
           max_drop: float | None, metric: str, steps: str | None) -> tuple[ir.Model, dict[str, Any], list[Skip], dict[str, Any] | None]:  # fmt: skip
    """Run the pass (or the ``--max-drop`` search); return (model, pass stats, skip records, search report)."""
    from ..passes.pruning import channel_stat_tensors, collect_channel_stats

    channel_stats = None
    if method == "channel" and values["criterion"] in DATA_CRITERIA:
        channel_stats = collect_channel_stats(m, source, channel_stat_tensors(ir.clone(m)))
    if max_drop is None and values.get("search_budget_s") is not None:
        raise ConfigError("--search-budget bounds the --max-drop search; give --max-drop")
    if max_drop is not None:
        return _search(m, method, name, options, values, source, metric=metric, max_drop=max_drop, steps=steps, channel_stats=channel_stats)
    ctx = PassContext(channel_stats=channel_stats)
    run = PassManager([make_pass(name, options)]).run(m, ctx)
    return run.model, run.records[-1].stats, ctx.skips, None


def _flops_and_sparsity(model: ir.Model, source: Any) -> dict[str, Any]:
    """FLOPs (input shapes from the first data sample when there is one) and weight sparsity."""
    from ..inspect import model_flops, weight_sparsity

    shapes = None
    if source is not None:
        first = next(iter(source), None)
        shapes = {k: list(np.shape(v)) for k, v in first.items()} if first else None
    flops = model_flops(model, shapes)
    return {"flops": flops["total"], "unknown": flops["nodes_with_unknown_shapes"], "sparsity": weight_sparsity(model)["overall"]}
