"""One conversion core: ``ConversionOptions`` → :func:`convert` → ``ConversionResult`` (model + typed report).

``onnxq convert``, :func:`quantize_static` and :func:`quantize_dynamic` are thin mappings onto
:func:`convert`, so the CLI and the API cannot drift: the same options build the same pipeline
(:mod:`onnxq.api.pipelines`, or a recipe), run by the same pass manager on a copy of the model,
checked by the full ONNX checker, and reported in the same :class:`ConversionReport`.
:func:`prepare_for_calibration` runs the static pipeline's steps before calibration, so
``onnxq calibrate`` measures the tensors ``onnxq convert --ranges`` needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import ir
from ..calibration.collector import replayable
from ..calibration.ranges import RangeSet
from ..context import PassContext
from ..data import DataSource
from ..errors import ConfigError, PreconditionError
from ..ir import Model
from ..pipeline import pipeline_from_data
from ._loading import check_output, load_model, raise_ir_floor
from .options import ConversionOptions
from .pipelines import PipelineInputs, calibration_steps, mode_steps, with_pass_options
from .report import ConversionReport, model_digest
from .targets import adapt_steps, check_result, conversion_target, write_artifacts

__all__ = ["ConversionResult", "convert", "quantize_static", "quantize_dynamic", "open_conversion_data", "prepare_for_calibration"]

log = logging.getLogger(__name__)

#: Opsets tried, newest first, when a model is older than the pipeline's target.
FALLBACK_OPSETS = (17, 13)


@dataclass
class ConversionResult:
    """The converted model and its report (and, for some targets, files to write beside it: the
    ``.ort`` and its reduced build's operator config for ``ort-mobile``, keyed by suffix)."""

    model: Model
    report: ConversionReport
    artifacts: dict[str, bytes] = field(default_factory=dict)

    def save(self, path: str | Path, *, external_data: bool | None = None, artifacts: bool = True) -> Path:
        """Write the model atomically (see :func:`onnxq.ir.save`) and record where in the report;
        with ``artifacts``, also the target's files beside it (``m.onnx`` → ``m.ort``, ...)."""
        out = ir.save(self.model, path, external_data=external_data)
        if artifacts and self.artifacts:
            write_artifacts(path, self.artifacts)
        self.report.output = str(path)
        self.report.bytes_after = ir.stored_size(path)  # the .onnx and its data file
        return out

    def write_html(
        self, path: str | Path, source: Any = None, data: Any = None, *, samples: int | None = 32, dims: Mapping[str, int] | None = None,
        image_preprocess: str | None = None, progress: bool = False, top: int = 6,
    ) -> Path:
        """Write the report as a self-contained HTML page (what ``onnxq convert --report-html`` writes).

        The page shows the decisions (nodes left float with their reasons, tuner steps and latencies,
        accuracy guards) and, given ``source`` (the float model converted) and ``data``, the layer-wise
        error of the result on at most ``samples`` samples (:func:`onnxq.debug.compare_layers`; a
        result without quantized activations gets a note instead). Save the model first so the page
        names the output. Atomic.

        Raises:
            ConfigError: matplotlib is missing (``pip install 'onnxq[report]'``).
        """
        from ..debug import NothingQuantizedError, compare_layers, require_matplotlib, write_html

        require_matplotlib()
        conversion = self.report.to_dict()
        layers = None
        if source is not None and data is not None:
            try:
                layers = compare_layers(source, self.model, data, samples=samples, dims=dims, image_preprocess=image_preprocess, progress=progress)
            except NothingQuantizedError:
                conversion["notes"] = [*conversion["notes"], "no layer-wise section: the result has no quantized activations (weights only, or dynamic)"]
        return write_html(path, layers, conversion=conversion, top=top)


def open_conversion_data(data: Any, model: Model, *, samples: int | None, dims: Mapping[str, int] | None = None, image_preprocess: str | None = None) -> Any:
    """Turn ``data`` into samples: a path or ``synthetic:N`` spec is opened for ``model``'s inputs.

    Data sources, lists of feeds and CalibrationDataReader objects are used as they are.
    """
    if data is None:
        return None
    is_samples = (hasattr(data, "__iter__") or callable(getattr(data, "get_next", None))) and not isinstance(data, (str, Path))
    if is_samples:
        return data
    from ..data import open_source

    return open_source(data, ir.to_proto(model, weights=False), dims=dict(dims or {}), samples=samples, image_preprocess=image_preprocess)


def convert(
    model: Any,
    data: Any = None,
    *,
    ranges: RangeSet | str | Path | None = None,
    options: ConversionOptions | None = None,
    dims: Mapping[str, int] | None = None,
    image_preprocess: str | None = None,
    progress: bool = False,
    check: bool | None = None,
    **option_values: Any,
) -> ConversionResult:
    """Convert ``model`` — what ``onnxq convert`` does, option for option.

    Args:
        model: a path, ModelProto, bytes or :class:`Model` (never modified).
        data: calibration / sample data: a path or ``synthetic:N`` spec, a data source, a list of
            feeds, or a CalibrationDataReader. Static mode needs it unless ``ranges`` are given.
        ranges: a RangeSet (or a JSON file from ``onnxq calibrate``) to reuse.
        options: a :class:`ConversionOptions`; or give its fields as keywords (``option_values``).
        dims / image_preprocess: how ``data`` specs are opened (symbolic dim sizes, image pipeline).
        progress: draw progress bars (on a terminal).
        check: run the ONNX checker after every pass (default: on under the test suite).

    Returns:
        The converted model (already checked with ``full_check``) and its report.

    Raises:
        ConfigError: invalid or inapplicable options, static mode without data or ranges, or a
            ``replay`` report that is malformed or was made for another model.
        OnnxqError: anything the passes refuse (bad data, unsupported model, ...).
        InternalError: the converted model fails the checker (a bug in onnxq, not in the input).
    """
    if options is not None and option_values:
        raise ConfigError("give either options=ConversionOptions(...) or option keywords, not both")
    opts = options if options is not None else ConversionOptions.from_values(option_values)
    start = time.perf_counter()
    _check_inputs(opts, data, ranges)
    source_model = load_model(model)
    _refuse_quantized(source_model, opts)
    digest = model_digest(source_model)
    if opts.replay:
        _check_replay(opts.replay, source_model, digest)
    if isinstance(ranges, (str, Path)):
        ranges = RangeSet.load_json(ranges)
    samples = open_conversion_data(data, source_model, samples=opts.samples, dims=dims, image_preprocess=image_preprocess)
    if opts.mode != "static" and isinstance(samples, DataSource):
        _read_all(samples)
    profile = conversion_target(opts)
    # the target adapts the mode's steps first, so the user's pass options apply to (and win over) its steps too
    steps, target_notes = adapt_steps(opts, profile, mode_steps(opts, PipelineInputs(has_data=samples is not None, has_ranges=ranges is not None)))
    steps = with_pass_options(steps, opts.pass_options)
    work = raise_ir_floor(ir.clone(source_model))  # passes edit in place; the caller's model stays untouched
    steps, notes = _with_opset_fallback(steps, work)
    notes += target_notes
    # Several passes read the samples (smoothing, calibration, tuning): a one-shot reader is
    # cached as it is consumed so each of them sees every sample.
    ctx = PassContext(calibration_data=replayable(samples) if samples is not None else None, ranges=ranges, progress=progress)
    result = pipeline_from_data(steps, where="conversion pipeline", check=check).run(work, ctx)
    check_output(result.model, source_model.source, f"{opts.mode} conversion")
    checked = check_result(opts, profile, result.model, source_model, ctx.calibration_data) if profile is not None else None
    report = ConversionReport.from_context(
        model=source_model.source, mode=opts.mode, options=opts.as_dict(), pipeline=steps, ctx=ctx, records=result.records, notes=notes
    )
    if checked is not None:
        report.target = checked.to_dict()
        report.notes += [n for n in checked.notes if n not in report.notes]
    report.model_digest = digest
    report.bytes_before = _model_size(source_model)
    report.bytes_after = _model_size(result.model)
    report.seconds = time.perf_counter() - start
    artifacts = checked.validation.artifacts if checked is not None and checked.validation is not None else {}
    return ConversionResult(result.model, report, artifacts)


def prepare_for_calibration(model: Any, options: ConversionOptions | None = None) -> tuple[Model, list[str]]:
    """``model`` as the static pipeline calibrates it: upgrade-opset → cleanup → expand-hardswish.

    Ranges collected on the result name the tensors ``convert(..., ranges=...)`` needs (HardSwish
    is expanded into ``x · HardSigmoid(x)`` before calibration, so the HardSigmoid outputs need
    ranges too). ``model`` is not modified.

    Returns:
        The prepared copy and the notes of the run (an opset upgrade, a fallback).
    """
    opts = options if options is not None else ConversionOptions()
    work = raise_ir_floor(load_model(model))  # loading a Model clones it
    steps, notes = _with_opset_fallback(calibration_steps(opts, smooth=False), work)
    return pipeline_from_data(steps, where="calibration preparation").run(work).model, notes


def _check_inputs(opts: ConversionOptions, data: Any, ranges: Any) -> None:
    """Refuse data or ranges the mode does not use, and static mode with neither."""
    if ranges is not None and opts.mode != "static":
        raise ConfigError(f"--ranges applies to --mode static, not {opts.mode}")
    if opts.mode == "static" and data is None and ranges is None:
        raise ConfigError("static quantization needs --data (calibration samples) or --ranges FILE (precomputed ranges)")
    calibrated = opts.mode == "weight-only" and opts.algorithm != "rtn" and opts.recipe is None
    if calibrated and data is None:
        raise ConfigError(f"--algorithm {opts.algorithm} needs calibration samples: give --data (a folder, a file or 'synthetic:N') or use --algorithm rtn")
    if data is not None and opts.mode not in _DATA_MODES and not calibrated and opts.recipe is None:
        also = " and to --mode weight-only with --algorithm gptq or awq" if opts.mode == "weight-only" else ""
        raise ConfigError(f"--data does not apply to --mode {opts.mode} (it applies to: {', '.join(sorted(_DATA_MODES))}{also})")


#: Modes whose default pipeline reads samples (static: calibration; dynamic: smoothing, latency guard).
_DATA_MODES = frozenset({"static", "dynamic"})
#: Modes that quantize: running one on a quantized model would quantize twice (or do nothing).
_QUANTIZING_MODES = frozenset({"static", "dynamic", "weight-only"})


def _refuse_quantized(model: Model, opts: ConversionOptions) -> None:
    """Refuse to quantize a model that is already quantized (a recipe may still do anything)."""
    if opts.mode not in _QUANTIZING_MODES or opts.recipe is not None:
        return
    from ..inspect import QUANT_OPS

    found = sorted({n.op for n in ir.iter_nodes(model.graph) if n.op in QUANT_OPS or n.op.startswith("QLinear")})
    if found:
        raise PreconditionError(f"{model.source}: the model is already quantized (found {', '.join(found)}); convert the float model instead")


def _read_all(source: DataSource) -> None:
    """Read (and so validate) every sample once: calibration does so in static mode, but dynamic mode
    may read only a few, and a NaN or a wrong shape further on must not pass unnoticed."""
    for _ in source:
        pass


def _check_replay(path: str, model: Model, digest: str) -> None:
    """Refuse a ``replay`` report that is malformed, of another mode, or made for another model."""
    report = ConversionReport.load(path)
    if report.mode != "static":
        raise ConfigError(f"--replay '{path}': a report of a {report.mode} conversion; only static conversions have tuning decisions to replay")
    if not report.model_digest:
        raise ConfigError(f"--replay '{path}': the report does not record which model it was made for (no model_digest); convert again with --report")
    if report.model_digest != digest:
        raise ConfigError(f"--replay '{path}': the report was made for another model ('{report.model}'), not '{model.source}' (structural digests differ)")


def quantize_static(model: Any, data: Any = None, *, ranges: RangeSet | str | Path | None = None, **option_values: Any) -> ConversionResult:
    """Static int8 quantization: :func:`convert` with ``mode="static"`` (see :class:`ConversionOptions`)."""
    return convert(model, data, ranges=ranges, mode="static", **option_values)


def quantize_dynamic(model: Any, data: Any = None, **option_values: Any) -> ConversionResult:
    """Dynamic int8 quantization: :func:`convert` with ``mode="dynamic"``; with ``data``, activations
    are smoothed first and the latency guard measures float against int8."""
    return convert(model, data, mode="dynamic", **option_values)


def _model_size(model: Model) -> int:
    return ir.serialized_size(model)


def _with_opset_fallback(steps: list[dict[str, Any]], model: Model) -> tuple[list[dict[str, Any]], list[str]]:
    """Keep the opset upgrade only when it works; otherwise fall back, finally to per-tensor weights.

    Per-channel ``DequantizeLinear(axis=...)`` needs opset 13 (HardSwish fusion 14, LayerNorm 17).
    Writing it into an older model gives a file onnxruntime refuses, so the opset is raised with
    onnx's version converter (newest target that converts cleanly) or weights go per-tensor (valid
    from opset 10) — and the report says which.
    """
    index = next((i for i, s in enumerate(steps) if s["pass"] == "upgrade-opset"), None)
    if index is None or model.opset >= steps[index]["target"]:
        return steps, []
    from ..passes.cleanup.upgrade_opset import upgrade_opset

    wanted = steps[index]["target"]
    errors = []
    for target in [t for t in (wanted, *FALLBACK_OPSETS) if model.opset < t <= wanted] or [wanted]:
        try:
            upgrade_opset(ir.clone(model), target)
        except PreconditionError as e:
            errors.append(str(e))
            continue
        steps = list(steps)
        steps[index] = {**steps[index], "target": target}
        return (_per_tensor(steps) if target < 13 else steps), [f"opset upgraded from {model.opset} to {target}"]
    if model.opset < 10:
        raise PreconditionError(f"{model.source}: opset {model.opset} has no QuantizeLinear and the upgrade failed: {errors[-1]}")
    note = f"opset upgrade failed ({errors[-1]}); weights quantized per-tensor at opset {model.opset}"
    return _per_tensor([s for s in steps if s["pass"] != "upgrade-opset"]), [note]


def _per_tensor(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**s, "per_channel": False} if s["pass"] == "annotate-quantization" else s for s in steps]
