"""Helpers of the compensation-pass tests: one static pipeline with extra steps, and SQNR against fp32."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

import onnxq.api  # noqa: F401  (registers the pass library)
from onnxq import ir
from onnxq.context import PassContext
from onnxq.pass_manager import PassRecord
from onnxq.pipeline import pipeline_from_data
from tests.helpers import session

Step = dict[str, Any]


def static_steps(*, before: Sequence[Step] = (), after: Sequence[Step] = (), per_channel: bool = False, method: str = "minmax") -> list[Step]:
    """The static pipeline with ``before`` right after cleanup and ``after`` right before insert-qdq
    (record-batchnorm-stats always runs before cleanup)."""
    return [
        {"pass": "upgrade-opset", "target": 17},
        {"pass": "record-batchnorm-stats"},
        {"pass": "cleanup"},
        *before,
        {"pass": "calibrate", "method": method},
        {"pass": "annotate-quantization", "per_channel": per_channel},
        *after,
        {"pass": "insert-qdq"},
    ]


def run_steps(
    proto: onnx.ModelProto, steps: Sequence[Step], calib: Sequence[Mapping[str, np.ndarray]] | None
) -> tuple[ir.Model, PassContext, dict[str, PassRecord]]:
    """Run ``steps`` on ``proto`` (ONNX checker after each pass); returns the model, the context and each pass's record."""
    ctx = PassContext(calibration_data=list(calib) if calib is not None else None)
    res = pipeline_from_data(list(steps), check=True).run(ir.load(proto), ctx)
    return res.model, ctx, {r.name: r for r in res.records}


def outputs(model: Any, feeds: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    """The first output over ``feeds``, concatenated along the batch axis."""
    sess = session(ir.to_proto(model) if isinstance(model, ir.Model) else model)
    names = {i.name for i in sess.get_inputs()}
    return np.concatenate([sess.run(None, {k: v for k, v in f.items() if k in names})[0] for f in feeds])


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """``10 log10(Σ ref² / Σ (ref - out)²)``."""
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((ref.astype(np.float64) - out) ** 2), 1e-30)))


def quantized_sqnr(
    proto: onnx.ModelProto, steps: Sequence[Step], calib: Sequence[Mapping[str, np.ndarray]], held_out: Sequence[Mapping[str, np.ndarray]]
) -> float:
    """SQNR (dB) of the model ``steps`` make of ``proto`` against ``proto`` in fp32, on ``held_out``."""
    model, _, _ = run_steps(proto, steps, calib)
    return sqnr_db(outputs(proto, held_out), outputs(model, held_out))
