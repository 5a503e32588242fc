"""The application layer: one conversion core for the CLI and the Python API.

This package is where the pass library meets the framework: importing it imports
:mod:`onnxq.passes`, whose modules register their passes. The framework (``onnxq.ir``, the pass
base and manager, pipelines, calibration, data, runtime) never imports the library; only this
package, the CLI and the package root do (a lint rule and a test keep it so).

- :class:`ConversionOptions`: every option of every mode, validated once.
- :func:`convert` → :class:`ConversionResult` (the model and a typed :class:`ConversionReport`).
- :func:`quantize_static` / :func:`quantize_dynamic`: :func:`convert` with the mode set.
- :func:`load_recipe`: TOML recipes, loaded in one place.
- :func:`prepare_for_calibration`: the static pipeline up to calibration (``onnxq calibrate``).
- :func:`sensitivity` → :class:`SensitivityReport`: each quantized unit's cost, ranked (cached on disk).
"""

from __future__ import annotations

from .. import passes as _passes  # noqa: F401  (registers the pass library)
from .conversion import ConversionResult, convert, open_conversion_data, prepare_for_calibration, quantize_dynamic, quantize_static
from .options import MODES, ConversionOptions, Mode
from .pipelines import MODE_PIPELINES, build_steps
from .recipes import load_recipe
from .report import SCHEMA_VERSION, ConversionReport
from .sensitivity_analysis import SENSITIVITY_ENGINES, SensitivityReport, sensitivity

__all__ = [
    "ConversionOptions",
    "ConversionReport",
    "ConversionResult",
    "MODES",
    "MODE_PIPELINES",
    "Mode",
    "SCHEMA_VERSION",
    "SENSITIVITY_ENGINES",
    "SensitivityReport",
    "build_steps",
    "convert",
    "load_recipe",
    "open_conversion_data",
    "prepare_for_calibration",
    "quantize_dynamic",
    "quantize_static",
    "sensitivity",
]
