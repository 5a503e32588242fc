"""Creating onnxruntime CPU sessions with explicit threading and clear load errors.

onnxruntime takes a model as bytes or as a path. Bytes mean one serialized protobuf, which cannot
pass 2 GiB and costs a copy of every weight; so a :class:`~onnxq.ir.Model` with more weights than
``ir.serializes_cheaply`` allows is written with
external data to a temporary folder (:func:`onnxq.ir.session_file`: weights still mapped from the
source file are hard-linked, not copied) and the session is created from that path.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from .. import ir
from ..errors import InvalidModelError

__all__ = ["make_session", "session_options", "run_session", "model_bytes"]

log = logging.getLogger(__name__)

#: ``execution_order`` values: onnxruntime's own order, or the order of the model's node list.
_ORDERS = {
    "default": ort.ExecutionOrder.DEFAULT,
    "node-list": ort.ExecutionOrder.PRIORITY_BASED,
}

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(
    threads: int = 1,
    optimization: str = "all",
    *,
    inter_threads: int = 1,
    log_level: int = 3,
    enable_arena: bool = True,
    mem_pattern: bool = True,
    execution_order: str = "default",
) -> ort.SessionOptions:
    """SessionOptions with a fixed thread count (benchmarks must not depend on the machine).

    ``enable_arena=False`` frees activation memory after each run instead of keeping onnxruntime's
    arena at its high-water mark; under glibc the freed blocks mostly stay resident in the heap, so
    repeated runs of one session are usually better served by the arena. ``mem_pattern=False``
    allocates each intermediate from the arena as it is computed instead of one block planned from
    the previous run (which calibration, whose exposed outputs are most of the memory, does not need).
    ``execution_order="node-list"`` runs nodes in the order of the model's node list (onnxruntime's
    priority-based order: Kahn's algorithm, ties broken by node index) instead of onnxruntime's
    default depth-first order from the outputs, which ignores the list and can keep early
    activations alive until the end of the run (calibration places each tensor's in-graph summary
    right after its producer so the tensor is freed as in a plain inference).
    """
    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = enable_arena
    so.enable_mem_pattern = mem_pattern
    so.execution_order = _ORDERS[execution_order]
    so.intra_op_num_threads = max(0, int(threads))
    so.inter_op_num_threads = max(1, int(inter_threads))
    so.graph_optimization_level = _LEVELS[optimization]
    so.log_severity_level = log_level
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads == 1:
        # One thread must mean one thread: no spinning helper pool competing for the other core.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def model_bytes(model: Any) -> bytes:
    """Serialized bytes of a Model, ModelProto, bytes or path (a path with external data: just the graph).

    Raises:
        PreconditionError: a large Model (it does not fit one protobuf; use :func:`make_session`).
    """
    if isinstance(model, ir.Model):
        return ir.to_proto(model).SerializeToString()
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    with open(model, "rb") as f:
        return f.read()


def make_session(model: Any, *, threads: int = 1, optimization: str = "all", where: str | None = None, **options: Any) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``model`` (Model, ModelProto, bytes or path).

    A path is loaded by onnxruntime itself (with its external data); a large Model goes through a
    temporary folder (see the module docstring).

    Raises:
        InvalidModelError: onnxruntime cannot load the model; the message quotes onnxruntime.
    """
    so = session_options(threads, optimization, **options)
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    where = where or (model.source if isinstance(model, ir.Model) else str(model) if isinstance(model, str) else "model")
    if isinstance(model, ir.Model) and not ir.serializes_cheaply(model):
        ir.spill_weights(model)  # onnxruntime gets its own copy: ours need not stay resident too
        with ir.session_file(model) as path:
            log.debug("%s: large model, session created from %s", where, path)
            return _create(str(path), so, where)
    return _create(model if isinstance(model, str) else model_bytes(model), so, where)


def _create(model: str | bytes, so: ort.SessionOptions, where: str) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        msg = " ".join(str(e).split())
        raise InvalidModelError(f"{where}: onnxruntime cannot load the model: {msg}") from e


def run_session(session: ort.InferenceSession, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run ``session`` with only the feeds it declares (extra keys such as labels are ignored)."""
    names = {i.name for i in session.get_inputs()}
    return session.run(outputs, {k: v for k, v in feeds.items() if k in names})
