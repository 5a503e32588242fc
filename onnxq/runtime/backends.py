"""Runtimes a model can be measured on, by name: what the latency tuner and the target checks run.

Every backend returns a session with onnxruntime's shape (``run(None, feeds)``, ``get_inputs()``,
``get_outputs()`` with ``.name``), so code that times or evaluates a model never asks which
runtime it holds.

- ``onnxruntime``: the CPU provider with every graph optimization, i.e. its int8 kernels (Q/DQ pairs
  fused into QLinearConv, QGemm, ...): what a deployment on onnxruntime runs.
- ``onnxruntime-reference``: the CPU provider with graph optimizations off, so no Q/DQ pair is fused
  and every QuantizeLinear/DequantizeLinear runs as written: the exact QDQ semantics of the ONNX
  spec, int32-accurate products. This is the numerics of a target that does not run here
  (TensorRT, QNN) — a real runtime computes the same values up to its accumulation order — and it
  is free of this machine's int8 kernel quirks (u8·s8 saturation without VNNI).
- ``openvino``: OpenVINO's CPU plugin (the ``openvino`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

__all__ = ["RUNTIMES", "make_runtime_session", "runtime_names"]

SessionFactory = Callable[[Any, int, str], Any]


def _onnxruntime(model: Any, threads: int, where: str) -> Any:
    from .session import make_session

    return make_session(model, threads=threads, where=where)


def _reference(model: Any, threads: int, where: str) -> Any:
    from .session import make_session

    return make_session(model, threads=threads, optimization="disable", where=where)


def _openvino(model: Any, threads: int, where: str) -> Any:
    from .openvino import OpenVINOSession

    return OpenVINOSession(model, threads=threads, where=where)


#: runtime name → session factory ``(model, threads, where) -> session``.
RUNTIMES: dict[str, SessionFactory] = {
    "onnxruntime": _onnxruntime,
    "onnxruntime-reference": _reference,
    "openvino": _openvino,
}


def runtime_names() -> tuple[str, ...]:
    """The registered runtime names."""
    return tuple(RUNTIMES)


def make_runtime_session(model: Any, runtime: str = "onnxruntime", *, threads: int = 1, where: str = "model") -> Any:
    """A session for ``model`` on ``runtime`` (see the module docstring).

    Raises:
        ConfigError: an unknown runtime, or OpenVINO asked for but not installed.
        InvalidModelError: the runtime cannot load the model.
    """
    factory = RUNTIMES.get(runtime)
    if factory is None:
        raise ConfigError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")
    return factory(model, threads, where)
