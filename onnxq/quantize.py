"""High-level entry points: ``quantize_static`` and the pipeline ``onnxq convert`` runs.

Both the CLI and the Python API go through :func:`static_pipeline` + :func:`run_conversion`, so
they produce the same model for the same inputs. The pipeline is plain data (pass names and
options) and can be replaced by a TOML recipe.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ir
from .calibration.ranges import RangeSet
from .errors import ConfigError, PreconditionError
from .ir import Model
from .pass_base import PassContext
from .pass_manager import PipelineResult
from .pipeline import pipeline_from_data

__all__ = [
    "ConversionResult",
    "MODES",
    "static_pipeline",
    "mode_pipeline",
    "run_conversion",
    "convert",
    "quantize_static",
    "quantize_dynamic",
    "STATIC_OPTION_NAMES",
]

log = logging.getLogger(__name__)


def _quant_config_fields() -> list[str]:
    from .passes.quantization.annotate import QuantizationConfig

    return [f.name for f in dataclasses.fields(QuantizationConfig)]


#: Keyword options of :func:`quantize_static` forwarded to the quantization config.
STATIC_OPTION_NAMES = (
    "activation_dtype",
    "activation_symmetric",
    "weight_dtype",
    "weight_symmetric",
    "per_channel",
    "reduce_range",
    "op_types",
    "exclude_op_types",
    "exclude_nodes",
    "include_nodes",
    "keep_first",
    "keep_last",
    "quantize_activation_matmul",
    "concat_range_ratio",
)


@dataclass
class ConversionResult:
    """The converted model and a JSON-ready report."""

    model: Model
    report: dict[str, Any] = field(default_factory=dict)


#: Default calibration: percentile 99.999 kept PP-OCRv4 recognition at fp32 accuracy where min-max
#: lost 4-6 points (outlier activations stretch min-max scales); equal elsewhere.
DEFAULT_METHOD = "percentile"


def static_pipeline(
    *,
    method: str = DEFAULT_METHOD,
    method_options: Mapping[str, Any] | None = None,
    format: str = "qdq",
    tune: bool = True,
    tune_threads: int = 1,
    tune_budget_s: float = 15.0,
    tune_options: Mapping[str, Any] | None = None,
    max_memory_mb: float | None = None,
    samples: int = 0,
    quant_options: Mapping[str, Any] | None = None,
    min_opset: int = 17,
    smooth: float | None = 0.5,
) -> list[dict[str, Any]]:
    """The default static-quantization pipeline as data.

    ``smooth`` (SmoothQuant alpha, None to skip) moves LayerNorm-output outliers into the following
    MatMul weights before calibration; it does nothing on models without LayerNorm → MatMul.
    """
    if format not in ("qdq", "qoperator"):
        raise ConfigError(f"--format must be qdq or qoperator, got '{format}'")
    quant = dict(quant_options or {})
    unknown = sorted(set(quant) - set(_quant_config_fields()))
    if unknown:
        raise ConfigError(f"unknown quantization option(s) {', '.join(unknown)}; valid: {', '.join(_quant_config_fields())}")
    calib: dict[str, Any] = {"pass": "calibrate", "method": method, "options": dict(method_options or {}), "samples": samples}
    if max_memory_mb is not None:
        calib["max_memory_mb"] = max_memory_mb
    steps: list[dict[str, Any]] = [
        # Upgrade first: cleanup's fusions (HardSwish: opset 14) and per-channel Q/DQ (13) need it.
        {"pass": "upgrade-opset", "target": min_opset},
        {"pass": "cleanup"},
    ]
    if smooth is not None:
        steps.append({"pass": "smooth-activations", "alpha": smooth})
    steps += [
        {"pass": "expand-hardswish"},  # no CPU HardSwish kernel: x · HardSigmoid(x) gets a QLinearMul
        calib,
        {"pass": "annotate-quantization", **quant},
    ]
    if tune:
        steps.append({"pass": "tune-latency", "threads": tune_threads, "budget_s": tune_budget_s, **dict(tune_options or {})})
    steps.append({"pass": "insert-qdq"})
    if format == "qoperator":
        steps.append({"pass": "convert-qlinear"})
    return steps


def _model_size(model: Model) -> int:
    return ir.to_proto(model).ByteSize()


#: Opsets tried, newest first, when a model is older than the pipeline's target.
FALLBACK_OPSETS = (17, 13)


def _pipeline_with_opset_fallback(steps: list[dict[str, Any]], model: Model) -> tuple[list[dict[str, Any]], list[str]]:
    """Keep the opset upgrade only when it works; otherwise fall back, finally to per-tensor weights.

    Per-channel ``DequantizeLinear(axis=...)`` needs opset 13 (HardSwish fusion 14, LayerNorm 17).
    Writing it into an older model gives a file onnxruntime refuses, so the opset is raised with
    onnx's version converter (newest target that converts cleanly) or weights go per-tensor (valid
    from opset 10) — and the report says which.
    """
    notes: list[str] = []
    index = next((i for i, s in enumerate(steps) if s["pass"] == "upgrade-opset"), None)
    if index is None or model.opset >= steps[index]["target"]:
        return steps, notes
    from .passes.cleanup.upgrade_opset import upgrade_opset

    wanted = steps[index]["target"]
    errors = []
    for target in [t for t in (wanted, *FALLBACK_OPSETS) if t <= wanted and t > model.opset] or [wanted]:
        try:
            upgrade_opset(ir.clone(model), target)
        except PreconditionError as e:
            errors.append(str(e))
            continue
        notes.append(f"opset upgraded from {model.opset} to {target}")
        steps = list(steps)
        steps[index] = {**steps[index], "target": target}
        if target < 13:
            steps = [{**s, "per_channel": False} if s["pass"] == "annotate-quantization" else s for s in steps]
        return steps, notes
    if model.opset < 10:
        raise PreconditionError(f"{model.source}: opset {model.opset} has no QuantizeLinear and the upgrade failed: {errors[-1]}")
    notes.append(f"opset upgrade failed ({errors[-1]}); weights quantized per-tensor at opset {model.opset}")
    out = [s for s in steps if s["pass"] != "upgrade-opset"]
    return [{**s, "per_channel": False} if s["pass"] == "annotate-quantization" else s for s in out], notes


def run_conversion(
    model: Model,
    steps: Sequence[Mapping[str, Any]],
    *,
    data: Any = None,
    ranges: RangeSet | None = None,
    check: bool | None = None,
    progress: bool = False,
) -> ConversionResult:
    """Run a conversion pipeline with calibration data / ranges in the context and build the report."""
    start = time.perf_counter()
    model = ir.clone(model)  # passes edit in place; the caller's model stays untouched
    size_before = _model_size(model)
    steps, notes = _pipeline_with_opset_fallback([dict(s) for s in steps], model)
    ctx = PassContext(progress=progress)
    if data is not None:
        from .calibration.collector import replayable

        # Several passes read the samples (smoothing, calibration, tuning): a one-shot reader is
        # cached as it is consumed so each of them sees every sample.
        ctx.artifacts["calibration_data"] = replayable(data)
    if ranges is not None:
        ctx.artifacts["ranges"] = ranges
    manager = pipeline_from_data(steps, where="conversion pipeline", check=check)
    result: PipelineResult = manager.run(model, ctx)
    out = result.model
    ir.check(out, full=True)
    report = _report(model.source, result, ctx, size_before, _model_size(out), time.perf_counter() - start, steps, notes)
    return ConversionResult(out, report)


def _report(source: str, result: PipelineResult, ctx: PassContext, before: int, after: int, seconds: float, steps: Sequence[Mapping[str, Any]], notes: list[str]) -> dict[str, Any]:
    plan = ctx.artifacts.get("quant_plan")
    ranges = ctx.artifacts.get("ranges")
    report: dict[str, Any] = {
        "model": source,
        "pipeline": [dict(s) for s in steps],
        "notes": notes + list(ctx.artifacts.get("notes", [])),
        "bytes_before": before,
        "bytes_after": after,
        "seconds": round(seconds, 3),
        "passes": [r.as_dict() for r in result.records],
    }
    if plan is not None:
        report["quantized_nodes"] = len(plan.quantized_nodes)
        report["float_nodes"] = [d.as_dict() for d in plan.float_nodes()]
        if ranges is not None:
            report["ranges"] = {
                name: {"min": ranges[name].min, "max": ranges[name].max, "group": tq.group}
                for name, tq in sorted(plan.activations.items())
                if name in ranges
            }
    if "latency_decisions" in ctx.artifacts:
        report["latency"] = ctx.artifacts["latency_decisions"]
    if "calibration_stats" in ctx.artifacts:
        report["calibration"] = ctx.artifacts["calibration_stats"].as_dict()
    return report


#: Conversion modes of ``onnxq convert --mode``.
MODES = ("static", "dynamic", "weight-only", "fp16", "bf16")


def mode_pipeline(mode: str, **options: Any) -> list[dict[str, Any]]:
    """The default pipeline (as data) of a conversion mode; ``options`` are that mode's pass options.

    - static: see :func:`static_pipeline`.
    - dynamic: cleanup → smooth-activations (when data is given) → quantize-dynamic.
    - weight-only: cleanup → quantize-weights-blockwise (MSE scale search by default).
    - fp16 / bf16: cleanup → convert-float16.
    """
    if mode == "static":
        return static_pipeline(**options)
    smooth = options.pop("smooth", None)
    if mode == "dynamic":
        include_gather = options.pop("include_gather", False)
        steps: list[dict[str, Any]] = [{"pass": "cleanup"}]
        if smooth is not None:
            steps.append({"pass": "smooth-activations", "alpha": smooth})
        steps.append({"pass": "quantize-dynamic", **options})
        if include_gather:
            # Embedding tables as 8-bit blocks read by GatherBlockQuantized (only gathered rows are
            # dequantized), so int8 really quarters models whose embeddings dominate.
            steps.append({"pass": "quantize-weights-blockwise", "bits": 8, "block_size": 128, "include_gather": True, "scale_search": "mse"})
        return steps
    if mode == "weight-only":
        options.setdefault("scale_search", "mse")
        if options.get("format") == "qdq":
            options.setdefault("upgrade_opset", True)
        return [{"pass": "cleanup"}, {"pass": "quantize-weights-blockwise", **options}]
    if mode in ("fp16", "bf16"):
        return [{"pass": "cleanup"}, {"pass": "convert-float16", "dtype": "float16" if mode == "fp16" else "bfloat16", **options}]
    raise ConfigError(f"unknown mode '{mode}'; valid: {', '.join(MODES)}")


def convert(
    model: Any,
    data: Any = None,
    *,
    mode: str = "static",
    ranges: RangeSet | str | Path | None = None,
    recipe: str | Path | None = None,
    samples: int = 0,
    **options: Any,
) -> ConversionResult:
    """Convert ``model`` with a mode's default pipeline (or a TOML recipe) — what ``onnxq convert`` does.

    ``options`` are the mode's options (see :func:`quantize_static` for static mode; the pass
    options of ``quantize-dynamic``, ``quantize-weights-blockwise`` or ``convert-float16``
    otherwise, plus ``smooth=alpha`` for dynamic mode with data).
    """
    if mode == "static":
        return quantize_static(model, data, ranges=ranges, recipe=recipe, samples=samples, **options)
    m = ir.load(model)
    if data is not None and (isinstance(data, (str, Path)) or not (hasattr(data, "__iter__") or callable(getattr(data, "get_next", None)))):
        from .data import open_source

        data = open_source(data, ir.to_proto(m), samples=samples or None)
    if recipe is not None:
        from .pipeline import load_pipeline_specs

        steps = [dict(s) for s in load_pipeline_specs(recipe)]
    else:
        if mode == "dynamic" and data is not None:
            options.setdefault("smooth", 0.5)
        steps = mode_pipeline(mode, **options)
    return run_conversion(m, steps, data=data)


def quantize_dynamic(model: Any, data: Any = None, **options: Any) -> ConversionResult:
    """Dynamic int8 quantization (see :func:`convert`); with ``data`` activations are smoothed first
    and the latency guard measures float vs int8."""
    return convert(model, data, mode="dynamic", **options)


def quantize_static(
    model: Any,
    data: Any = None,
    *,
    ranges: RangeSet | str | Path | None = None,
    method: str = DEFAULT_METHOD,
    percentile: float | None = None,
    format: str = "qdq",
    tune: bool = True,
    threads: int = 1,
    samples: int = 0,
    max_memory_mb: float | None = None,
    recipe: str | Path | None = None,
    **options: Any,
) -> ConversionResult:
    """Quantize ``model`` statically (int8 by default) and return the model plus a report.

    Args:
        model: a path, ModelProto, bytes or :class:`Model` (never modified).
        data: calibration samples: a data source, a path/"synthetic:N" spec, a list of feeds, or a
            CalibrationDataReader. Not needed with ``ranges``.
        ranges: a RangeSet (or JSON file from ``onnxq calibrate``) to reuse.
        method: calibration observer (minmax, percentile, entropy, mse, moving-average).
        format: ``qdq`` (QuantizeLinear/DequantizeLinear pairs) or ``qoperator`` (QLinear ops).
        tune: measure int8 vs float on onnxruntime and keep float where int8 is slower or costs
            accuracy beyond the targets (``min_agreement``, ``min_cosine``); ``replay=REPORT``
            re-applies a previous report's decisions without measuring (byte-identical output).
        threads: threads for latency tuning (1 by default: deployment on one core).
        recipe: a TOML pipeline replacing the default steps.
        **options: quantization options (see ``QuantizationConfig``: activation_dtype, per_channel,
            exclude_nodes, keep_first, ...).
    """
    m = ir.load(model)
    if isinstance(ranges, (str, Path)):
        ranges = RangeSet.load_json(ranges)
    if data is None and ranges is None:
        raise ConfigError("quantize_static needs calibration data or precomputed ranges")
    if data is not None and not hasattr(data, "__iter__") and not callable(getattr(data, "get_next", None)) or isinstance(data, (str, Path)):
        from .data import open_source

        data = open_source(data, ir.to_proto(m), samples=samples or None)
    if recipe is not None:
        from .pipeline import load_pipeline_specs

        steps = load_pipeline_specs(recipe)
    else:
        method_options = {"percentile": percentile} if percentile is not None and method == "percentile" else {}
        smooth = options.pop("smooth", 0.5)
        tune_options = {k: options.pop(k) for k in ("replay", "min_agreement", "min_cosine", "accuracy", "eval_samples", "max_accuracy_trials") if k in options}
        steps = static_pipeline(
            tune_options=tune_options,
            smooth=None if ranges is not None or not smooth else smooth,
            method=method,
            method_options=method_options,
            format=format,
            tune=tune,
            tune_threads=threads,
            samples=samples,
            max_memory_mb=max_memory_mb,
            quant_options=options,
        )
    return run_conversion(m, steps, data=data, ranges=ranges)
