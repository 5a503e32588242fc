"""The incumbent's tools as a user runs them: every call into ``onnxruntime.quantization`` (and the
fp16 converters), configured as the benchmarks compare them. Imports are lazy: these run in the
isolated conversion children.

* :func:`quantize_static`: QDQ, ``per_channel=True``, QUInt8 activations, QInt8 weights, after what a
  user needs to make it load — ``onnx.version_converter`` to opset 13 when older, then
  ``quant_pre_process`` (its failure is caught and noted; quantization goes on without it);
  Percentile at 99.999 like onnxq's default. ``CalibMaxIntermediateOutputs`` is not used:
  onnxruntime drops each full chunk's ranges.
* :func:`quantize_dynamic`: QInt8 weights, ``per_channel`` as given, everything else at its defaults.
* :func:`matmul_nbits`: ``MatMulNBitsQuantizer`` + ``DefaultWeightOnlyQuantConfig`` (round-to-nearest
  min/max, 4 bits, asymmetric, QOperator = MatMulNBits) at a block size and ``accuracy_level``.
* :func:`float16`: ``convert_float_to_float16(keep_io_types=True)`` of onnxruntime.transformers or
  onnxconverter_common.
* :func:`calibrate`: ``create_calibrator`` + ``collect_data`` + ``compute_data`` (bench_calibration).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .data import NpzReader
from .report import describe_exception

__all__ = ["calibrate", "float16", "matmul_nbits", "quantize_dynamic", "quantize_static"]


def _upgrade_and_preprocess(source: str, tmp: Path, notes: list[str]) -> str:
    """Opset 13 when older, then ``quant_pre_process``; returns the file to quantize."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(source)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        try:
            upgraded = version_converter.convert_version(model, 13)
            path = tmp / "opset13.onnx"
            onnx.save(upgraded, str(path))
            source = str(path)
            notes.append(f"opset {opset}->13")
        except Exception as e:  # noqa: BLE001
            notes.append(f"opset upgrade failed: {describe_exception(e)}")
    del model
    try:
        path = tmp / "pre.onnx"
        quant_pre_process(source, str(path))
        source = str(path)
        notes.append("pre_process ok")
    except Exception as e:  # noqa: BLE001 - fails on many real models; quantize without it
        notes.append(f"quant_pre_process failed: {describe_exception(e)}")
    return source


def quantize_static(source: str, output: str, calib: str, method: str, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The incumbent's static QDQ quantization (``method``: MinMax | Percentile), timed from loading
    the model to the written file; returns ``{"seconds", "notes"}``.

    ``config`` replaces the keyword arguments above (bench_speed's configurations): ``{"defaults":
    True}`` calls ``quantize_static(model, output, reader)`` with onnxruntime's own defaults; other
    keys (``per_channel``, ``reduce_range``, ``op_types_to_quantize``, ``extra_options``, and
    ``activation_type`` / ``weight_type`` / ``quant_format`` by enum name) override the ones here.
    """
    import onnx  # noqa: F401 - imported before the clock starts, like the rest
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: F401

    notes: list[str] = []
    tmp = Path(output).parent / f".{Path(output).stem}.work"
    tmp.mkdir(exist_ok=True)
    # quant_pre_process / symbolic shape inference write scratch files (uuid-named .data,
    # sym_shape_infer_temp.onnx) into the working directory: keep them out of the repository.
    os.chdir(tmp)
    start = time.perf_counter()
    source = _upgrade_and_preprocess(str(Path(source).resolve()), tmp, notes)
    # No CalibMaxIntermediateOutputs: in onnxruntime 1.2x-1.32 MinMaxCalibrater.collect_data clears the
    # collected chunk without computing its ranges, so only the last partial chunk would count.
    extra = {"CalibPercentile": 99.999} if method == "Percentile" else {}
    kwargs: dict[str, Any] = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                                  weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method), extra_options=extra)
    config = dict(config or {})
    if config.pop("defaults", False):
        kwargs = {}
    enums = {"activation_type": QuantType, "weight_type": QuantType, "quant_format": QuantFormat}
    for key, value in config.items():
        kwargs[key] = getattr(enums[key], value) if key in enums else ({**extra, **value} if key == "extra_options" else value)
    ort_quantize_static(source, output, NpzReader(calib), **kwargs)
    seconds = time.perf_counter() - start
    shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": seconds, "notes": notes}


def quantize_dynamic(source: str, output: str, per_channel: bool) -> list[str]:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ort_quantize_dynamic(source, output, per_channel=per_channel, weight_type=QuantType.QInt8)
    return []


def matmul_nbits(source: str, output: str, block_size: int, accuracy_level: int | None) -> list[str]:
    import onnx
    from onnxruntime.quantization import QuantFormat

    if importlib.util.find_spec("onnx_ir") is None:  # matmul_nbits_quantizer imports it at module level
        raise ImportError("onnxruntime's MatMulNBitsQuantizer needs onnx_ir: pip install onnx-ir")
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=False, bits=4,
                                          accuracy_level=accuracy_level, quant_format=QuantFormat.QOperator)
    quant = MatMulNBitsQuantizer(onnx.load(source), algo_config=config)
    quant.process()
    quant.model.save_model_to_file(output, False)
    return [f"accuracy_level {accuracy_level}"]


def float16(source: str, output: str, package: str = "onnxruntime") -> list[str]:
    """fp16 weights and compute, float32 inputs/outputs (``package``: onnxruntime | onnxconverter_common)."""
    import onnx

    if package == "onnxruntime":
        from onnxruntime.transformers.float16 import convert_float_to_float16
    else:
        from onnxconverter_common.float16 import convert_float_to_float16
    onnx.save(convert_float_to_float16(onnx.load(source), keep_io_types=True), output)
    return []


def has_onnxconverter_common() -> bool:
    return importlib.util.find_spec("onnxconverter_common") is not None


def calibrate(model_path: str, samples: Iterable[Mapping[str, Any]], method: str, options: Mapping[str, Any], workdir: str) -> dict[str, Any]:
    """``create_calibrator`` + ``collect_data`` + ``compute_data`` with phase timings and the ranges."""
    import numpy as np
    import onnxruntime
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(samples)
            self.count = 0

        def get_next(self) -> Mapping[str, Any] | None:
            item = next(self.it, None)
            self.count += item is not None
            return item

    kind = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]
    tmp = tempfile.mkdtemp(prefix="incumbent-", dir=workdir)
    try:
        start = time.perf_counter()
        calibrator = create_calibrator(model_path, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=kind, extra_options=dict(options))
        created = time.perf_counter()
        reader = Reader()
        calibrator.collect_data(reader)
        collected = time.perf_counter()
        data = calibrator.compute_data()
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # MinMax gives shape-[1] arrays (ReduceMin -> Reshape [-1]), the histogram methods 0-d ones.
    ranges = {name: [float(np.min(v.range_value[0])), float(np.max(v.range_value[1]))] for name, v in data.items()}
    return {
        "seconds": seconds,
        "setup_s": created - start,
        "collect_s": collected - created,
        "compute_s": seconds - (collected - start),
        "samples": reader.count,
        "tensors": len(ranges),
        "onnxruntime": onnxruntime.__version__,
        "ranges": ranges,
    }
