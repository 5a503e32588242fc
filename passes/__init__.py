"""onnxq's pass library (installed as ``onnxq.passes``), one subpackage per family.

Importing this package registers every pass; use :func:`onnxq.registered_passes` to list them.
"""

from __future__ import annotations

from . import cleanup, compensation, compression, fusion, pipelines, pruning, quantization  # noqa: F401  (imported to register the passes)

__all__: list[str] = []
