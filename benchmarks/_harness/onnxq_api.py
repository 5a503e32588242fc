"""Every call the benchmarks make into onnxq, in one place.

The lead reorganizes onnxq's entry points; when they move, this adapter is the only benchmark code
to update. Each function imports onnxq lazily (the isolated children of the other tools must not
pay for it, and the scripts stay import-light). What each wraps:

* runtime: ``onnxq.runtime.session.make_session`` / ``run_session``, ``onnxq.runtime.bench.bench_sessions``
  (the interleaved round-robin timer), ``onnxq.runtime.evaluate.MetricAccumulator``;
* conversion: ``onnxq.quantize_static`` (bench_static), ``onnxq.convert`` (bench_dynamic), the static
  pipeline as data from ``onnxq.api.build_steps`` run by ``PassManager`` (bench_pruning's one pipeline with
  prune-channels inserted), and the facts of their :class:`~onnxq.api.ConversionReport`;
* passes and IR: ``onnxq.ir`` (load / clone / save / to_proto), ``PassManager`` + ``make_pass``;
* inspection: ``onnxq.inspect`` (parameters, FLOPs, weight sparsity);
* calibration: ``onnxq.calibration.collector.collect_ranges``; pruning's ``collect_channel_stats``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .report import one_line

__all__ = [
    "bench_sessions", "calibration_api", "calibration_summary", "channel_stats", "cleanup", "convert_file", "convert_saved", "flops",
    "load", "make_session", "node_count", "output_accumulator", "parameter_count", "proto_bytes", "quantize_static_file",
    "run_conversion", "run_passes", "run_session", "save", "static_steps", "weight_sparsity",
]


# ---- runtime ------------------------------------------------------------------------------------
def make_session(model: Any, *, threads: int = 1, where: str | None = None) -> Any:
    """An onnxruntime CPU session (fixed threads, no spinning at 1 thread) for a path or a model."""
    from onnxq.runtime.session import make_session as _make

    return _make(str(model) if isinstance(model, Path) else model, threads=threads, where=where)


def run_session(session: Any, feed: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run ``session`` on the feeds it declares (extra keys are ignored)."""
    from onnxq.runtime.session import run_session as _run

    return _run(session, dict(feed), outputs)


def bench_sessions(sessions: Sequence[Any], feed: Mapping[str, np.ndarray], *, runs: int, warmup: int) -> list[Any]:
    """Interleaved timing (round-robin, rotating start) of ``sessions`` on one feed: ``Timing`` each
    (``median_ms``, ``p90_ms``, ``runs``, ``samples_ms``, ``as_dict()``)."""
    from onnxq.runtime.bench import bench_sessions as _bench

    return _bench(list(sessions), [feed], runs=runs, warmup=warmup)


def output_accumulator(name: str) -> Any:
    """Streaming agreement of one output (``update(ref, cand)``, ``result()`` -> cosine, SQNR, top-1)."""
    from onnxq.runtime.evaluate import MetricAccumulator

    return MetricAccumulator(name)


# ---- conversions (run in isolated children) -----------------------------------------------------
def _float_reasons(report: Mapping[str, Any]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for f in report.get("float_nodes", []):
        key = one_line(re.sub(r"'[^']*'", "'…'", str(f.get("reason", "?"))).split(" (")[0], 70)
        reasons[key] = reasons.get(key, 0) + 1
    return reasons


def quantize_static_file(source: str, output: str, data: Any) -> dict[str, Any]:
    """``onnxq.quantize_static`` with defaults, saved; timed from the call to the saved file."""
    from onnxq import quantize_static

    start = time.perf_counter()
    result = quantize_static(source, data=data)
    result.save(output)
    seconds = time.perf_counter() - start
    report = result.report.to_dict()
    latency = report.get("latency") or {}
    return {
        "seconds": seconds,
        "notes": list(report.get("notes", [])),
        "quantized_nodes": report.get("quantized_nodes"),
        "float_nodes": len(report.get("float_nodes", [])),
        "float_reasons": _float_reasons(report),
        "tuner_steps": len(latency.get("steps", [])) if isinstance(latency, dict) else None,
        "pass_seconds": {p["pass"]: p["seconds"] for p in report.get("passes", [])},
    }


def _count(skipped: Any) -> int:
    """A pass's ``skipped`` stat: a count, or (older passes) the skipped nodes by name."""
    return skipped if isinstance(skipped, int) else len(skipped or {})


def _pass_note(name: str, s: Mapping[str, Any]) -> list[str]:
    if name == "smooth-activations":
        return [f"smoothed {s.get('smoothed', 0)} MatMuls"]
    if name == "quantize-dynamic":
        notes = [f"{s.get('quantized', 0)} quantized, {_count(s.get('skipped'))} float"]
        lat = s.get("latency") or {}
        if "float_ms" in lat:
            notes.append(f"guard {lat['float_ms']:.2f}->{lat['quantized_ms']:.2f} ms" + (" KEPT FLOAT" if lat.get("slower") else ""))
        return notes
    if name == "quantize-weights-blockwise":
        by_op = s.get("quantized_by_op") or {}
        return [f"{s.get('quantized', 0)} quantized ({', '.join(f'{k} {v}' for k, v in by_op.items()) or '-'}), "
                f"{_count(s.get('skipped'))} skipped"]
    if name == "convert-float16":
        return [f"{s.get('half_nodes', 0)} half nodes, {s.get('float_nodes', 0)} float, "
                f"{s.get('constants_storage_only', 0)} storage-only weights"]
    return []


def convert_file(source: str, output: str, data: Any, mode: str, **options: Any) -> list[str]:
    """``onnxq.convert(source, data, mode=..., **options)``, saved; the report facts worth a cell."""
    from onnxq import convert

    result = convert(source, data, mode=mode, **options)
    result.save(output)
    report = result.report.to_dict()
    notes = [one_line(n, 120) for n in report.get("notes", [])]
    for p in report.get("passes", []):
        notes += _pass_note(p["pass"], p.get("stats") or {})
    return notes


def convert_saved(source: str, output: str, data: Any, mode: str, **options: Any) -> dict[str, Any]:
    """``onnxq.convert`` saved to ``output``: wall seconds (the call and the save) and every pass's stats
    (``{"seconds": s, "passes": {name: stats}}``; bench_weight_only reads GPTQ/AWQ's timings there)."""
    from onnxq import convert

    start = time.perf_counter()
    result = convert(source, data, mode=mode, **options)
    result.save(output)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "passes": {p["pass"]: dict(p.get("stats") or {}) for p in result.report.to_dict().get("passes", [])}}


# ---- IR, passes, pipelines (bench_pruning, bench_foundation) -------------------------------------
def load(model: Any) -> Any:
    """``onnxq.ir.load`` of a path or a ModelProto."""
    from onnxq import ir

    return ir.load(model)


def save(model: Any, path: str | Path) -> None:
    from onnxq import ir

    ir.save(model, path)


def node_count(model: Any) -> int:
    return len(model.graph.nodes)


def proto_bytes(model: Any) -> bytes:
    from onnxq import ir

    return ir.to_proto(model).SerializeToString()


def cleanup(model: Any, *, copy: bool = True, check: bool | None = None) -> Any:
    """The ``cleanup`` pass on ``model`` (on a clone unless ``copy=False``)."""
    from onnxq import PassManager, ir, make_pass

    return PassManager([make_pass("cleanup")], check=check).run(ir.clone(model) if copy else model).model


def run_passes(model: Any, steps: Sequence[tuple[str, Mapping[str, Any]]], *, channel_stats: Any = None) -> tuple[Any, dict[str, Any]]:
    """Run ``steps`` on a clone of ``model``; returns the result and the last pass's stats."""
    from onnxq import PassContext, PassManager, ir, make_pass

    ctx = PassContext(channel_stats=channel_stats)
    result = PassManager([make_pass(name, dict(opts)) for name, opts in steps]).run(ir.clone(model), ctx)
    return result.model, dict(result.records[-1].stats) if result.records else {}


def channel_stats(model: Any, samples: Sequence[Mapping[str, np.ndarray]]) -> Any:
    """Per-channel activation statistics for data-driven channel pruning."""
    from onnxq.passes.pruning import channel_stat_tensors, collect_channel_stats

    return collect_channel_stats(model, samples, channel_stat_tensors(model))


def static_steps(*, tune: bool, tune_budget_s: float) -> list[dict[str, Any]]:
    """onnxq's default static int8 pipeline as data (what ``convert(mode="static")`` runs given data), tuned at 1 thread."""
    from onnxq.api import ConversionOptions
    from onnxq.api.pipelines import PipelineInputs, build_steps

    options = ConversionOptions(mode="static", tune=tune, threads=1, pass_options={"tune-latency": {"budget_s": tune_budget_s}} if tune else {})
    return build_steps(options, PipelineInputs(has_data=True, has_ranges=False))


def run_conversion(model: Any, steps: Sequence[Mapping[str, Any]], data: Any) -> tuple[Any, dict[str, Any]]:
    """Run a conversion pipeline on a clone of ``model``, fed ``data``; returns the model and the report as a dict."""
    from onnxq import PassContext, ir
    from onnxq.api import ConversionReport
    from onnxq.calibration.collector import replayable
    from onnxq.pipeline import pipeline_from_data

    ctx = PassContext(calibration_data=replayable(data))
    res = pipeline_from_data(list(steps), where="benchmark pipeline").run(ir.clone(model), ctx)
    ir.check(res.model, full=True)
    report = ConversionReport.from_context(model="benchmark", mode="static", options={}, pipeline=list(steps), ctx=ctx, records=res.records, notes=[])
    return res.model, report.to_dict()


# ---- inspection ---------------------------------------------------------------------------------
def parameter_count(model: Any) -> int:
    from onnxq.inspect import summarize

    return int(summarize(model, flops=False)["parameters"]["count"])


def weight_sparsity(model: Any) -> float:
    from onnxq.inspect import weight_sparsity as _sparsity

    return float(_sparsity(model)["overall"])


def flops(model: Any, shapes: Mapping[str, list[int]], feeds: Mapping[str, np.ndarray] | None = None) -> int | None:
    """``onnxq.inspect.model_flops``; where its shape inference leaves compute nodes unknown (the
    transformer: onnx cannot follow Shape -> Slice of position_ids) and ``feeds`` are given, the
    shapes are read from one onnxruntime run instead (:func:`_runtime_flops`)."""
    from onnxq.inspect import model_flops

    try:
        res = model_flops(model, dict(shapes))
        if res.get("nodes_with_unknown_shapes") and feeds is not None:
            return _runtime_flops(model, feeds)
        return int(res["total"])
    except Exception:  # noqa: BLE001 - a FLOP count is informative, never fatal
        return None


def _runtime_flops(model: Any, feeds: Mapping[str, np.ndarray]) -> int:
    """FLOPs (2 per multiply-add) of Conv / ConvTranspose / Gemm / MatMul from the shapes seen in one run."""
    import onnx

    from onnxq import ir

    graph = (proto := ir.to_proto(model)).graph
    consts = {t.name: list(t.dims) for t in graph.initializer}
    compute = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    known = {o.name for o in graph.output} | {i.name for i in graph.input}
    wanted: list[str] = []
    for n in compute:
        wanted += [t for t in (n.input[0], n.output[0], n.input[1]) if t not in consts and t not in known and t not in wanted]
    graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in wanted)
    sess = make_session(proto, threads=1, where="flop count")
    got = dict(zip((o.name for o in sess.get_outputs()), (np.shape(v) for v in run_session(sess, feeds))))
    got.update({k: np.shape(v) for k, v in feeds.items()})
    got.update(consts)
    total = 0
    for n in compute:
        x, w, y = got.get(n.input[0]), got.get(n.input[1]), got.get(n.output[0])
        if x is None or w is None or y is None:
            continue
        if n.op_type == "Conv":
            total += 2 * int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose":
            total += 2 * int(np.prod(x)) * int(np.prod(w[1:]))
        else:
            trans_a = any(a.name == "transA" and a.i for a in n.attribute)
            total += 2 * int(np.prod(y)) * int(x[0] if trans_a else x[-1])
    return total


# ---- calibration (bench_calibration) ------------------------------------------------------------
def calibration_api() -> tuple[Callable[[str], Any], Callable[[Any, Iterable[Mapping[str, np.ndarray]], str, Mapping[str, Any]], tuple[Any, Any]]]:
    """``(load, collect_ranges)`` with onnxq already imported, so that a clock started after this
    call leaves the imports out. ``collect_ranges(model, samples, method, options)`` is onnxq's
    streaming calibration on the model as loaded and returns ``(ranges, stats)``."""
    from onnxq import ir
    from onnxq.calibration.collector import collect_ranges

    def collect(model: Any, samples: Iterable[Mapping[str, np.ndarray]], method: str, options: Mapping[str, Any]) -> tuple[Any, Any]:
        return collect_ranges(model, samples, method=method, options=dict(options), progress=False)

    return ir.load, collect


def calibration_summary(ranges: Any, stats: Any, keep_ranges: bool) -> dict[str, Any]:
    """The facts of one ``collect_ranges`` run worth reporting (ranges as ``[min, max]`` lists)."""
    return {
        "samples": stats.samples,
        "tensors": len(ranges),
        "groups": stats.groups,
        "saturating": len(stats.saturating),
        "unreachable": len(stats.as_dict()["unreachable"]),
        "ranges": {name: [r.min, r.max] for name, r in ranges.items()} if keep_ranges else None,
    }
