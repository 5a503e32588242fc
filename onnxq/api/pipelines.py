"""The default pipeline of each conversion mode, as data built from :class:`ConversionOptions`.

One function per mode in a registry (no if-chain); each returns a list of ``{"pass": name,
**options}`` steps — the same data a TOML recipe holds — so the CLI, the API and recipes all run
through :func:`onnxq.api.convert.convert` and the pass manager.

- static: upgrade-opset → cleanup → smooth-activations (with data) → expand-hardswish → calibrate →
  annotate-quantization [→ choose-weight-range: automatic 7-bit weights, with data] → tune-latency →
  insert-qdq → close-float-islands → choose-activation-forms [→ convert-qlinear]; with an
  accuracy target or a latency constraint: … → annotate-quantization → mixed-precision → insert-qdq →
  apply-precision-map → close-float-islands → choose-activation-forms [→ convert-qlinear] (at opset 21, for the search's int16 units)
- dynamic: cleanup → smooth-activations (with data) → quantize-dynamic [→ blockwise Gather tables]
- weight-only: cleanup → quantize-weights-blockwise (``algorithm`` rtn, or gptq / awq with data)
- fp16 / bf16: cleanup → convert-float16
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..plan import AccuracyGuardConfig, QuantizationConfig
from .options import ConversionOptions
from .recipes import load_recipe

__all__ = ["PipelineInputs", "MODE_PIPELINES", "build_steps", "mode_steps", "with_pass_options", "calibration_steps", "STATIC_OPSET", "WIDE_ACTIVATION_OPSET"]

#: Opset the static pipeline raises models to: cleanup's fusions (HardSwish: 14), per-channel Q/DQ
#: (13) and LayerNormalization (17) need it.
STATIC_OPSET = 17
#: 16-bit QuantizeLinear/DequantizeLinear need opset 21.
WIDE_ACTIVATION_OPSET = 21
#: SmoothQuant and tuning budget of the static pipeline (seconds).
TUNE_BUDGET_S = 15.0


@dataclass(frozen=True)
class PipelineInputs:
    """What the conversion was given besides options (some steps depend on it)."""

    has_data: bool
    has_ranges: bool


Step = dict[str, Any]
PipelineBuilder = Callable[[ConversionOptions, PipelineInputs], list[Step]]

#: annotate-quantization's options are ConversionOptions fields of the same names (it inherits them).
_QUANT_FIELDS = tuple(f.name for f in dataclasses.fields(QuantizationConfig))
_GUARD_FIELDS = tuple(f.name for f in dataclasses.fields(AccuracyGuardConfig))


def calibration_steps(o: ConversionOptions, *, smooth: bool) -> list[Step]:
    """The static pipeline's steps before ``calibrate``.

    ``onnxq calibrate`` runs them too (without smoothing, which ``--ranges`` conversions skip), so
    its ranges name the tensors ``onnxq convert --ranges`` quantizes: HardSwish is expanded into
    ``x · HardSigmoid(x)`` before calibration, and the HardSigmoid outputs need ranges.
    """
    # 16-bit activations need opset 21: for the whole plan, or for the mixed-precision search's int16 units
    wide = o.activation_dtype in ("int16", "uint16") or (o.tune and o.mixed_precision and o.recipe is None)
    target = WIDE_ACTIVATION_OPSET if wide else STATIC_OPSET
    # Upgrade first: cleanup's fusions and per-channel Q/DQ need the newer opset.
    steps: list[Step] = [{"pass": "upgrade-opset", "target": target}, {"pass": "cleanup"}]
    if smooth:
        steps.append({"pass": "smooth-activations", "alpha": o.smooth})
    steps.append({"pass": "expand-hardswish"})  # no CPU HardSwish kernel: x · HardSigmoid(x) gets a QLinearMul
    return steps


def _static(o: ConversionOptions, given: PipelineInputs) -> list[Step]:
    calib: Step = {
        "pass": "calibrate",
        "method": o.method,
        "options": {"percentile": o.percentile} if o.percentile is not None else {},
        "samples": o.samples or 0,
    }
    if o.max_memory_mb is not None:
        calib["max_memory_mb"] = o.max_memory_mb
    # Ranges measured on the unsmoothed model would not fit a smoothed one.
    steps = calibration_steps(o, smooth=o.smooth > 0 and not given.has_ranges)
    steps += [calib, {"pass": "annotate-quantization", **{k: getattr(o, k) for k in _QUANT_FIELDS}}]
    if o.reduce_range is None and given.has_data:
        # annotate's automatic 7-bit weights are all-or-nothing; measure which nodes really saturate
        steps.append({"pass": "choose-weight-range"})
    mixed = o.tune and o.mixed_precision
    if mixed:
        steps.append(_mixed_precision(o))
    elif o.tune:
        steps.append(
            {
                "pass": "tune-latency",
                "threads": o.threads,
                "budget_s": TUNE_BUDGET_S,
                **{k: getattr(o, k) for k in _GUARD_FIELDS},
                "replay": o.replay or "",
            }
        )
    steps.append({"pass": "insert-qdq"})
    if mixed:
        steps.append({"pass": "apply-precision-map"})
    # DQ -> float op -> Q detours onnxruntime has no int8 kernel for (HardSigmoid gates, ...) rewritten
    # into ops it fuses; after the Q/DQ exist, because the rules read their parameters.
    steps.append({"pass": "close-float-islands"})
    # Each quantized activation (SiLU, HardSwish, GELU...) in the form timed fastest on this model
    # (qlinear / table lookup / fused float); without tuning, today's form, untimed.
    steps.append({"pass": "choose-activation-forms", "form": "measure" if o.tune else "qlinear", "threads": o.threads, "replay": o.replay or ""})
    if o.format == "qoperator":
        steps.append({"pass": "convert-qlinear"})
    return steps


def _mixed_precision(o: ConversionOptions) -> Step:
    """``mixed-precision`` in place of ``tune-latency``: the targets, the guard's options, the timer's threads."""
    return {
        "pass": "mixed-precision",
        "threads": o.threads,
        **{k: getattr(o, k) for k in _GUARD_FIELDS},
        "accuracy_target": o.accuracy_target,
        "max_latency_ms": o.max_latency_ms,
        "min_speedup": o.min_speedup,
        "replay": o.replay or "",
    }


def _dynamic(o: ConversionOptions, given: PipelineInputs) -> list[Step]:
    steps: list[Step] = [{"pass": "cleanup"}]
    if given.has_data and o.smooth > 0:
        steps.append({"pass": "smooth-activations", "alpha": o.smooth})
    steps.append(
        {
            "pass": "quantize-dynamic",
            "per_channel": o.per_channel,
            "format": o.dynamic_format,
            "exclude_nodes": o.exclude_nodes,
            "reduce_range": o.reduce_range,
            "threads": o.threads,
        }
    )
    if o.include_gather:
        # Embedding tables as 8-bit blocks read by GatherBlockQuantized (only gathered rows are
        # dequantized), so int8 really quarters models whose embeddings dominate.
        steps.append({"pass": "quantize-weights-blockwise", "bits": 8, "block_size": 128, "include_gather": True, "scale_search": "mse"})
    return steps


def _weight_only(o: ConversionOptions, given: PipelineInputs) -> list[Step]:
    step: Step = {
        "pass": "quantize-weights-blockwise",
        "bits": o.weight_bits,
        "block_size": o.block_size,
        "symmetric": o.symmetric,
        "format": o.weight_format,
        "include_gather": o.include_gather,
        "exclude_names": o.exclude_nodes,
        "scale_search": o.scale_search,
        "upgrade_opset": o.weight_format == "qdq",
        "algorithm": o.algorithm,
    }
    if o.samples is not None:
        step["samples"] = o.samples
    if o.max_memory_mb is not None:
        step["max_memory_mb"] = o.max_memory_mb
    return [{"pass": "cleanup"}, step]


def _half(dtype: str) -> PipelineBuilder:
    def build(o: ConversionOptions, given: PipelineInputs) -> list[Step]:
        return [{"pass": "cleanup"}, {"pass": "convert-float16", "dtype": dtype, "keep_io_types": o.keep_io_types}]

    return build


#: mode → the function building its default pipeline.
MODE_PIPELINES: dict[str, PipelineBuilder] = {
    "static": _static,
    "dynamic": _dynamic,
    "weight-only": _weight_only,
    "fp16": _half("float16"),
    "bf16": _half("bfloat16"),
}


def build_steps(options: ConversionOptions, given: PipelineInputs) -> list[Step]:
    """The pipeline a conversion without a target runs: :func:`mode_steps` plus ``pass_options``.

    Raises:
        ConfigError: ``pass_options`` names a pass the pipeline does not run.
    """
    return with_pass_options(mode_steps(options, given), options.pass_options)


def mode_steps(options: ConversionOptions, given: PipelineInputs) -> list[Step]:
    """The recipe's steps, or the mode's default (a target adapts them before the pass options apply)."""
    return load_recipe(options.recipe) if options.recipe is not None else MODE_PIPELINES[options.mode](options, given)


def with_pass_options(steps: list[Step], extra: Mapping[str, Mapping[str, Any]]) -> list[Step]:
    """``steps`` with the user's per-pass options applied last (they win over what any builder set).

    Raises:
        ConfigError: ``extra`` names a pass ``steps`` does not run.
    """
    names = [s["pass"] for s in steps]
    unknown = sorted(set(extra) - set(names))
    if unknown:
        raise ConfigError(f"pass option(s) for {', '.join(unknown)}, which this pipeline does not run (it runs: {', '.join(names)})")
    return [{**s, **dict(extra.get(s["pass"], {}))} for s in steps]
