"""onnxq: rewrite ONNX graphs to make models small and fast, and prove it on onnxruntime.

The Python API mirrors the CLI::

    import onnxq
    result = onnxq.convert("model.onnx", "calib/", mode="static")   # = onnxq convert
    result.save("model.int8.onnx")
    print(result.report.to_dict()["float_nodes"])

    model = onnxq.load("model.onnx")                                 # the pass API
    cleaned = onnxq.PassManager([onnxq.make_pass("cleanup")]).run(model)
    onnxq.save(cleaned.model, "model.clean.onnx")

Layers: the framework (:mod:`onnxq.ir`, the pass base and manager, pipelines, calibration, data,
runtime) never imports the pass library (:mod:`onnxq.passes`); the application layer
(:mod:`onnxq.api`, the CLI, and this package root) does, which registers the passes.
"""

from __future__ import annotations

from . import errors
from ._version import __version__
from .api import (  # noqa: E402,I001  (last: importing the application layer registers the pass library)
    ConversionOptions,
    ConversionReport,
    ConversionResult,
    SensitivityReport,
    convert,
    load_recipe,
    quantize_dynamic,
    quantize_static,
    sensitivity,
)
from .context import Skip
from .errors import *  # noqa: F403  (every typed error, re-exported: errors.__all__ is the list)
from .ir import Model, check, clone, load, normalize, save
from .pass_base import Pass, PassConfig, PassContext, PassResult, make_pass, register_pass, registered_passes
from .pass_manager import PassManager
from .pipeline import load_pipeline, pipeline_from_data

__all__ = [
    "__version__",
    "Model",
    "load",
    "save",
    "check",
    "clone",
    "normalize",
    "Pass",
    "PassConfig",
    "PassContext",
    "PassResult",
    "PassManager",
    "Skip",
    "make_pass",
    "register_pass",
    "registered_passes",
    "pipeline_from_data",
    "load_pipeline",
    "ConversionOptions",
    "ConversionReport",
    "ConversionResult",
    "convert",
    "quantize_static",
    "quantize_dynamic",
    "sensitivity",
    "SensitivityReport",
    "load_recipe",
    *errors.__all__,
]
