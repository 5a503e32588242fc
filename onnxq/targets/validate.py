"""The validation step of each target profile: run the converted model where the target's runtime runs.

One validator per ``TargetProfile.runtime`` (a registry, :data:`VALIDATORS`):

- ``onnxruntime``: the model loads in onnxruntime's CPU provider (all optimizations: its int8
  kernels) and every output meets its accuracy guard against the float model on onnxruntime.
- ``onnxruntime-mobile``: onnxruntime's own converter writes the ``.ort`` file and the reduced
  build's operator config (:mod:`.ort_mobile`); the ``.ort`` loads, gives the ``.onnx``'s outputs
  (max difference at most ``ORT_MATCH_RTOL`` of the output's range), and meets the guard.
- ``openvino``: the model compiles for OpenVINO's CPU plugin, its performance counters show 8-bit
  kernels executed for compute nodes, and it meets the guard against OpenVINO's own fp32 run of the
  float model.
- no runtime here (TensorRT, QNN, generic): exact QDQ numerics (onnxruntime with fusions off, see
  :mod:`onnxq.runtime.backends`) meet the guard against float; the target's rules are the linter's.

The guard is the conversion's accuracy guard (:mod:`onnxq.metrics.guard`: top-1 agreement >= 0.98
for class scores, cosine >= 0.97 otherwise, or the ``--metric`` specs) on the first
``eval_samples`` samples: the tolerance a validation states is the one the tuner held the model to.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import ir
from ..metrics import GuardSet, choose_guards
from ..plan import AccuracyGuardConfig
from ..runtime.backends import make_runtime_session
from ._ops import WEIGHTED_OPS
from ._profile import TargetProfile

__all__ = ["Check", "Validation", "VALIDATORS", "validate", "ORT_MATCH_RTOL"]

#: Largest ``.ort``-vs-``.onnx`` output difference accepted, relative to the output's largest value.
ORT_MATCH_RTOL = 1e-4

Samples = Sequence[Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Check:
    """One validation check: its name, whether it passed, and what was measured."""

    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class Validation:
    """The result of a profile's validation step."""

    target: str
    runtime: str
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: files to write beside the model, by suffix (``.ort``, ``.required_operators.config``)
    artifacts: dict[str, bytes] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "passed": self.passed,
            "checks": [c.as_dict() for c in self.checks],
            "details": self.details,
            "notes": self.notes,
            "artifacts": sorted(self.artifacts),
        }


def _timed(factory: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = factory()
    return value, (time.perf_counter() - start) * 1000.0


def _guard(validation: Validation, label: str, source: ir.Model, ref: Any, cand: Any, samples: Samples, cfg: AccuracyGuardConfig) -> None:
    """Add the accuracy-guard check of ``cand`` against ``ref`` (both sessions) on ``samples``."""
    if not samples:
        validation.notes.append(f"{label}: no samples, accuracy against fp32 not checked (give --data)")
        return
    guards = GuardSet(choose_guards(source, cfg.accuracy_metric, min_agreement=cfg.min_agreement, min_cosine=cfg.min_cosine),
                      min_agreement=cfg.min_agreement, min_cosine=cfg.min_cosine)
    names = [o.name for o in ref.get_outputs()]
    used = list(samples[: cfg.eval_samples])
    reading = guards.read(names, ((ref.run(None, dict(s)), cand.run(None, dict(s))) for s in used))
    ok = guards.meets(reading)
    values = ", ".join(f"{k} {v:g}" for k, v in reading.items())
    detail = f"{label} vs fp32 on {len(used)} sample(s): {values}" + ("" if ok else f"; misses {guards.shortfall(reading)}")
    validation.checks.append(Check("matches fp32 within the accuracy guard", ok, detail))
    validation.details["accuracy"] = dict(reading)


def _onnxruntime(profile: TargetProfile, model: ir.Model, source: ir.Model, samples: Samples, cfg: AccuracyGuardConfig, threads: int) -> Validation:
    v = Validation(profile.name, "onnxruntime")
    session, load_ms = _timed(lambda: make_runtime_session(model, "onnxruntime", threads=threads, where="converted model"))
    v.details["load_ms"] = round(load_ms, 2)
    v.checks.append(Check("loads in onnxruntime (CPU, all optimizations)", True, f"{load_ms:.1f} ms"))
    _guard(v, "onnxruntime int8", source, make_runtime_session(source, "onnxruntime", threads=threads, where="float model"), session, samples, cfg)
    return v


def _max_relative_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x64.size:
            worst = max(worst, float(np.max(np.abs(x64 - y64))) / max(float(np.max(np.abs(y64))), 1e-12))
    return worst


def _ort_mobile(profile: TargetProfile, model: ir.Model, source: ir.Model, samples: Samples, cfg: AccuracyGuardConfig, threads: int) -> Validation:
    from .ort_mobile import convert_to_ort

    v = Validation(profile.name, "onnxruntime-mobile")
    converted = convert_to_ort(model)
    v.artifacts = {".ort": converted.ort, ".required_operators.config": converted.config}
    v.details["required_operators"] = converted.required_operators
    v.details["minimal_build_ops"] = converted.minimal_build_ops()
    v.details["ort_bytes"] = len(converted.ort)
    v.notes.append("a minimal onnxruntime build must include: " + ", ".join(converted.minimal_build_ops()))
    with tempfile.TemporaryDirectory(prefix="onnxq-ort-") as tmp:
        path = Path(tmp) / "model.ort"
        path.write_bytes(converted.ort)
        ort_session, load_ms = _timed(lambda: make_runtime_session(str(path), "onnxruntime", threads=threads, where="the .ort model"))
    v.details["load_ms"] = round(load_ms, 2)
    v.checks.append(Check("the .ort loads in onnxruntime", True, f"{load_ms:.1f} ms, {len(converted.ort)} bytes"))
    onnx_session = make_runtime_session(model, "onnxruntime", threads=threads, where="converted model")
    if samples:
        diff = max(_max_relative_diff(ort_session.run(None, dict(s)), onnx_session.run(None, dict(s))) for s in samples[: cfg.eval_samples])
        v.details["ort_vs_onnx_max_rel_diff"] = diff
        detail = f"max |.ort - .onnx| = {diff:.2e} of the output range (<= {ORT_MATCH_RTOL:g})"
        v.checks.append(Check("the .ort matches the .onnx", diff <= ORT_MATCH_RTOL, detail))
    _guard(v, ".ort int8", source, make_runtime_session(source, "onnxruntime", threads=threads, where="float model"), ort_session, samples, cfg)
    return v


def _openvino(profile: TargetProfile, model: ir.Model, source: ir.Model, samples: Samples, cfg: AccuracyGuardConfig, threads: int) -> Validation:
    from ..runtime.openvino import OpenVINOSession, executed_precisions, int8_nodes, openvino_version

    v = Validation(profile.name, "openvino")
    session, load_ms = _timed(lambda: OpenVINOSession(model, threads=threads, perf_counters=True, where="converted model"))
    v.details.update(openvino=openvino_version(), load_ms=round(load_ms, 2))
    v.checks.append(Check("compiles for OpenVINO's CPU plugin", True, f"{load_ms:.1f} ms"))
    quantized = _quantized_compute_nodes(model)
    if samples and not quantized:
        v.notes.append("openvino: no compute node is quantized (the tuner kept the model float), so int8 execution was not checked")
    elif samples:
        session.run(None, dict(samples[0]))
        int8, other = int8_nodes(session)
        v.details["executed"] = {f"{t}:{p}": n for (t, p), n in sorted(executed_precisions(session).items())}
        v.details["quantized_compute_nodes"] = quantized
        detail = f"{len(int8)} of {len(int8) + len(other)} compute nodes ran 8-bit kernels (PERF_COUNT); {quantized} quantized in the model"
        v.checks.append(Check("int8 kernels executed", bool(int8), detail))
    _guard(v, "OpenVINO int8", source, OpenVINOSession(source, threads=threads, where="float model"), session, samples, cfg)
    return v


def _quantized_compute_nodes(model: ir.Model) -> int:
    """Weighted ops (Conv, MatMul, ...) whose weight is dequantized: what should run int8."""
    count = 0
    for node in ir.iter_nodes(model.graph):
        producer = ir.producer(node.inputs[1]) if node.op in WEIGHTED_OPS and len(node.inputs) > 1 else None
        count += producer is not None and producer.op == "DequantizeLinear"
    return count


def _reference(profile: TargetProfile, model: ir.Model, source: ir.Model, samples: Samples, cfg: AccuracyGuardConfig, threads: int) -> Validation:
    v = Validation(profile.name, "onnxruntime-reference")
    session = make_runtime_session(model, "onnxruntime-reference", threads=threads, where="converted model")
    v.checks.append(Check("loads as exact QDQ numerics (onnxruntime, fusions off)", True, f"no {profile.name} runtime on this machine"))
    _guard(v, "QDQ reference numerics", source, make_runtime_session(source, "onnxruntime", threads=threads, where="float model"), session, samples, cfg)
    return v


Validator = Callable[[TargetProfile, ir.Model, ir.Model, Samples, AccuracyGuardConfig, int], Validation]
#: ``TargetProfile.runtime`` → validator (None: the reference numerics).
VALIDATORS: dict[str | None, Validator] = {
    "onnxruntime": _onnxruntime,
    "onnxruntime-mobile": _ort_mobile,
    "openvino": _openvino,
    None: _reference,
}


def validate(
    profile: TargetProfile, model: ir.Model, source: ir.Model, samples: Samples = (), guard: AccuracyGuardConfig | None = None, *, threads: int = 1
) -> Validation:
    """Run ``profile``'s validation step on the converted ``model`` (``source``: the float model).

    Raises:
        TargetError: the ``.ort`` converter failed (ort-mobile).
        ConfigError: OpenVINO is needed and not installed.
        InvalidModelError: the target's runtime cannot load the model.
    """
    return VALIDATORS[profile.runtime](profile, model, source, list(samples), guard or AccuracyGuardConfig(), threads)
