"""One conversion core: ``ConversionOptions`` → :func:`convert` → ``ConversionResult`` (model + typed report).

``onnxq convert``, :func:`quantize_static` and :func:`quantize_dynamic` are thin mappings onto
:func:`convert`, so the CLI and the API cannot drift: the same options build the same pipeline
(:mod:`onnxq.api.pipelines`, or a recipe), run by the same pass manager on a copy of the model,
checked by the full ONNX checker, and reported in the same :class:`ConversionReport`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import ir
from ..calibration.collector import replayable
from ..calibration.ranges import RangeSet
from ..context import PassContext
from ..errors import ConfigError, PreconditionError
from ..ir import Model
from ..pipeline import pipeline_from_data
from .options import ConversionOptions
from .pipelines import PipelineInputs, build_steps
from .report import ConversionReport

__all__ = ["ConversionResult", "convert", "quantize_static", "quantize_dynamic", "open_conversion_data"]

log = logging.getLogger(__name__)

#: Opsets tried, newest first, when a model is older than the pipeline's target.
FALLBACK_OPSETS = (17, 13)


@dataclass
class ConversionResult:
    """The converted model and its report."""

    model: Model
    report: ConversionReport

    def save(self, path: str | Path, *, external_data: bool | None = None) -> Path:
        """Write the model atomically (see :func:`onnxq.ir.save`) and record where in the report."""
        out = ir.save(self.model, path, external_data=external_data)
        self.report.output = str(path)
        self.report.bytes_after = Path(path).stat().st_size
        return out


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

    return open_source(data, ir.to_proto(model), dims=dict(dims or {}), samples=samples, image_preprocess=image_preprocess)


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
        ConfigError: invalid or inapplicable options, or static mode without data or ranges.
        OnnxqError: anything the passes refuse (bad data, unsupported model, ...).
    """
    if options is not None and option_values:
        raise ConfigError("give either options=ConversionOptions(...) or option keywords, not both")
    opts = options if options is not None else ConversionOptions.from_values(option_values)
    start = time.perf_counter()
    if ranges is not None and opts.mode != "static":
        raise ConfigError(f"--ranges applies to --mode static, not {opts.mode}")
    source_model = ir.load(model)
    if isinstance(ranges, (str, Path)):
        ranges = RangeSet.load_json(ranges)
    if opts.mode == "static" and data is None and ranges is None:
        raise ConfigError("static quantization needs --data (calibration samples) or --ranges FILE (precomputed ranges)")
    samples = open_conversion_data(data, source_model, samples=opts.samples, dims=dims, image_preprocess=image_preprocess)
    steps = build_steps(opts, PipelineInputs(has_data=samples is not None, has_ranges=ranges is not None))
    work = ir.clone(source_model)  # passes edit in place; the caller's model stays untouched
    steps, notes = _with_opset_fallback(steps, work)
    # Several passes read the samples (smoothing, calibration, tuning): a one-shot reader is
    # cached as it is consumed so each of them sees every sample.
    ctx = PassContext(calibration_data=replayable(samples) if samples is not None else None, ranges=ranges, progress=progress)
    result = pipeline_from_data(steps, where="conversion pipeline", check=check).run(work, ctx)
    ir.check(result.model, full=True)
    report = ConversionReport.from_context(
        model=source_model.source, mode=opts.mode, options=opts.as_dict(), pipeline=steps, ctx=ctx, records=result.records, notes=notes
    )
    report.bytes_before = _model_size(source_model)
    report.bytes_after = _model_size(result.model)
    report.seconds = time.perf_counter() - start
    return ConversionResult(result.model, report)


def quantize_static(model: Any, data: Any = None, *, ranges: RangeSet | str | Path | None = None, **option_values: Any) -> ConversionResult:
    """Static int8 quantization: :func:`convert` with ``mode="static"`` (see :class:`ConversionOptions`)."""
    return convert(model, data, ranges=ranges, mode="static", **option_values)


def quantize_dynamic(model: Any, data: Any = None, **option_values: Any) -> ConversionResult:
    """Dynamic int8 quantization: :func:`convert` with ``mode="dynamic"``; with ``data``, activations
    are smoothed first and the latency guard measures float against int8."""
    return convert(model, data, mode="dynamic", **option_values)


def _model_size(model: Model) -> int:
    return ir.to_proto(model).ByteSize()


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
