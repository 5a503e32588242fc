"""Named converters: what an isolated conversion child runs (``run_isolated("_harness.convert:run_job")``).

A contender names its converter and options as data (``Contender(converter="ort-nbits",
options={"block_size": 32, ...})``); the child calls ``CONVERTERS[name](source, output, options,
calib)``, which returns at least ``{"seconds": ..., "notes": [...]}``:

==================  ==========================================================================  ========
converter           what it runs                                                                options
==================  ==========================================================================  ========
``ort-static``      the incumbent's ``quantize_static`` (see ``incumbent``), timed by itself     method, config
``ort-dynamic``     the incumbent's ``quantize_dynamic``                                         per_channel
``ort-nbits``       the incumbent's ``MatMulNBitsQuantizer``                                     block_size, accuracy_level
``ort-fp16``        ``onnxruntime.transformers.float16``
``occ-fp16``        ``onnxconverter_common.float16``
``onnxq-static``    ``onnxq.quantize.quantize_static`` with defaults, timed by itself            data: reader | folder
``onnxq-convert``   ``onnxq.quantize.convert(mode=...)``, calibration feeds when given           mode, pass options
==================  ==========================================================================  ========

Converters without a clock of their own are timed here from the call (their imports included) to
the written file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from . import incumbent, onnxq_api
from .data import NpzReader, load_feeds

__all__ = ["CONVERTERS", "run_job"]

Converter = Callable[[str, str, Mapping[str, Any], "str | None"], dict[str, Any]]


def _timed(convert: Callable[[str, str, Mapping[str, Any], str | None], list[str]]) -> Converter:
    def run(source: str, output: str, options: Mapping[str, Any], calib: str | None) -> dict[str, Any]:
        import onnx  # noqa: F401 - loaded before the clock starts, as the benchmarks always measured

        start = time.perf_counter()
        notes = convert(source, output, options, calib)
        return {"seconds": time.perf_counter() - start, "notes": notes}

    return run


def _ort_static(source: str, output: str, options: Mapping[str, Any], calib: str | None) -> dict[str, Any]:
    if calib is None:
        raise ValueError("ort-static needs the calibration folder")
    return incumbent.quantize_static(source, output, calib, options["method"], options.get("config"))


def _onnxq_static(source: str, output: str, options: Mapping[str, Any], calib: str | None) -> dict[str, Any]:
    # "reader": the very NpzReader onnxruntime gets (streamed, rewound between passes); "folder": the
    # .npz folder path, as ``onnxq convert --data DIR`` reads it.
    data = NpzReader(calib) if options.get("data", "reader") == "reader" else calib
    return onnxq_api.quantize_static_file(source, output, data)


def _onnxq_convert(source: str, output: str, options: Mapping[str, Any], calib: str | None) -> list[str]:
    opts = dict(options)
    mode = opts.pop("mode")
    data = load_feeds(calib) if calib else None
    if mode == "dynamic" and data is None:
        opts.pop("smooth", None)
    return onnxq_api.convert_file(source, output, data, mode, **opts)


CONVERTERS: dict[str, Converter] = {
    "ort-static": _ort_static,
    "ort-dynamic": _timed(lambda s, o, opt, c: incumbent.quantize_dynamic(s, o, opt["per_channel"])),
    "ort-nbits": _timed(lambda s, o, opt, c: incumbent.matmul_nbits(s, o, opt["block_size"], opt.get("accuracy_level"))),
    "ort-fp16": _timed(lambda s, o, opt, c: incumbent.float16(s, o, "onnxruntime")),
    "occ-fp16": _timed(lambda s, o, opt, c: incumbent.float16(s, o, "onnxconverter_common")),
    "onnxq-static": _onnxq_static,
    "onnxq-convert": _timed(_onnxq_convert),
}


def run_job(converter: str, source: str, output: str, options: Mapping[str, Any], calib: str | None = None) -> dict[str, Any]:
    """Subprocess entry point: run one named converter (see the module docstring)."""
    if converter not in CONVERTERS:
        raise ValueError(f"unknown converter {converter!r}; known: {', '.join(CONVERTERS)}")
    return CONVERTERS[converter](source, output, options, calib)
