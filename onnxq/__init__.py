"""onnxq: rewrite ONNX graphs to make models small and fast, and prove it on onnxruntime.

The Python API mirrors the CLI::

    import onnxq
    model = onnxq.load("model.onnx")
    result = onnxq.PassManager([onnxq.make_pass("cleanup")]).run(model)
    onnxq.save(result.model, "model.clean.onnx")
"""

from __future__ import annotations

from ._version import __version__
from .errors import (
    CalibrationDataError,
    CalibrationError,
    ConfigError,
    InvalidModelError,
    OnnxqError,
    PassError,
    PreconditionError,
    UnsupportedOpError,
)
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
    "make_pass",
    "register_pass",
    "registered_passes",
    "pipeline_from_data",
    "load_pipeline",
    "OnnxqError",
    "InvalidModelError",
    "UnsupportedOpError",
    "CalibrationDataError",
    "CalibrationError",
    "PassError",
    "PreconditionError",
    "ConfigError",
]
